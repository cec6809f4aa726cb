import keras
import numpy as np
import pytest
from keras import ops

from keras_vit.layers.blockwise_attention import attention_scratch_bytes, blockwise_attention
from tests.conftest import to_numpy

BACKEND = keras.backend.backend()


def _inputs(batch, query_tokens, key_tokens, heads=2, head_dim=4, value_dim=None, seed=0, dtype="float32"):
    rng = np.random.RandomState(seed)
    q = rng.randn(batch, query_tokens, heads, head_dim)
    k = rng.randn(batch, key_tokens, heads, head_dim)
    v = rng.randn(batch, key_tokens, heads, value_dim or head_dim)
    return [x.astype(dtype) for x in (q, k, v)]


def _causal_mask(query_tokens, key_tokens):
    """True where query i may attend key j: the queries are the last positions of the keys."""
    return np.arange(key_tokens)[None, :] <= np.arange(query_tokens)[:, None] + key_tokens - query_tokens


def _numpy_attention(q, k, v, causal, scale=None):
    q, k, v = (x.astype("float64") for x in (q, k, v))
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if causal:
        s = np.where(_causal_mask(q.shape[1], k.shape[1]), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def _dense_attention(q, k, v, causal=False):
    """The plain product in keras.ops, differentiated by the backend's autodiff."""
    s = ops.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if causal:
        s = ops.where(_causal_mask(q.shape[1], k.shape[1]), s, -1e9)
    return ops.einsum("bhqk,bkhd->bqhd", ops.softmax(s, axis=-1), v)


def _value_and_grads(fn, q, k, v, cotangent, compiled=False, dtype="float32"):
    """`fn(q, k, v)` and the gradients of `sum(fn(q, k, v) * cotangent)` wrt q, k, v, as NumPy.

    The inputs are NumPy float32, cast to `dtype`. `compiled`: tf.function ("graph") or
    tf.function(jit_compile=True) ("xla"); JAX always runs under jax.jit (eager JAX compiles
    every loop on every call), torch eagerly.
    """
    q, k, v = (ops.convert_to_tensor(x, dtype) for x in (q, k, v))
    if BACKEND == "jax":
        import jax

        def loss(q, k, v):
            out = fn(q, k, v)
            return ops.sum(ops.cast(out, "float32") * cotangent), out

        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        def step(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                out = fn(q, k, v)
                loss = tf.reduce_sum(tf.cast(out, "float32") * cotangent)
            return out, tape.gradient(loss, [q, k, v])

        if compiled:
            step = tf.function(step, jit_compile=compiled == "xla")
        out, grads = step(q, k, v)
    elif BACKEND == "torch":
        import torch

        q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
        out = fn(q, k, v)
        (out.float() * torch.tensor(cotangent)).sum().backward()
        grads = (q.grad, k.grad, v.grad)
    else:
        pytest.skip(f"no autodiff on the {BACKEND} backend")
    return to_numpy(out), [to_numpy(g) for g in grads]


CASES = [  # (query_tokens, key_tokens, block_size, causal)
    (16, 16, 4, False),  # divisible
    (16, 16, 4, True),
    (19, 19, 4, False),  # ragged last block
    (19, 19, 4, True),
    (7, 19, 4, True),  # causal, queries are the last 7 keys (KV cache)
    (7, 19, 4, False),  # cross attention, fewer queries
    (19, 7, 4, False),  # more queries than keys
    (10, 13, 32, True),  # one block larger than the sequence
    (9, 9, 1, True),  # one-token blocks
]


@pytest.mark.parametrize("query_tokens, key_tokens, block_size, causal", CASES)
def test_forward_matches_numpy(query_tokens, key_tokens, block_size, causal):
    q, k, v = _inputs(2, query_tokens, key_tokens, value_dim=3)
    out = to_numpy(blockwise_attention(q, k, v, causal=causal, block_size=block_size))
    assert out.shape == (2, query_tokens, 2, 3)
    np.testing.assert_allclose(out, _numpy_attention(q, k, v, causal), atol=1e-5)


def test_custom_scale():
    q, k, v = _inputs(1, 11, 11)
    out = to_numpy(blockwise_attention(q, k, v, causal=True, block_size=4, scale=0.9))
    np.testing.assert_allclose(out, _numpy_attention(q, k, v, True, scale=0.9), atol=1e-5)


GRADIENT_CASES = [(*case, True) for case in CASES[:7]] + [  # remat=False: the backend differentiates the loops
    (19, 19, 4, True, False),
    (7, 19, 4, False, False),
]


@pytest.mark.parametrize("query_tokens, key_tokens, block_size, causal, remat", GRADIENT_CASES)
def test_gradients_match_dense_autodiff(query_tokens, key_tokens, block_size, causal, remat):
    q, k, v = _inputs(2, query_tokens, key_tokens, seed=1)
    cotangent = np.random.RandomState(2).randn(2, query_tokens, 2, 4).astype("float32")

    def blockwise(q, k, v):
        return blockwise_attention(q, k, v, causal=causal, block_size=block_size, remat=remat)

    out, grads = _value_and_grads(blockwise, q, k, v, cotangent)
    expected_out, expected_grads = _value_and_grads(
        lambda q, k, v: _dense_attention(q, k, v, causal), q, k, v, cotangent
    )
    np.testing.assert_allclose(out, expected_out, atol=1e-5)
    for name, grad, expected in zip("qkv", grads, expected_grads):
        np.testing.assert_allclose(grad, expected, atol=1e-5, err_msg=f"d{name}")


@pytest.mark.parametrize("remat", [True, False])
@pytest.mark.parametrize("compiled", ["graph", "xla"])
def test_gradients_in_a_compiled_tensorflow_step(compiled, remat):
    if BACKEND != "tensorflow":
        pytest.skip("tf.function only (JAX's gradients always run under jax.jit here, torch's eagerly)")
    q, k, v = _inputs(1, 19, 19, seed=3)
    cotangent = np.random.RandomState(4).randn(1, 19, 2, 4).astype("float32")

    def blockwise(q, k, v):
        return blockwise_attention(q, k, v, causal=True, block_size=4, remat=remat)

    out, grads = _value_and_grads(blockwise, q, k, v, cotangent, compiled=compiled)
    expected_out, expected_grads = _value_and_grads(
        lambda q, k, v: _dense_attention(q, k, v, True), q, k, v, cotangent
    )
    np.testing.assert_allclose(out, expected_out, atol=1e-5)
    for name, grad, expected in zip("qkv", grads, expected_grads):
        np.testing.assert_allclose(grad, expected, atol=1e-5, err_msg=f"d{name}")


@pytest.mark.parametrize("dtype, atol", [("float16", 5e-3), ("bfloat16", 3e-2)])
def test_half_precision_inputs_are_close_to_float32(dtype, atol):
    q, k, v = _inputs(1, 21, 21, heads=2, head_dim=8, seed=5)
    low = [ops.convert_to_tensor(x, dtype) for x in (q, k, v)]
    # The float32 reference sees the same rounded inputs, so only the arithmetic differs.
    rounded = [to_numpy(ops.cast(x, "float32")) for x in low]
    expected = _numpy_attention(*rounded, causal=True)
    cotangent = np.random.RandomState(6).randn(1, 21, 2, 8).astype("float32")

    def blockwise(q, k, v):
        return blockwise_attention(q, k, v, causal=True, block_size=8)

    out, grads = _value_and_grads(blockwise, q, k, v, cotangent, dtype=dtype)
    _, expected_grads = _value_and_grads(
        lambda q, k, v: _dense_attention(q, k, v, True), *rounded, cotangent
    )
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    np.testing.assert_allclose(out.astype("float32"), expected, atol=atol)
    for name, grad, reference in zip("qkv", grads, expected_grads):
        assert keras.backend.standardize_dtype(grad.dtype) == dtype
        np.testing.assert_allclose(grad.astype("float32"), reference, atol=4 * atol, err_msg=f"d{name}")


def test_causal_skips_future_key_blocks():
    # NaN keys and values in the last key block: a block computed and then masked would
    # still spread the NaN (0 * NaN), so finite early rows prove the block was never touched.
    tokens, block = 16, 4
    q, k, v = _inputs(1, tokens, tokens, seed=8)
    k[:, -block:] = np.nan
    v[:, -block:] = np.nan
    cotangent = np.ones((1, tokens, 2, 4), "float32")

    def blockwise(q, k, v):
        return blockwise_attention(q, k, v, causal=True, block_size=block)

    out, (d_q, d_k, d_v) = _value_and_grads(blockwise, q, k, v, cotangent)
    seen = tokens - block  # rows whose key blocks exclude the last one
    assert np.isnan(out[:, seen:]).all()
    clean = _numpy_attention(q[:, :seen], k[:, :seen], v[:, :seen], causal=True)
    np.testing.assert_allclose(out[:, :seen], clean, atol=1e-5)
    assert np.isfinite(d_q[:, :seen]).all()
    # The dense product does touch the future block (0 * NaN): its gradient is NaN everywhere.
    _, (dense_d_q, _, _) = _value_and_grads(lambda q, k, v: _dense_attention(q, k, v, True), q, k, v, cotangent)
    assert np.isnan(dense_d_q[:, :seen]).any()


def test_causal_computes_about_half_the_tiles():
    causal = attention_scratch_bytes(4096, 8, block_size=256, causal=True)
    full = attention_scratch_bytes(4096, 8, block_size=256, causal=False)
    assert (causal["tiles_computed"], causal["tiles_total"]) == (136, 256)
    assert full["tiles_computed"] == 256
    assert causal["dense"] == 8 * 4096 * 4096 * 4 == 512 * 2**20
    assert causal["blockwise"] == 8 * 256 * 256 * 4 == 2 * 2**20
    ragged = attention_scratch_bytes(10, 1, batch=2, dtype_bytes=2, block_size=4)
    assert ragged == {"dense": 400, "blockwise": 128, "block_size": 4, "tiles_computed": 6, "tiles_total": 9}
    assert attention_scratch_bytes(100, 1)["block_size"] == 100  # the default block, capped at the tokens


def test_inside_a_functional_model():
    class Attention(keras.layers.Layer):
        def call(self, x):
            return blockwise_attention(x, x, x, causal=True, block_size=4)

    inputs = keras.Input((10, 2, 4))
    model = keras.Model(inputs, Attention()(inputs))
    assert model.output_shape == (None, 10, 2, 4)
    x = _inputs(2, 10, 10)[0]
    np.testing.assert_allclose(to_numpy(model(x)), _numpy_attention(x, x, x, True), atol=1e-5)


def test_errors_name_the_problem():
    q, k, v = _inputs(1, 8, 8)
    with pytest.raises(ValueError, match="head dims differ"):
        blockwise_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match="block_size must be a positive integer, got 0"):
        blockwise_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        blockwise_attention(q, k, v, block_size=2.5)
    with pytest.raises(ValueError, match="token counts differ"):
        blockwise_attention(q, k, v[:, :5])
    with pytest.raises(ValueError, match="heads"):
        blockwise_attention(q, k[:, :, :1], v[:, :, :1])
    with pytest.raises(ValueError, match="query_tokens <= key_tokens"):
        blockwise_attention(q, k[:, :5], v[:, :5], causal=True)
    with pytest.raises(ValueError, match=r"\(batch, tokens, heads, head_dim\)"):
        blockwise_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="inside a layer's `call"):
        blockwise_attention(*[keras.Input((8, 2, 4))] * 3)


def test_token_count_must_be_static():
    if BACKEND != "tensorflow":
        pytest.skip("only TensorFlow traces with unknown sequence lengths (JAX and torch shapes are concrete)")
    import tensorflow as tf

    spec = tf.TensorSpec((1, None, 2, 4), "float32")
    traced = tf.function(lambda q: blockwise_attention(q, q, q, block_size=4), input_signature=[spec])
    with pytest.raises(ValueError, match=r"token count \(axis 1\) of `query` must be static"):
        traced.get_concrete_function()
