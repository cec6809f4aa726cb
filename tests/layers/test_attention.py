import keras
import numpy as np
import pytest

from keras_vit.layers import MultiHeadSelfAttention
from tests.conftest import assert_parity, naive_attention, randomize_weights, to_numpy


def _weights(layer):
    return [to_numpy(w) for w in (layer.qkv.kernel, layer.qkv.bias, layer.projection.kernel, layer.projection.bias)]


def test_matches_naive_attention():
    x = np.random.RandomState(0).randn(2, 5, 8).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=2)
    layer.build(x.shape)
    randomize_weights(layer)
    out = to_numpy(layer(x))
    for b in range(2):
        assert_parity(out[b], naive_attention(x[b], *_weights(layer), 2), "attention vs naive loops")


def test_bias_and_mask_match_naive_attention():
    rng = np.random.RandomState(1)
    x = rng.randn(1, 4, 8).astype("float32")
    bias = rng.randn(2, 4, 4).astype("float32")
    mask = np.ones((4, 4), bool)
    mask[:, 3] = False  # nobody attends to the last token
    layer = MultiHeadSelfAttention(num_heads=2)
    layer.build(x.shape)
    randomize_weights(layer)
    out = to_numpy(layer(x, attention_bias=bias[None], attention_mask=mask[None, None]))
    expected = naive_attention(x[0], *_weights(layer), 2, bias=bias + np.where(mask, 0, -1e9))
    assert_parity(out[0], expected, "attention with bias and mask vs naive loops")


def test_fused_and_explicit_paths_agree_and_scores_are_distributions():
    x = np.random.RandomState(2).randn(3, 7, 12).astype("float32")
    layer = MultiHeadSelfAttention(num_heads=3)
    fused = to_numpy(layer(x))
    explicit, scores = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(explicit), fused, atol=1e-5)
    scores = to_numpy(scores)
    assert scores.shape == (3, 3, 7, 7)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        MultiHeadSelfAttention(num_heads=3)(np.zeros((1, 4, 8), "float32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    layer = MultiHeadSelfAttention(num_heads=2, dtype=policy)
    x = np.random.RandomState(3).randn(2, 6, 8).astype("float32")
    out, scores = layer(x, return_attention_scores=True)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"
    reference = MultiHeadSelfAttention(num_heads=2)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(out).astype("float32"), to_numpy(reference(x)), atol=5e-2)


def test_config_round_trip():
    layer = MultiHeadSelfAttention(num_heads=4, qkv_bias=False, attention_dropout_rate=0.1)
    clone = MultiHeadSelfAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
