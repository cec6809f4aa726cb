"""Every registered `keras_vit>` layer through the same checks (see `layer_test_case.py`):
build/call shapes, config round trip, `.keras` saving, mixed precision and one training step.

A new layer is covered by adding one `LayerCase` to `CASES`;
`test_every_registered_layer_has_a_case` fails until it is there.
"""

import pytest

import keras_vit  # noqa: F401  (registers every layer)
from tests.layers import layer_test_case as lt
from tests.layers.layer_test_case import (
    AddPositionEmbedding,
    AddRelativeBias,
    AttendToItself,
    CastToInput,
    CompareWithOwnTokens,
    EmbedTokens,
    LayerCase,
    MaskedMean,
    PoolAtLargestToken,
    SplitAndRejoinQueries,
)

CASES = [
    LayerCase("Bottleneck", dict(filters=8, width=4, strides=2), (2, 8, 8, 4), (2, 4, 4, 8)),
    LayerCase(
        "ContinuousPositionBias",
        dict(window_size=2, num_heads=2, hidden_dim=8),
        (2, 2, 4, 4),  # attention logits (batch, heads, M^2, M^2)
        (2, 2, 4, 4),
        adapter=AddRelativeBias,
    ),
    LayerCase("CausalPaddingMask", dict(), (2, 5, 8), (2, 5, 8), adapter=MaskedMean, weightless=True),
    LayerCase(
        "ContrastiveLogits",
        dict(),
        (2, 5, 8),
        (2, 3),
        adapter=lambda layer: CompareWithOwnTokens(layer, first_token_only=True),
    ),
    LayerCase("EndOfTextPooling", dict(), (2, 5, 8), (2, 8), adapter=PoolAtLargestToken, weightless=True),
    LayerCase("GridBoxes", dict(grid_size=(2, 3)), (2, 6, 4), (2, 6, 4), adapter=CastToInput, weightless=True),
    LayerCase("OwlClassHead", dict(embedding_dim=8), (2, 5, 8), (2, 5, 3), adapter=CompareWithOwnTokens),
    LayerCase("PredictionMlp", dict(output_dim=4), (2, 5, 8), (2, 5, 4)),
    LayerCase("UnflattenQueries", dict(), (2, 5, 8), (2, 5, 8), adapter=SplitAndRejoinQueries, weightless=True),
    LayerCase("CausalSelfAttention", dict(num_heads=2, use_bias=False), (2, 5, 8), (2, 5, 8)),
    LayerCase("CosineAttention", dict(num_heads=2), (2, 5, 8), (2, 5, 8)),
    LayerCase(
        "DetrDecoderLayer",
        dict(num_heads=2, ffn_dim=16, dropout_rate=0.0),
        (2, 5, 8),
        (2, 5, 8),
        adapter=lambda layer: AttendToItself(layer, arguments=2),  # the queries decode themselves
    ),
    LayerCase("DetrEncoderLayer", dict(num_heads=2, ffn_dim=16, dropout_rate=0.0), (2, 5, 8), (2, 5, 8)),
    LayerCase(
        "ImageNormalization",
        dict(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]),
        (2, 8, 8, 3),
        (2, 8, 8, 3),
        weightless=True,
    ),
    LayerCase(
        "LocalRelation",
        dict(filters=6, kernel_size=3, strides=2, channels_per_group=4),
        (2, 7, 7, 8),
        (2, 4, 4, 6),
    ),
    LayerCase("Mlp", dict(hidden_dim=16, output_dim=6), (2, 5, 8), (2, 5, 6)),
    LayerCase("MultiHeadAttention", dict(num_heads=2), (2, 5, 8), (2, 5, 8), adapter=AttendToItself),
    LayerCase("MultiScaleAttention", dict(num_heads=2, stride_q=2, stride_kv=2), (2, 4, 4, 8), (2, 2, 2, 8)),
    LayerCase(
        "MultiScaleBlock",
        dict(num_heads=2, dim_out=16, stride_q=2, has_class_token=True, feature_size=(4, 4)),
        (2, 17, 8),  # a class token and a 4x4 map
        (2, 5, 16),
    ),
    LayerCase(
        "MViTPatchEmbedding",
        dict(hidden_dim=8, use_class_token=True, use_position_embedding=True, separate_position_embedding=True),
        (2, 16, 16, 3),
        (2, 17, 8),
    ),
    LayerCase("MultiHeadSelfAttention", dict(num_heads=2), (2, 5, 8), (2, 5, 8)),
    LayerCase(
        "NonLocalBlock",
        dict(sub_sample=True),
        (2, 4, 4, 8),
        (2, 4, 4, 8),
        # batch_norm's gamma starts at 0, so nothing upstream of it gets a gradient at init
        frozen_at_init=(
            "theta/kernel", "theta/bias", "phi/kernel", "phi/bias", "g/kernel", "g/bias", "w_z/kernel", "w_z/bias",
        ),
    ),
    LayerCase(
        "TokenAndPositionEmbedding",
        dict(vocabulary_size=8, max_positions=6, hidden_dim=8),
        (2, 5, 8),
        (2, 5, 8),
        adapter=EmbedTokens,
    ),
    LayerCase("PatchEmbedding", dict(hidden_dim=8, patch_size=4), (2, 8, 8, 3), (2, 5, 8)),
    LayerCase("PatchMerging", dict(), (2, 7, 7, 4), (2, 4, 4, 8)),
    LayerCase(
        "RelativePositionBias",
        dict(window_size=2, num_heads=2),
        (2, 2, 4, 4),  # attention logits (batch, heads, M^2, M^2)
        (2, 2, 4, 4),
        adapter=AddRelativeBias,
    ),
    LayerCase("ResNetV2Bottleneck", dict(filters=8, strides=2, groups=2), (2, 8, 8, 4), (2, 4, 4, 8)),
    LayerCase(
        "SelfAttention2D",
        dict(key_channels=2, value_channels=4),
        (2, 4, 4, 8),
        (2, 4, 4, 8),
        # gamma starts at 0 (the block starts as the identity): the four convs get no gradient at init
        frozen_at_init=("query/kernel", "key/kernel", "value/kernel", "output_conv/kernel"),
    ),
    LayerCase(
        "SinePositionEmbedding2D",
        dict(num_features=4),
        (2, 4, 5, 8),
        (2, 4, 5, 8),
        adapter=AddPositionEmbedding,
        weightless=True,
    ),
    LayerCase("SpectralConv2D", dict(filters=4, kernel_size=3, padding="same"), (2, 8, 8, 3), (2, 8, 8, 4)),
    LayerCase("StandardizedConv2D", dict(filters=4, kernel_size=3, padding="same"), (2, 8, 8, 3), (2, 8, 8, 4)),
    LayerCase("StochasticDepth", dict(rate=0.25, seed=1), (2, 5, 8), (2, 5, 8), weightless=True),
    LayerCase(
        "SwinTransformerBlock",
        dict(num_heads=2, window_size=2, shift_size=1, mlp_ratio=2.0),
        (2, 4, 4, 8),
        (2, 4, 4, 8),
    ),
    LayerCase("TokenPooling", dict(mode="gap", num_prefix_tokens=1), (2, 5, 8), (2, 8), weightless=True),
    LayerCase("TransformerBlock", dict(num_heads=2, mlp_dim=16), (2, 5, 8), (2, 5, 8)),
    LayerCase(
        "WindowAttention",
        dict(num_heads=2, window_size=4, shift_size=2, cosine_attention=True, position_bias="continuous"),
        (2, 6, 6, 8),  # padded to 8x8: four shifted 4x4 windows
        (2, 6, 6, 8),
    ),
]


# The table as pytest params: the id is the class name.
CASE_PARAMS = [pytest.param(case, id=case.name) for case in CASES]


def test_every_registered_layer_has_a_case():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), "one case per layer class (pytest ids are the class names)"
    assert set(names) == lt.registered_layer_names()


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_build_and_call(case):
    lt.check_registration(case)
    lt.check_build_and_call(case)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_config_round_trip(case):
    lt.check_config_round_trip(case)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_keras_saving(case, tmp_path):
    lt.check_keras_saving(case, tmp_path)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_mixed_precision(case):
    lt.check_mixed_precision(case)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_training_step(case):
    lt.check_training_step(case)
