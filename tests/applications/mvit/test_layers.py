import numpy as np
import pytest

from keras_vit.applications.mvit.attention import relative_position_index
from keras_vit.layers import MultiScaleAttention, MultiScaleBlock, MViTPatchEmbedding
from tests.applications.mvit import naive_mvit
from tests.conftest import assert_parity, randomize_weights, to_numpy


def _torch_layout(attention):
    """The layer's weights under timm's attention names, in PyTorch layout."""
    params = {
        "qkv.weight": to_numpy(attention.qkv.kernel).T,
        "qkv.bias": to_numpy(attention.qkv.bias),
        "proj.weight": to_numpy(attention.projection.kernel).T,
        "proj.bias": to_numpy(attention.projection.bias),
    }
    for part in "qkv":
        if getattr(attention, f"pool_{part}") is not None:
            params[f"pool_{part}.weight"] = np.transpose(to_numpy(getattr(attention, f"pool_{part}")), (2, 3, 0, 1))
            norm = getattr(attention, f"norm_{part}")
            params[f"norm_{part}.weight"], params[f"norm_{part}.bias"] = to_numpy(norm.gamma), to_numpy(norm.beta)
    if attention.use_rel_pos:
        params["rel_pos_h"], params["rel_pos_w"] = to_numpy(attention.rel_pos_h), to_numpy(attention.rel_pos_w)
    return {key: value.astype(np.float64) for key, value in params.items()}


CASES = {
    # MViTv2 in a stage: q unstrided (a 3x3 conv of stride 1), k/v strided, relative positions, residual pooling
    "kv_stride": dict(size=(4, 4), stride_q=1, stride_kv=2),
    # a stage transition with q and k/v of different strides, on a non-square map: distance scaling per axis
    "q_and_kv_strides": dict(size=(4, 6), stride_q=2, stride_kv=(1, 2)),
    # the query map coarser than the key map (q stride 2, k/v 1) with a class token carried around the pools
    "class_token": dict(size=(4, 4), stride_q=2, stride_kv=1, has_class_token=True, output_dim=12),
    "max": dict(size=(4, 4), stride_q=2, stride_kv=2, pool_mode="max"),
    "avg_mvit_v1": dict(size=(5, 5), stride_q=2, stride_kv=2, pool_mode="avg", use_rel_pos=False, residual_pooling=False),
    # MViTv1: no q pooling away from a stride (kernel 1, stride 1 is skipped)
    "no_q_pool": dict(size=(4, 4), kernel_q=1, stride_kv=2, use_rel_pos=False, residual_pooling=False, has_class_token=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pooling_attention_equals_naive_loops(case):
    kwargs = dict(CASES[case])
    size = kwargs.pop("size")
    has_cls = kwargs.get("has_class_token", False)
    rng = np.random.RandomState(0)
    tokens = rng.randn(2, int(has_cls) + size[0] * size[1], 8).astype("float32")
    layer = MultiScaleAttention(num_heads=2, feature_size=size if has_cls else None, **kwargs)
    inputs = tokens if has_cls else tokens.reshape(2, *size, 8)
    layer(inputs)  # builds it
    randomize_weights(layer)
    out = to_numpy(layer(inputs))
    params = _torch_layout(layer)
    for image in range(2):
        expected, q_size = naive_mvit.pooling_attention(
            tokens[image].astype(np.float64), size, params, 2, kwargs.get("pool_mode", "conv"),
            layer.kernel_q, layer.stride_q, layer.kernel_kv, layer.stride_kv, has_cls, kwargs.get("residual_pooling", True),
        )
        assert q_size == layer.q_size
        actual = out[image] if has_cls else out[image].reshape(-1, out.shape[-1])
        assert_parity(actual, expected, f"{case}: image {image} vs naive pooling attention")


def test_relative_position_tables_are_sized_from_the_input_and_index_the_finer_grid():
    layer = MultiScaleAttention(num_heads=1, stride_q=2, stride_kv=(4, 2))
    layer.build((None, 8, 12, 4))
    assert layer.q_size == (4, 6) and layer.kv_size == (2, 6)
    assert tuple(layer.rel_pos_h.shape) == (7, 4) and tuple(layer.rel_pos_w.shape) == (11, 4)
    index = relative_position_index(4, 2)  # keys twice as coarse: key j sits at 2j in query units
    np.testing.assert_array_equal(index, [[2, 0], [3, 1], [4, 2], [5, 3]])
    assert index.max() < 2 * 4 - 1


def test_block_pools_the_shortcut_and_projects_where_the_width_changes():
    block = MultiScaleBlock(num_heads=2, dim_out=16, stride_q=2, stride_kv=2, expand_attn=False)
    out = block(np.random.RandomState(0).randn(1, 8, 8, 8).astype("float32"))
    assert tuple(out.shape) == (1, 4, 4, 16)
    assert block.attention.dim == 8 and block.mlp.fc2.units == 16  # the width grows in the MLP
    assert tuple(block.shortcut_projection.kernel.shape) == (8, 16)
    same = MultiScaleBlock(num_heads=2)
    assert tuple(same(np.zeros((1, 4, 4, 8), "float32")).shape) == (1, 4, 4, 8) and same.shortcut_projection is None


def test_layer_arguments_are_checked():
    with pytest.raises(ValueError, match="pool_mode must be one of 'conv', 'max', 'avg'.*got 'mean'. Use 'conv'"):
        MultiScaleAttention(num_heads=2, pool_mode="mean")
    with pytest.raises(ValueError, match="pool_mode must be one of"):
        MultiScaleBlock(num_heads=2, pool_mode="median")
    with pytest.raises(ValueError, match="needs feature_size=\\(h, w\\)"):
        MultiScaleAttention(num_heads=2, has_class_token=True)(np.zeros((1, 17, 8), "float32"))
    with pytest.raises(ValueError, match="17 tokens, but feature_size=\\(3, 3\\) and has_class_token=True make 10"):
        MultiScaleAttention(num_heads=2, has_class_token=True, feature_size=3)(np.zeros((1, 17, 8), "float32"))
    with pytest.raises(ValueError, match="has_class_token=True needs token sequences"):
        MultiScaleBlock(num_heads=2, has_class_token=True)(np.zeros((1, 4, 4, 8), "float32"))


def test_separate_position_embedding_equals_the_joint_one():
    images = np.random.RandomState(0).rand(2, 16, 16, 3).astype("float32")
    separate = MViTPatchEmbedding(8, use_class_token=True, use_position_embedding=True, separate_position_embedding=True)
    joint = MViTPatchEmbedding(8, use_class_token=True, use_position_embedding=True)
    separate(images), joint(images)
    randomize_weights(separate)
    spatial, temporal, class_part = (to_numpy(w) for w in (
        separate.position_embedding, separate.temporal_position_embedding, separate.class_position_embedding))
    joint.projection.set_weights(separate.projection.get_weights())
    joint.class_token.assign(separate.class_token)
    joint.position_embedding.assign(np.concatenate([class_part, spatial + temporal], axis=1))
    assert_parity(joint(images), to_numpy(separate(images)), "joint vs separate position embedding")
    assert tuple(separate(images).shape) == (2, 17, 8)
    assert tuple(MViTPatchEmbedding(8)(images).shape) == (2, 4, 4, 8)  # no class token: a map

