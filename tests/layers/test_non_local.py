import itertools

import keras
import numpy as np
import pytest

from keras_vit.layers.non_local import NON_LOCAL_MODES, NonLocalBlock
from tests.conftest import assert_parity, to_numpy

# (input shape without batch, pool size over the spatial axes with sub_sample)
SHAPES = {
    "sequence": ((6, 4), (2,)),
    "image": ((5, 4, 4), (2, 2)),  # odd height: the pooled map drops the last row
    "video": ((2, 4, 3, 4), (1, 2, 2)),
}


def naive_max_pool(a, pool):
    """Explicit-loop max pooling of `(*spatial, C)` with stride = pool, floor mode."""
    out_shape = tuple(size // p for size, p in zip(a.shape[:-1], pool))
    out = np.zeros(out_shape + (a.shape[-1],), a.dtype)
    for index in np.ndindex(*out_shape):
        window = tuple(slice(i * p, i * p + p) for i, p in zip(index, pool))
        out[index] = a[window].reshape(-1, a.shape[-1]).max(axis=0)
    return out


def naive_non_local(layer, x, pool):
    """Non-local block on one sample `x` of shape `(*spatial, C)`, loops over (i, j)."""
    mode = layer.mode

    def dense(sub, a):
        return a @ to_numpy(sub.kernel) + to_numpy(sub.bias)

    def maybe_pool(a):
        return naive_max_pool(a, pool) if layer.sub_sample else a

    spatial, channels = x.shape[:-1], x.shape[-1]
    g = maybe_pool(dense(layer.g, x)).reshape(-1, layer.bottleneck)
    if mode == "gaussian":
        queries, keys = x.reshape(-1, channels), maybe_pool(x).reshape(-1, channels)
    else:
        queries = dense(layer.theta, x).reshape(-1, layer.bottleneck)
        keys = maybe_pool(dense(layer.phi, x)).reshape(-1, layer.bottleneck)
    n_q, n_k = len(queries), len(keys)
    y = np.zeros((n_q, layer.bottleneck))
    for i in range(n_q):
        if mode in ("embedded_gaussian", "gaussian"):
            logits = np.array([queries[i] @ keys[j] for j in range(n_k)])
            f = np.exp(logits - logits.max())
            f /= f.sum()
        elif mode == "dot_product":
            f = np.array([queries[i] @ keys[j] / n_k for j in range(n_k)])
        else:  # concatenation: the full concatenated vector, as in the paper
            w = to_numpy(layer.concat_kernel)[:, 0]
            f = np.array([max(w @ np.concatenate([queries[i], keys[j]]), 0.0) / n_k for j in range(n_k)])
        for j in range(n_k):
            y[i] += f[j] * g[j]
    z = dense(layer.w_z, y)
    if layer.use_batch_norm:
        bn = layer.batch_norm
        mean, var = to_numpy(bn.moving_mean), to_numpy(bn.moving_variance)
        z = (z - mean) / np.sqrt(var + bn.epsilon) * to_numpy(bn.gamma) + to_numpy(bn.beta)
    return x + z.reshape(spatial + (channels,))


def randomize_output_branch(layer, rng):
    """Non-zero BN statistics and affine (or W_z without BN), so the block is not the identity."""
    if layer.use_batch_norm:
        bn = layer.batch_norm
        channels = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
        bn.beta.assign(rng.uniform(-0.5, 0.5, channels).astype("float32"))
        bn.moving_mean.assign(rng.uniform(-0.2, 0.2, channels).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
    else:
        layer.w_z.kernel.assign(rng.normal(0, 0.5, layer.w_z.kernel.shape).astype("float32"))
        layer.w_z.bias.assign(rng.normal(0, 0.5, layer.w_z.bias.shape).astype("float32"))


@pytest.mark.parametrize(
    "mode, kind, sub_sample", list(itertools.product(NON_LOCAL_MODES, ["image", "sequence", "video"], [False, True]))
)
def test_matches_naive_loops(mode, kind, sub_sample):
    shape, pool = SHAPES[kind]
    rng = np.random.RandomState(0)
    x = rng.randn(2, *shape).astype("float32")
    layer = NonLocalBlock(mode, sub_sample=sub_sample)
    layer.build(x.shape)
    randomize_output_branch(layer, rng)
    out = to_numpy(layer(x, training=False))
    assert not np.allclose(out, x)
    for b in range(2):
        assert_parity(out[b], naive_non_local(layer, x[b], pool), f"non-local {mode} vs naive loops")


@pytest.mark.parametrize("mode", NON_LOCAL_MODES)
def test_without_batch_norm_and_custom_bottleneck_match_naive_loops(mode):
    rng = np.random.RandomState(1)
    x = rng.randn(1, 4, 4, 6).astype("float32")
    layer = NonLocalBlock(mode, bottleneck_channels=5, sub_sample=True, use_batch_norm=False)
    layer.build(x.shape)
    assert layer.bottleneck == 5 and not hasattr(layer, "batch_norm")
    randomize_output_branch(layer, rng)
    out = to_numpy(layer(x))
    assert_parity(out[0], naive_non_local(layer, x[0], (2, 2)), f"non-local {mode} without BN vs naive loops")


def test_gaussian_creates_no_theta_or_phi_and_concatenation_has_one_kernel():
    gaussian = NonLocalBlock("gaussian")
    gaussian.build((None, 4, 4, 8))
    assert not hasattr(gaussian, "theta") and not hasattr(gaussian, "phi")
    assert {w.path.split("/")[-2] for w in gaussian.trainable_weights} == {"g", "w_z", "batch_norm"}
    concatenation = NonLocalBlock("concatenation")
    concatenation.build((None, 4, 4, 8))
    assert tuple(concatenation.concat_kernel.shape) == (8, 1)


@pytest.mark.parametrize(
    "mode, kind, use_batch_norm",
    list(itertools.product(NON_LOCAL_MODES, ["image", "sequence", "video"], [True, False])),
)
def test_fresh_block_is_the_identity(mode, kind, use_batch_norm):
    x = np.random.RandomState(2).randn(2, *SHAPES[kind][0]).astype("float32")
    layer = NonLocalBlock(mode, sub_sample=True, use_batch_norm=use_batch_norm)
    for training in (False, True):
        np.testing.assert_allclose(to_numpy(layer(x, training=training)), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "mode, use_batch_norm", [(mode, True) for mode in NON_LOCAL_MODES] + [("embedded_gaussian", False)]
)
def test_training_moves_every_weight(mode, use_batch_norm):
    # A fresh block is the identity because the BN gamma (or W_z without BN) is 0, so at the
    # first step theta, phi, g and W_z (resp. theta, phi, g) get exactly zero gradient; only
    # gamma and beta (resp. W_z) move. The second step sees a non-zero gamma (resp. W_z), so
    # after two steps every trainable weight must have moved. Adam moves any weight with a
    # non-zero gradient by about the learning rate, whatever the gradient's scale.
    rng = np.random.RandomState(3)
    x = rng.randn(4, 4, 4, 4).astype("float32")
    y = rng.randn(4, 2).astype("float32")
    inputs = keras.Input((4, 4, 4))
    block = NonLocalBlock(mode, sub_sample=True, use_batch_norm=use_batch_norm)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(block(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    before = {w.path: to_numpy(w).copy() for w in block.trainable_weights}
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    unchanged = [w.path for w in block.trainable_weights if np.array_equal(to_numpy(w), before[w.path])]
    assert not unchanged
    if use_batch_norm:
        assert not np.allclose(to_numpy(block.batch_norm.moving_mean), 0.0)


def test_config_round_trip():
    layer = NonLocalBlock("concatenation", bottleneck_channels=3, sub_sample=True, use_batch_norm=False, name="nl")
    clone = NonLocalBlock.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_saved_model_round_trip(tmp_path):
    rng = np.random.RandomState(4)
    inputs = keras.Input((4, 4, 6))
    block = NonLocalBlock("dot_product", sub_sample=True)
    model = keras.Model(inputs, block(inputs))
    randomize_output_branch(block, rng)
    x = rng.randn(2, 4, 4, 6).astype("float32")
    path = str(tmp_path / "non_local.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[-1], NonLocalBlock) and loaded.layers[-1].mode == "dot_product"
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)


def test_dynamic_spatial_size():
    inputs = keras.Input((None, None, 4))
    block = NonLocalBlock(sub_sample=True)
    model = keras.Model(inputs, block(inputs))
    randomize_output_branch(block, np.random.RandomState(5))
    for size in (4, 6):
        x = np.random.RandomState(size).randn(1, size, size, 4).astype("float32")
        assert_parity(model.predict(x, verbose=0)[0], naive_non_local(block, x[0], (2, 2)), f"non-local at {size} px vs naive loops")


@pytest.mark.parametrize("mode", NON_LOCAL_MODES)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(mode, policy):
    rng = np.random.RandomState(6)
    x = rng.randn(2, 4, 4, 8).astype("float32")
    layer = NonLocalBlock(mode, sub_sample=True, dtype=policy)
    layer.build(x.shape)
    randomize_output_branch(layer, rng)
    out = layer(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    out = to_numpy(out).astype("float32")
    assert np.isfinite(out).all()
    reference = NonLocalBlock(mode, sub_sample=True)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(out, to_numpy(reference(x)), atol=0.1, rtol=0.05)
    assert np.isfinite(to_numpy(layer(x, training=True)).astype("float32")).all()


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown mode 'softmax'.*'embedded_gaussian', 'gaussian', 'dot_product', "
                       "'concatenation'"):
        NonLocalBlock("softmax")


@pytest.mark.parametrize("shape", [(2, 8), (1, 2, 2, 2, 2, 8)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match=f"got rank {len(shape)}"):
        NonLocalBlock()(np.zeros(shape, "float32"))


def test_too_few_channels_or_bad_bottleneck():
    with pytest.raises(ValueError, match="1 input channel.*C // 2 = 0.*bottleneck_channels"):
        NonLocalBlock()(np.zeros((1, 4, 4, 1), "float32"))
    assert NonLocalBlock(bottleneck_channels=1)(np.zeros((1, 4, 4, 1), "float32")).shape == (1, 4, 4, 1)
    with pytest.raises(ValueError, match="bottleneck_channels must be a positive int"):
        NonLocalBlock(bottleneck_channels=0)


def test_sub_sample_needs_room_to_pool():
    with pytest.raises(ValueError, match="pools axis 2 by 2, but its size is 1"):
        NonLocalBlock(sub_sample=True)(np.zeros((1, 4, 1, 4), "float32"))
    # Videos are not pooled over time: a single frame is fine.
    assert NonLocalBlock(sub_sample=True)(np.zeros((1, 1, 4, 4, 4), "float32")).shape == (1, 1, 4, 4, 4)
