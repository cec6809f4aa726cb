import keras
import numpy as np
import pytest

from keras_vit.layers import PatchMerging, RelativePositionBias, SwinTransformerBlock, WindowAttention
from keras_vit.layers import window_partition, window_reverse
from keras_vit.layers.position_bias import relative_position_index, resize_bias_table
from keras_vit.layers.window_attention import shifted_window_mask
from tests.conftest import naive_attention, to_numpy


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
    out = to_numpy(layer(x))
    attention = layer.attention
    weights = [to_numpy(w) for w in (attention.qkv.kernel, attention.qkv.bias, attention.projection.kernel, attention.projection.bias)]
    bias = to_numpy(layer.relative_position_bias.relative_bias())
    for wi in range(2):
        for wj in range(2):
            tokens = x[0, 2 * wi : 2 * wi + 2, 2 * wj : 2 * wj + 2].reshape(4, 8)
            expected = naive_attention(tokens, *weights, 2, bias=bias)
            np.testing.assert_allclose(out[0, 2 * wi : 2 * wi + 2, 2 * wj : 2 * wj + 2].reshape(4, 8), expected, atol=1e-5)


def test_masked_padding_ignores_padded_tokens():
    x = np.random.RandomState(2).randn(1, 3, 3, 4).astype("float32")
    layer = WindowAttention(num_heads=1, window_size=2, mask_padding=True)
    out = to_numpy(layer(x))
    # the bottom-right token sits alone in its padded window: it may only attend to itself
    attention = layer.attention
    v = x[0, 2, 2] @ to_numpy(attention.qkv.kernel)[:, 8:] + to_numpy(attention.qkv.bias)[8:]
    expected = v @ to_numpy(attention.projection.kernel) + to_numpy(attention.projection.bias)
    np.testing.assert_allclose(out[0, 2, 2], expected, atol=1e-5)
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
    np.testing.assert_allclose(out, normed @ to_numpy(layer.reduction.kernel), atol=1e-4)


@pytest.mark.parametrize("layer", [WindowAttention(2, 4, 2, mask_padding=True), SwinTransformerBlock(2, 4, 2), PatchMerging(True)])
def test_config_round_trip(layer):
    assert layer.__class__.from_config(layer.get_config()).get_config() == layer.get_config()
