import keras
import numpy as np
import pytest

from keras_vit.layers import ContinuousPositionBias, CosineAttention, PatchMerging, RelativePositionBias
from keras_vit.layers import SwinTransformerBlock, WindowAttention, window_partition, window_reverse
from keras_vit.layers.position_bias import log_spaced_offsets, relative_position_index, resize_bias_table
from keras_vit.applications.swin.window_attention import shifted_window_mask
from tests.conftest import assert_parity, naive_attention, randomize_weights, to_numpy


def test_partition_and_reverse_are_inverse_and_group_windows():
    x = np.arange(2 * 4 * 6 * 3, dtype="float32").reshape(2, 4, 6, 3)
    windows = to_numpy(window_partition(x, 2))
    assert windows.shape == (2 * 2 * 3, 4, 3)
    np.testing.assert_array_equal(windows[4], x[0, 2:4, 2:4].reshape(4, 3))  # window row 1, column 1
    np.testing.assert_array_equal(to_numpy(window_reverse(windows, 2, 4, 6)), x)


def test_relative_position_index_depends_only_on_offsets():
    index = relative_position_index(3)
    coords = [(i, j) for i in range(3) for j in range(3)]
    for a, (ia, ja) in enumerate(coords):
        for b, (ib, jb) in enumerate(coords):
            assert index[a, b] == (ia - ib + 2) * 5 + (ja - jb + 2)


def test_bias_table_resize_keeps_size_and_interpolates():
    table = np.random.RandomState(0).randn(49, 2).astype("float32")
    np.testing.assert_array_equal(resize_bias_table(table, 4), table)  # window 4 is already (2*4-1)^2 rows
    assert resize_bias_table(table, 6).shape == (121, 2)
    layer = RelativePositionBias(6, 2)
    layer.build()
    layer.set_table(table)
    assert to_numpy(layer.relative_bias()).shape == (2, 36, 36)


def test_shift_mask_separates_exactly_the_regions_a_roll_brings_together():
    height = width = 4
    window, shift = 2, 1
    mask = shifted_window_mask(height, width, window, shift)
    # naive: label every pixel of the rolled map by the region it came from
    rows = np.array([0 if i < height - window else (1 if i < height - shift else 2) for i in range(height)])
    cols = np.array([0 if j < width - window else (1 if j < width - shift else 2) for j in range(width)])
    labels = rows[:, None] * 3 + cols[None, :]
    for w, (wi, wj) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        cells = [labels[wi * 2 + a, wj * 2 + b] for a in range(2) for b in range(2)]
        expected = np.array([[0.0 if p == q else -100.0 for q in cells] for p in cells])
        np.testing.assert_array_equal(mask[w], expected)


def test_window_attention_equals_naive_attention_per_window():
    rng = np.random.RandomState(1)
    x = rng.randn(1, 4, 4, 8).astype("float32")
    layer = WindowAttention(num_heads=2, window_size=2)
    layer(x)  # builds it
    randomize_weights(layer)
    out = to_numpy(layer(x))
    attention = layer.attention
    weights = [to_numpy(w) for w in (attention.qkv.kernel, attention.qkv.bias, attention.projection.kernel, attention.projection.bias)]
    bias = to_numpy(layer.relative_position_bias.relative_bias())
    for wi in range(2):
        for wj in range(2):
            tokens = x[0, 2 * wi : 2 * wi + 2, 2 * wj : 2 * wj + 2].reshape(4, 8)
            expected = naive_attention(tokens, *weights, 2, bias=bias)
            assert_parity(out[0, 2 * wi : 2 * wi + 2, 2 * wj : 2 * wj + 2].reshape(4, 8), expected, f"window ({wi}, {wj}) vs naive attention")


def test_masked_padding_ignores_padded_tokens():
    x = np.random.RandomState(2).randn(1, 3, 3, 4).astype("float32")
    layer = WindowAttention(num_heads=1, window_size=2, mask_padding=True)
    layer(x)  # builds it
    randomize_weights(layer)
    out = to_numpy(layer(x))
    # the bottom-right token sits alone in its padded window: it may only attend to itself
    attention = layer.attention
    v = x[0, 2, 2] @ to_numpy(attention.qkv.kernel)[:, 8:] + to_numpy(attention.qkv.bias)[8:]
    expected = v @ to_numpy(attention.projection.kernel) + to_numpy(attention.projection.bias)
    assert_parity(out[0, 2, 2], expected, "lone padded-window token vs its value")
    assert out.shape == (1, 3, 3, 4)


def test_window_clamps_to_small_maps_and_rejects_bad_shift():
    layer = WindowAttention(num_heads=1, window_size=7, shift_size=3)
    assert layer(np.zeros((1, 5, 5, 4), "float32")).shape == (1, 5, 5, 4)
    assert layer.effective_window == 5 and layer.effective_shift == 0
    with pytest.raises(ValueError, match="shift_size must be in"):
        WindowAttention(num_heads=1, window_size=4, shift_size=4)


def test_patch_merging_concatenates_2x2_in_reference_order():
    x = np.random.RandomState(3).randn(1, 3, 5, 2).astype("float32")
    layer = PatchMerging()
    out = to_numpy(layer(x))
    assert out.shape == (1, 2, 3, 4)
    padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    grouped = np.concatenate([padded[:, 0::2, 0::2], padded[:, 1::2, 0::2], padded[:, 0::2, 1::2], padded[:, 1::2, 1::2]], -1)
    normed = (grouped - grouped.mean(-1, keepdims=True)) / np.sqrt(grouped.var(-1, keepdims=True) + 1e-5)
    assert_parity(out, normed @ to_numpy(layer.reduction.kernel), "patch merging vs NumPy")


def test_cosine_attention_equals_naive_scaled_cosine_attention():
    rng = np.random.RandomState(4)
    x = rng.randn(2, 5, 8).astype("float32")
    layer = CosineAttention(num_heads=2)
    layer.build(x.shape)
    randomize_weights(layer)
    layer.query_bias.assign(rng.randn(8).astype("float32"))
    layer.value_bias.assign(rng.randn(8).astype("float32"))
    layer.logit_scale.assign(np.array([1.0, 6.0], "float32"))  # the second head is clamped to log(100)
    bias = rng.randn(2, 5, 5).astype("float32")
    out = to_numpy(layer(x, attention_bias=bias[None]))
    wqkv, wo, bo = (to_numpy(w) for w in (layer.qkv.kernel, layer.projection.kernel, layer.projection.bias))
    qkv_bias = np.concatenate([to_numpy(layer.query_bias), np.zeros(8), to_numpy(layer.value_bias)])
    for b in range(2):
        qkv = x[b] @ wqkv + qkv_bias
        heads = []
        for h, temperature in enumerate([np.e, 100.0]):
            q, k, v = (qkv[:, part * 8 + 4 * h : part * 8 + 4 * h + 4] for part in range(3))
            cosine = np.array([[qi @ kj / np.linalg.norm(qi) / np.linalg.norm(kj) for kj in k] for qi in q])
            logits = cosine * temperature + bias[h]
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            heads.append((weights / weights.sum(-1, keepdims=True)) @ v)
        assert_parity(out[b], np.concatenate(heads, -1) @ wo + bo, "cosine attention vs NumPy")


def test_cosine_attention_parameters_and_zero_keys():
    layer = CosineAttention(num_heads=3)
    layer.build((None, 4, 12))
    # q and v biases, no k bias, one logit scale per head starting at log(10)
    assert sorted(w.path.split("/")[-1] for w in layer.weights) == [
        "bias", "kernel", "kernel", "logit_scale", "query_bias", "value_bias"]
    np.testing.assert_allclose(to_numpy(layer.logit_scale), np.log(10.0) * np.ones(3), rtol=1e-6)
    keras.config.set_dtype_policy("mixed_float16")
    half = CosineAttention(num_heads=3)
    assert np.isfinite(to_numpy(half(np.zeros((1, 4, 12), "float32")))).all()  # zero keys: no 0/0


def test_continuous_position_bias_offsets_and_range():
    offsets = log_spaced_offsets(3)  # window 3: offsets -2..2 scaled by 8/2 -> -8..8
    assert offsets.shape == (25, 2)
    np.testing.assert_allclose(offsets[0], [-np.log2(9.0) / 3.0] * 2, rtol=1e-6)  # offset -2 -> -8
    np.testing.assert_allclose(offsets[12], [0.0, 0.0])
    np.testing.assert_allclose(offsets[13], [0.0, np.log2(5.0) / 3.0], rtol=1e-6)  # offset 1 -> 4
    np.testing.assert_allclose(log_spaced_offsets(5, pretrained_window_size=3)[-1], [np.log2(17) / 3] * 2, rtol=1e-6)  # offset 4 -> 16
    layer = ContinuousPositionBias(window_size=4, num_heads=2)
    layer.build()
    bias = to_numpy(layer.relative_bias())
    assert bias.shape == (2, 16, 16) and (bias > 0).all() and (bias < 16).all()
    index = relative_position_index(4)
    for a in range(16):
        for b in range(16):  # a function of the offset only
            same = np.argwhere(index == index[a, b])[0]
            np.testing.assert_array_equal(bias[:, a, b], bias[:, same[0], same[1]])


def test_continuous_bias_serves_any_window_with_the_same_weights():
    small, large = ContinuousPositionBias(4, 2), ContinuousPositionBias(8, 2, pretrained_window_size=4)
    small.build(), large.build()
    large.set_weights(small.get_weights())
    # with the pretrained window, offsets the small window knows get the same bias in the large one
    small_bias, large_bias = to_numpy(small.relative_bias()), to_numpy(large.relative_bias())
    np.testing.assert_allclose(large_bias[:, 0, 1], small_bias[:, 0, 1], rtol=1e-6)  # offset (0, -1)
    np.testing.assert_allclose(large_bias[:, 0, 8 + 3], small_bias[:, 0, 4 + 3], rtol=1e-6)  # offset (-1, -3)


def test_post_norm_block_normalizes_the_branches():
    x = np.random.RandomState(5).randn(1, 4, 4, 8).astype("float32")
    block = SwinTransformerBlock(2, 4, post_norm=True, cosine_attention=True, position_bias="continuous")
    out = to_numpy(block(x))
    attention = to_numpy(block.attention(x))
    h = x + to_numpy(block.norm1(attention))
    assert_parity(out, h + to_numpy(block.norm2(block.mlp(h))), "post-norm block vs its definition")
    with pytest.raises(ValueError, match="position_bias must be"):
        WindowAttention(2, 4, position_bias="learned")


@pytest.mark.parametrize(
    "layer",
    [
        WindowAttention(2, 4, 2, mask_padding=True),
        WindowAttention(2, 4, cosine_attention=True, position_bias="continuous", pretrained_window_size=3),
        SwinTransformerBlock(2, 4, 2),
        SwinTransformerBlock(2, 4, 2, post_norm=True, cosine_attention=True, position_bias="continuous"),
        PatchMerging(True),
        ContinuousPositionBias(4, 2, 3),
        CosineAttention(2),
    ],
)
def test_config_round_trip(layer):
    assert layer.__class__.from_config(layer.get_config()).get_config() == layer.get_config()
