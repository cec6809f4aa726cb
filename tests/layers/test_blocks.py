import keras
import numpy as np
import pytest

from keras_vit.layers import Mlp, StochasticDepth, TokenPooling, TransformerBlock
from tests.conftest import assert_parity, naive_attention, randomize_weights, to_numpy


def _layer_norm(x, gamma, beta, eps):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * gamma + beta


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def test_transformer_block_matches_naive_pre_norm_block():
    x = np.random.RandomState(0).randn(2, 5, 8).astype("float32")
    block = TransformerBlock(num_heads=2, mlp_dim=16, layer_norm_epsilon=1e-6)
    block(x)  # builds it
    randomize_weights(block)
    out = to_numpy(block(x))
    w = {v.path.split("/", 1)[1]: to_numpy(v) for v in block.weights}
    attention = [w["attention/qkv/kernel"], w["attention/qkv/bias"], w["attention/projection/kernel"], w["attention/projection/bias"]]
    for b in range(2):
        h = x[b] + naive_attention(_layer_norm(x[b], w["norm1/gamma"], w["norm1/beta"], 1e-6), *attention, 2)
        y = _layer_norm(h, w["norm2/gamma"], w["norm2/beta"], 1e-6)
        y = _gelu(y @ w["mlp/fc1/kernel"] + w["mlp/fc1/bias"]) @ w["mlp/fc2/kernel"] + w["mlp/fc2/bias"]
        assert_parity(out[b], h + y, "pre-norm block vs NumPy")


def test_block_returns_attention_scores():
    block = TransformerBlock(num_heads=2, mlp_dim=8)
    out, scores = block(np.zeros((1, 3, 4), "float32"), return_attention_scores=True)
    assert tuple(out.shape) == (1, 3, 4) and tuple(scores.shape) == (1, 2, 3, 3)


def test_stochastic_depth_is_identity_at_inference_and_drops_whole_samples():
    x = np.ones((2000, 3, 4), "float32")
    layer = StochasticDepth(0.25, seed=1)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)
    y = to_numpy(layer(x, training=True))
    per_sample = y.reshape(2000, -1)
    assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.75)}
    assert np.all(per_sample.min(1) == per_sample.max(1))  # a sample is dropped whole or kept whole
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.04


def test_stochastic_depth_rejects_bad_rate():
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got 1.0"):
        StochasticDepth(1.0)


def test_mlp_shapes_and_output_dim():
    assert tuple(Mlp(16)(np.zeros((2, 3, 4), "float32")).shape) == (2, 3, 4)
    assert tuple(Mlp(16, output_dim=7)(np.zeros((2, 4), "float32")).shape) == (2, 7)


def test_token_pooling():
    x = np.arange(2 * 3 * 2, dtype="float32").reshape(2, 3, 2)
    np.testing.assert_array_equal(to_numpy(TokenPooling("token")(x)), x[:, 0])
    assert_parity(TokenPooling("gap", num_prefix_tokens=1)(x), x[:, 1:].mean(1), "gap pooling vs NumPy mean")


@pytest.mark.parametrize("layer", [TransformerBlock(3, 12, drop_path_rate=0.1), Mlp(8, activation="gelu_tanh"), StochasticDepth(0.2)])
def test_config_round_trip(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_name(layer.__class__).startswith("keras_vit>")


def test_transformer_block_composes_the_attention_it_is_given():
    from keras_vit.layers import SwinTransformerBlock, WindowAttention

    x = np.random.RandomState(0).randn(2, 4, 4, 8).astype("float32")
    swin = SwinTransformerBlock(2, window_size=2, shift_size=1, mlp_ratio=2.0)
    composed = TransformerBlock(
        attention=WindowAttention(2, window_size=2, shift_size=1, name="window_attention"),
        mlp_ratio=2.0,
        layer_norm_epsilon=1e-5,
    )
    swin(x), composed(x)
    assert [v.path.split("/", 1)[1] for v in swin.weights] == [v.path.split("/", 1)[1] for v in composed.weights]
    composed.set_weights(swin.get_weights())
    np.testing.assert_allclose(to_numpy(composed(x)), to_numpy(swin(x)), atol=1e-6)
    restored = TransformerBlock.from_config(composed.get_config())
    assert isinstance(restored.attention, WindowAttention) and restored.attention.shift_size == 1
    restored(x)
    # the restored attention is built inside the block's name scope, as a new one is (loading by path works)
    assert [v.path for v in restored.weights] == [v.path for v in composed.weights]
    restored.set_weights(composed.get_weights())
    np.testing.assert_allclose(to_numpy(restored(x)), to_numpy(composed(x)), atol=1e-6)
    with pytest.raises(ValueError, match="exactly one of mlp_dim and mlp_ratio"):
        TransformerBlock(2)
