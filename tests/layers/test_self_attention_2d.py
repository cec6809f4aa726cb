import keras
import numpy as np
import pytest

from keras_vit.layers.self_attention_2d import SelfAttention2D
from keras_vit.layers.spectral_conv import SpectralConv2D
from tests.conftest import assert_parity, to_numpy


def conv_kernel(conv):
    """The `(C_in, C_out)` matrix a 1x1 `Conv2D` applies (`W / sigma` for a `SpectralConv2D`)."""
    kernel = to_numpy(conv.normalized_kernel()[0] if isinstance(conv, SpectralConv2D) else conv.kernel)
    assert kernel.shape[:2] == (1, 1) and conv.bias is None
    return kernel[0, 0]


def naive_max_pool_2x2(a):
    height, width, channels = a.shape
    out = np.zeros((height // 2, width // 2, channels), a.dtype)
    for r in range(height // 2):
        for c in range(width // 2):
            out[r, c] = a[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(-1, channels).max(axis=0)
    return out


def naive_self_attention(layer, x):
    """SAGAN/BigGAN self-attention on one `(H, W, C)` sample, loops over (i, j)."""
    pool = naive_max_pool_2x2 if layer.pool_keys else (lambda a: a)
    f = (x @ conv_kernel(layer.query)).reshape(-1, layer.resolved_key_channels)
    g = pool(x @ conv_kernel(layer.key)).reshape(-1, layer.resolved_key_channels)
    h = pool(x @ conv_kernel(layer.value)).reshape(-1, layer.resolved_value_channels)
    attended = np.zeros((len(f), layer.resolved_value_channels))
    for i in range(len(f)):
        logits = np.array([f[i] @ g[j] for j in range(len(g))])
        a = np.exp(logits - logits.max())
        a /= a.sum()
        for j in range(len(g)):
            attended[i] += a[j] * h[j]
    o = attended @ conv_kernel(layer.output_conv)
    return x + float(to_numpy(layer.gamma)) * o.reshape(x.shape)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"pool_keys": False}, {"key_channels": 3, "value_channels": 5}, {"spectral_normalization": True}],
)
def test_matches_naive_loops(kwargs):
    rng = np.random.RandomState(0)
    x = rng.randn(2, 4, 6, 16).astype("float32")
    layer = SelfAttention2D(**kwargs)
    layer.build(x.shape)
    layer.gamma.assign(0.7)
    # Inference: the spectral-norm wrappers use the stored kernels as they are.
    out = to_numpy(layer(x, training=False))
    assert not np.allclose(out, x)
    for b in range(2):
        assert_parity(out[b], naive_self_attention(layer, x[b]), f"self-attention 2D {kwargs} vs naive loops")


def test_default_widths_and_no_biases():
    layer = SelfAttention2D()
    layer.build((None, 4, 4, 32))
    assert (layer.resolved_key_channels, layer.resolved_value_channels) == (4, 16)
    shapes = sorted(tuple(w.shape) for w in layer.trainable_weights)
    assert shapes == sorted([(), (1, 1, 32, 4), (1, 1, 32, 4), (1, 1, 32, 16), (1, 1, 16, 32)])


@pytest.mark.parametrize("kwargs", [{}, {"pool_keys": False}, {"spectral_normalization": True}])
def test_fresh_layer_is_the_identity(kwargs):
    x = np.random.RandomState(1).randn(2, 4, 4, 8).astype("float32")
    layer = SelfAttention2D(**kwargs)
    for training in (False, True):
        np.testing.assert_allclose(to_numpy(layer(x, training=training)), x, atol=1e-6, rtol=0)


def _spectral_norm(layer):
    return np.linalg.svd(conv_kernel(layer), compute_uv=False)[0]


def test_spectral_normalization_updates_u_and_normalizes_kernels_when_training():
    x = np.random.RandomState(2).randn(1, 4, 4, 16).astype("float32")
    layer = SelfAttention2D(spectral_normalization=True)
    layer.build(x.shape)
    convs = [layer.query, layer.key, layer.value, layer.output_conv]
    assert all(isinstance(conv, SpectralConv2D) for conv in convs)
    u_before = [to_numpy(conv.vector_u).copy() for conv in convs]
    layer(x, training=False)
    assert all(np.array_equal(to_numpy(conv.vector_u), u) for conv, u in zip(convs, u_before))
    for _ in range(10):  # one power iteration per training call
        layer(x, training=True)
    assert not any(np.array_equal(to_numpy(conv.vector_u), u) for conv, u in zip(convs, u_before))
    for conv in convs:
        assert abs(_spectral_norm(conv) - 1.0) < 1e-2


def test_spectral_normalization_survives_fit_on_every_backend():
    # Keras' own SpectralNormalization writes W / sigma into the kernel while training, a
    # write JAX's stateless fit drops; SpectralConv2D divides on every call instead.
    rng = np.random.RandomState(5)
    inputs = keras.Input((4, 4, 16))
    block = SelfAttention2D(spectral_normalization=True)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(block(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    model.fit(rng.randn(8, 4, 4, 16).astype("float32"), rng.randn(8, 2).astype("float32"), epochs=60, verbose=0)
    for conv in (block.query, block.key, block.value, block.output_conv):
        assert abs(_spectral_norm(conv) - 1.0) < 1e-2
        assert np.linalg.svd(to_numpy(conv.kernel)[0, 0], compute_uv=False)[0] > 1.1  # W itself is not rescaled


@pytest.mark.parametrize("spectral_normalization", [False, True])
def test_training_moves_every_weight(spectral_normalization):
    # gamma starts at 0, so at the first step only gamma gets a non-zero gradient: the
    # convolutions' contribution is multiplied by gamma. The second step sees gamma != 0,
    # so after two steps every trainable weight must have moved (Adam moves any weight
    # with a non-zero gradient by about the learning rate). With spectral normalization the
    # non-trainable u vectors must move too (fit calls the layer with training=True).
    rng = np.random.RandomState(3)
    x = rng.randn(4, 4, 4, 16).astype("float32")
    y = rng.randn(4, 2).astype("float32")
    inputs = keras.Input((4, 4, 16))
    block = SelfAttention2D(spectral_normalization=spectral_normalization)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(block(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    before = {w.path: to_numpy(w).copy() for w in block.weights}
    model.train_on_batch(x, y)
    assert float(to_numpy(block.gamma)) != 0.0
    model.train_on_batch(x, y)
    assert len(block.trainable_weights) == 5
    assert len(block.non_trainable_weights) == (4 if spectral_normalization else 0)
    unchanged = [w.path for w in block.weights if np.array_equal(to_numpy(w), before[w.path])]
    assert not unchanged


def test_config_round_trip():
    layer = SelfAttention2D(key_channels=2, value_channels=3, pool_keys=False, spectral_normalization=True, name="sa")
    clone = SelfAttention2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("spectral_normalization", [False, True])
def test_saved_model_round_trip(tmp_path, spectral_normalization):
    rng = np.random.RandomState(4)
    inputs = keras.Input((4, 4, 16))
    block = SelfAttention2D(spectral_normalization=spectral_normalization)
    model = keras.Model(inputs, block(inputs))
    block.gamma.assign(0.5)
    x = rng.randn(2, 4, 4, 16).astype("float32")
    path = str(tmp_path / "self_attention.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[-1], SelfAttention2D)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)
    np.testing.assert_allclose(to_numpy(loaded(x, training=True)), to_numpy(model(x, training=True)), atol=1e-5)


def test_dynamic_spatial_size():
    inputs = keras.Input((None, None, 8))
    block = SelfAttention2D()
    model = keras.Model(inputs, block(inputs))
    block.gamma.assign(1.0)
    for height, width in ((4, 4), (2, 6)):
        x = np.random.RandomState(height).randn(1, height, width, 8).astype("float32")
        assert_parity(model.predict(x, verbose=0)[0], naive_self_attention(block, x[0]), f"self-attention 2D at {height}x{width} vs naive loops")


@pytest.mark.parametrize("spectral_normalization", [False, True])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, spectral_normalization):
    x = np.random.RandomState(5).randn(2, 4, 4, 16).astype("float32")
    layer = SelfAttention2D(spectral_normalization=spectral_normalization, dtype=policy)
    layer.build(x.shape)
    layer.gamma.assign(0.5)
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    out = to_numpy(out).astype("float32")
    assert np.isfinite(out).all()
    reference = SelfAttention2D(spectral_normalization=spectral_normalization)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(out, to_numpy(reference(x)), atol=0.1, rtol=0.05)
    assert np.isfinite(to_numpy(layer(x, training=True)).astype("float32")).all()


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 2, 4, 4, 16)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match=f"expects \\(batch, height, width, channels\\).*got rank {len(shape)}"):
        SelfAttention2D()(np.zeros(shape, "float32"))


def test_too_few_channels():
    with pytest.raises(ValueError, match="4 input channel.*C // 8 = 0.*at least 8 channels"):
        SelfAttention2D()(np.zeros((1, 4, 4, 4), "float32"))
    assert SelfAttention2D(key_channels=1)(np.zeros((1, 4, 4, 4), "float32")).shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="key_channels must be a positive int"):
        SelfAttention2D(key_channels=0)


def test_odd_size_with_pooling():
    with pytest.raises(ValueError, match="the width is 5 \\(odd\\).*pool_keys=False"):
        SelfAttention2D()(np.zeros((1, 4, 5, 8), "float32"))
    assert SelfAttention2D(pool_keys=False)(np.zeros((1, 3, 5, 8), "float32")).shape == (1, 3, 5, 8)
