"""Swin Transformer (Liu et al., ICCV 2021) and Swin-V2 (Liu et al., CVPR 2022).

A hierarchical transformer: 4x4 patches, stages of (shifted) window
attention blocks with patch merging between them. One generic builder,
`SwinTransformer`, reads the variant table below; `version=2` switches to
V2's scaled cosine attention, continuous position bias, residual
post-norm and reduce-then-normalize patch merging. V2's position bias has no
per-window weights, so its window-16 variants have the window-8 variants'
parameter counts.
"""

import keras
import numpy as np

from keras_vit.applications import common
from keras_vit.applications.registry import ModelSpec, register_model
from keras_vit.applications.swin.block import SwinTransformerBlock
from keras_vit.applications.swin.patch_merging import PatchMerging
from keras_vit.layers.transformer_block import transformer_layout_map

# REFERENCE.md. drop_path_rate is the recipe's default for each size.
SWIN_VARIANTS = {
    "swin_t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2),
    "swin_s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.3),
    "swin_b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7, drop_path_rate=0.5),
    "swin_b_384": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12, drop_path_rate=0.5),
    "swin_l": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=7, drop_path_rate=0.5),
}
SWIN_V2_VARIANTS = {}
for _window in (8, 16):
    _suffix = "" if _window == 8 else f"_w{_window}"
    SWIN_V2_VARIANTS.update(
        {
            f"swinv2_t{_suffix}": dict(
                embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=_window, drop_path_rate=0.2, version=2
            ),
            f"swinv2_s{_suffix}": dict(
                embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=_window, drop_path_rate=0.3, version=2
            ),
            f"swinv2_b{_suffix}": dict(
                embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=_window, drop_path_rate=0.5, version=2
            ),
        }
    )

# Weights decoupled weight decay skips besides biases and norms (timm's `no_weight_decay()`).
SWIN_NO_WEIGHT_DECAY = ("relative_position_bias_table", "logit_scale", "continuous_position_bias/")


def SwinTransformer(
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    window_size=7,
    patch_size=4,
    mlp_ratio=4.0,
    version=1,
    pretrained_window_sizes=None,
    *,
    include_top=True,
    weights=None,
    input_shape=None,
    classes=1000,
    classifier_activation="softmax",
    pooling="avg",
    include_preprocessing=True,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    drop_path_rate=0.1,
    qkv_bias=True,
    layer_norm_epsilon=1e-5,
    mask_padding=False,
    features_only=False,
    out_indices=None,
    default_size=224,
    name="swin_transformer",
):
    """Builds a Swin Transformer as a functional `keras.Model`.

    Args:
        embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio: the architecture.
        version: 1 (Swin) or 2 (Swin-V2).
        pretrained_window_sizes: Swin-V2 only: per stage, the window the weights
            were pre-trained with when fine-tuning at a larger one (default: the same).
        include_top, weights, input_shape, classes, classifier_activation,
            include_preprocessing: as in `keras.applications` (inputs in [0, 255]
            normalized with ImageNet statistics when `include_preprocessing`).
        pooling: "avg" or "max" (over the last stage's map) or, with
            `include_top=False`, None for the `(batch, h/32, w/32, 8 * embed_dim)` map.
        dropout_rate, attention_dropout_rate, drop_path_rate: regularization;
            stochastic depth grows linearly over all blocks.
        mask_padding: mask the tokens padded to fill windows at the border
            (the reference implementations attend to them; default False).
        features_only, out_indices: return the stage outputs before each patch
            merging instead (timm's `features_only`; no final norm, no head): a
            list of `(batch, h/4, w/4, embed_dim)`, ..., `(batch, h/32, w/32,
            8 * embed_dim)`, one per stage in `out_indices` (default all).

    Any input size divisible by `patch_size` works: feature maps that are not
    a multiple of the window are padded, and odd maps are padded before merging.
    """
    if features_only:
        include_top, pooling = False, None
    pooling = common.check_head_arguments(name, include_top, pooling, classes, supported=("avg", "max"))
    if len(depths) != len(num_heads):
        raise ValueError(f"depths {depths} and num_heads {num_heads} need one entry per stage.")
    if version not in (1, 2):
        raise ValueError(f"version must be 1 (Swin) or 2 (Swin-V2), got {version!r}.")
    if pretrained_window_sizes is not None and (version != 2 or len(pretrained_window_sizes) != len(depths)):
        raise ValueError(
            f"pretrained_window_sizes={pretrained_window_sizes} needs version=2 and one entry per stage ({len(depths)})."
        )
    pretrained_window_sizes = tuple(pretrained_window_sizes or (0,) * len(depths))
    v2 = version == 2
    # Window masks are built for one size, so the size must be fixed.
    input_shape = common.image_input_shape(name, input_shape, default_size, patch_size)
    inputs = keras.Input(shape=input_shape, name="images")
    x = common.preprocess(inputs, include_preprocessing, common.IMAGENET_MEAN, common.IMAGENET_STD)
    x = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size, name="patch_embedding")(x)
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="patch_norm")(x)
    x = keras.layers.Dropout(dropout_rate, name="embedding_dropout")(x)
    rates = iter(np.linspace(0.0, drop_path_rate, sum(depths)))
    stage_outputs = []
    for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
        for block in range(depth):
            x = SwinTransformerBlock(
                heads,
                window_size=window_size,
                shift_size=0 if block % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                drop_path_rate=float(next(rates)),
                layer_norm_epsilon=layer_norm_epsilon,
                mask_padding=mask_padding,
                cosine_attention=v2,
                position_bias="continuous" if v2 else "table",
                pretrained_window_size=pretrained_window_sizes[stage],
                post_norm=v2,
                name=f"stage{stage}_block{block}",
            )(x)
        stage_outputs.append(x)
        if stage < len(depths) - 1:
            x = PatchMerging(norm_after=v2, layer_norm_epsilon=layer_norm_epsilon, name=f"stage{stage}_merging")(x)
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
    x = common.pool(x, pooling)
    x = common.classification_head(x, include_top, classes, classifier_activation)
    model = common.load_weights(keras.Model(inputs, x, name=name), weights, family="swin")
    return common.feature_extractor(model, stage_outputs, out_indices) if features_only else model


def _register(name, constructor_name, description, params, default_size=224):
    config = SWIN_VARIANTS.get(name) or SWIN_V2_VARIANTS[name]
    return register_model(
        ModelSpec(
            name=name,
            constructor_name=constructor_name,
            family="swin",
            builder=SwinTransformer,
            config=config,
            description=description,
            params=params,
            default_size=default_size,
            no_weight_decay=SWIN_NO_WEIGHT_DECAY,
            layout_map=transformer_layout_map,
        )
    )


SwinTiny = _register("swin_t", "SwinTiny", "Swin-T", 28_288_354)
SwinSmall = _register("swin_s", "SwinSmall", "Swin-S", 49_606_258)
SwinBase = _register("swin_b", "SwinBase", "Swin-B", 87_768_224)
SwinBase384 = _register("swin_b_384", "SwinBase384", "Swin-B at 384 px, window 12", 87_903_584, default_size=384)
SwinLarge = _register("swin_l", "SwinLarge", "Swin-L", 196_532_476)
SwinV2Tiny = _register("swinv2_t", "SwinV2Tiny", "Swin-V2-T (256 px, window 8)", 28_347_154, 256)
SwinV2Small = _register("swinv2_s", "SwinV2Small", "Swin-V2-S (256 px, window 8)", 49_728_418, 256)
SwinV2Base = _register("swinv2_b", "SwinV2Base", "Swin-V2-B (256 px, window 8)", 87_918_816, 256)
SwinV2TinyWindow16 = _register("swinv2_t_w16", "SwinV2TinyWindow16", "Swin-V2-T (256 px, window 16)", 28_347_154, 256)
SwinV2SmallWindow16 = _register("swinv2_s_w16", "SwinV2SmallWindow16", "Swin-V2-S (256 px, window 16)", 49_728_418, 256)
SwinV2BaseWindow16 = _register("swinv2_b_w16", "SwinV2BaseWindow16", "Swin-V2-B (256 px, window 16)", 87_918_816, 256)
