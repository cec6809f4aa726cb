"""CausalSelfAttention: its four kernels agree, causal outputs ignore the future, the key/value
cache reproduces the full forward pass, and a naive NumPy loop is the reference for the dense output."""

import numpy as np
import pytest
from keras import ops

from keras_vit.layers.causal_attention import IMPLEMENTATIONS, CausalSelfAttention
from tests.conftest import assert_parity, randomize_weights, to_numpy

BATCH, TOKENS, CHANNELS, HEADS = 2, 10, 8, 2
HEAD_DIM = CHANNELS // HEADS
BLOCK = 4  # shorter than TOKENS: the block-wise kernel (and "auto" on TF / JAX) runs 3 blocks, one partial


def _inputs(seed=0):
    return np.random.RandomState(seed).randn(BATCH, TOKENS, CHANNELS).astype("float32")


def _layer(causal=True, implementation="dense", use_bias=True, weights=None):
    """A built layer with random order-1 weights (or `weights`, another layer's)."""
    layer = CausalSelfAttention(HEADS, causal=causal, use_bias=use_bias, implementation=implementation, block_size=BLOCK)
    layer.build((None, TOKENS, CHANNELS))
    if weights is None:
        randomize_weights(layer, seed=1)
    else:
        layer.set_weights(weights)
    return layer


def _empty_cache():
    return ops.zeros((BATCH, 2, TOKENS, HEADS, HEAD_DIM))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_every_implementation_gives_the_same_outputs_past_one_block(causal):
    x = _inputs()
    reference = _layer(causal)
    expected = to_numpy(reference(x))
    for implementation in IMPLEMENTATIONS:
        layer = _layer(causal, implementation, weights=reference.get_weights())
        np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5, err_msg=implementation)
    # the causal and bidirectional outputs are different functions (the mask is applied)
    other = to_numpy(_layer(not causal, weights=reference.get_weights())(x))
    assert np.abs(other - expected).max() > 1e-2


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_causal_outputs_do_not_depend_on_future_tokens(implementation):
    layer = _layer(True, implementation)
    x = _inputs()
    changed = x.copy()
    changed[:, 6:] = np.random.RandomState(5).randn(BATCH, TOKENS - 6, CHANNELS)
    before, after = to_numpy(layer(x)), to_numpy(layer(changed))
    np.testing.assert_allclose(after[:, :6], before[:, :6], atol=1e-6)
    assert np.abs(after[:, 6:] - before[:, 6:]).max() > 1e-2  # the changed tokens' own outputs do move


def _decode_in_fori_loop(layer, x, cache, start, stop):
    """Feeds tokens `start..stop-1` one at a time inside `keras.ops.fori_loop`: the index is a
    tracer on JAX and a tensor on TensorFlow and torch. Returns their outputs and the cache."""
    outputs = ops.zeros((BATCH, TOKENS, CHANNELS))

    def step(i, state):
        outputs, cache = state
        token = ops.slice(ops.convert_to_tensor(x), [0, i, 0], [BATCH, 1, CHANNELS])
        out, cache = layer(token, cache=cache, cache_index=i)
        return ops.slice_update(outputs, [0, i, 0], out), cache

    outputs, cache = ops.fori_loop(start, stop, step, (outputs, cache))
    return to_numpy(outputs)[:, start:stop], cache


def test_token_by_token_through_the_cache_equals_the_full_causal_pass():
    layer = _layer(True)
    x = _inputs()
    expected = to_numpy(layer(x))
    cache, outputs = _empty_cache(), []
    for index in range(TOKENS):  # Python int positions, eagerly
        out, cache = layer(x[:, index : index + 1], cache=cache, cache_index=index)
        outputs.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)
    # the cache holds every token's keys and values, as the projection computes them
    qkv = to_numpy(layer.qkv(x)).reshape(BATCH, TOKENS, 3, HEADS, HEAD_DIM)
    np.testing.assert_allclose(to_numpy(cache), qkv[:, :, 1:].transpose(0, 2, 1, 3, 4), atol=1e-5)


def test_prompt_then_traced_single_tokens_equal_the_full_causal_pass():
    reference = _layer(True)
    x = _inputs(seed=3)
    expected = to_numpy(reference(x))
    prompt = 5  # longer than one block: the prompt runs through the layer's own kernel
    for implementation in IMPLEMENTATIONS:
        layer = _layer(True, implementation, weights=reference.get_weights())
        prompt_out, cache = layer(x[:, :prompt], cache=_empty_cache(), cache_index=0)
        np.testing.assert_allclose(to_numpy(prompt_out), expected[:, :prompt], atol=1e-5, err_msg=implementation)
        assert np.abs(to_numpy(cache)[:, :, prompt:]).max() == 0  # nothing written past the prompt yet
    # past the prompt every kernel attends to the cache the same way: decode once
    rest, _ = _decode_in_fori_loop(layer, x, cache, prompt, TOKENS)
    np.testing.assert_allclose(rest, expected[:, prompt:], atol=1e-5)


def test_several_tokens_at_a_tensor_index_attend_causally_among_themselves():
    layer = _layer(True)
    x = _inputs(seed=4)
    expected = to_numpy(layer(x))
    _, cache = layer(x[:, :3], cache=_empty_cache(), cache_index=0)
    middle, cache = layer(x[:, 3:7], cache=cache, cache_index=ops.convert_to_tensor(3, "int32"))
    last, _ = layer(x[:, 7:], cache=cache, cache_index=ops.convert_to_tensor(7, "int32"))
    np.testing.assert_allclose(to_numpy(middle), expected[:, 3:7], atol=1e-5)
    np.testing.assert_allclose(to_numpy(last), expected[:, 7:], atol=1e-5)


def _naive_causal_attention(x, wqkv, bqkv, wo, bo):
    """One sequence `(tokens, channels)`: token i attends tokens 0..i, head by head, in float64 loops."""
    tokens = x.shape[0]
    qkv = x @ wqkv + bqkv
    q, k, v = qkv[:, :CHANNELS], qkv[:, CHANNELS : 2 * CHANNELS], qkv[:, 2 * CHANNELS :]
    out = np.zeros((tokens, CHANNELS))
    for h in range(HEADS):
        cols = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        for i in range(tokens):
            logits = np.array([q[i, cols] @ k[j, cols] / np.sqrt(HEAD_DIM) for j in range(i + 1)])
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            out[i, cols] = sum(weights[j] * v[j, cols] for j in range(i + 1))
    return out @ wo + bo


def test_dense_causal_output_matches_a_naive_numpy_loop():
    layer = _layer(True, "dense")
    x = _inputs(seed=2)
    wqkv, bqkv, wo, bo = (w.astype("float64") for w in layer.get_weights())
    assert wqkv.shape == (CHANNELS, 3 * CHANNELS) and wo.shape == (CHANNELS, CHANNELS)
    expected = np.stack([_naive_causal_attention(sample.astype("float64"), wqkv, bqkv, wo, bo) for sample in x])
    assert_parity(layer(x), expected, "dense causal attention vs NumPy loops")


def test_bias_free_layer_has_only_two_kernels():
    layer = _layer(True, use_bias=False)
    assert sorted(w.path.split("/", 1)[1] for w in layer.weights) == ["projection/kernel", "qkv/kernel"]
    assert layer.count_params() == 4 * CHANNELS * CHANNELS
    assert _layer(True, use_bias=True).count_params() == 4 * CHANNELS * CHANNELS + 4 * CHANNELS
    config = layer.get_config()
    assert config["use_bias"] is False and "qkv_bias" not in config
    assert CausalSelfAttention.from_config(config).use_bias is False


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"implementation must be one of 'auto', 'dense', 'fused', 'blockwise', got 'flash'"):
        CausalSelfAttention(HEADS, implementation="flash")
    with pytest.raises(ValueError, match=r"block_size must be a positive int, got 0"):
        CausalSelfAttention(HEADS, block_size=0)
    x = _inputs()[:, :1]
    with pytest.raises(ValueError, match=r"cache needs causal=True"):
        _layer(False)(x, cache=_empty_cache(), cache_index=0)
    with pytest.raises(ValueError, match=r"pass cache_index"):
        _layer(True)(x, cache=_empty_cache())
