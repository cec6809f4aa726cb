import keras
import numpy as np
import pytest

from keras_vit.applications.resnet.local_relation import LocalRelation, window_offsets
from tests.conftest import assert_parity, to_numpy

RANDOM_BIAS = keras.initializers.RandomNormal(stddev=0.5)


def _weights(layer):
    """The layer's weights as float64 NumPy arrays."""
    get = lambda dense: (to_numpy(dense.kernel).astype("float64"), to_numpy(dense.bias).astype("float64"))
    weights = {
        "query": get(layer.query),
        "key": get(layer.key),
        "geometry_hidden": get(layer.geometry_hidden),
        "geometry_output": get(layer.geometry_output),
    }
    if layer.use_projection:
        weights["projection"] = get(layer.projection)
    return weights


def naive_prior(layer):
    """`(k, k, G)` geometry prior: the MLP applied to each offset (a - k//2, b - k//2), one at a time."""
    w = _weights(layer)
    k, r = layer.kernel_size, layer.kernel_size // 2
    prior = np.zeros((k, k, layer.groups))
    for a in range(k):
        for b in range(k):
            hidden = np.maximum(np.array([a - r, b - r], "float64") @ w["geometry_hidden"][0] + w["geometry_hidden"][1], 0)
            prior[a, b] = hidden @ w["geometry_output"][0] + w["geometry_output"][1]
    return prior


def naive_local_relation(x, layer):
    """Explicit loops over output pixels, groups and window cells; cells outside the image are skipped."""
    w = _weights(layer)
    x = x.astype("float64")
    batch, height, width, channels = x.shape
    k, s, m, d = layer.kernel_size, layer.strides, layer.channels_per_group, layer.key_channels_per_group
    r, groups = k // 2, channels // m
    prior = naive_prior(layer)
    out_h, out_w = (height - 1) // s + 1, (width - 1) // s + 1
    y = np.zeros((batch, out_h, out_w, channels))
    for n in range(batch):
        query = x[n] @ w["query"][0] + w["query"][1]
        key = x[n] @ w["key"][0] + w["key"][1]
        for i in range(out_h):
            for j in range(out_w):
                ci, cj = i * s, j * s
                for g in range(groups):
                    logits, values = [], []
                    q = query[ci, cj, g * d : (g + 1) * d]
                    for a in range(k):
                        for b in range(k):
                            pi, pj = ci + a - r, cj + b - r
                            if not (0 <= pi < height and 0 <= pj < width):
                                continue
                            kv = key[pi, pj, g * d : (g + 1) * d]
                            if layer.composability == "squared_difference":
                                phi = -np.sum((q - kv) ** 2)
                            elif layer.composability == "absolute_difference":
                                phi = -np.sum(np.abs(q - kv))
                            else:
                                phi = np.sum(q * kv)
                            logits.append(phi + prior[a, b, g])
                            values.append(x[n, pi, pj, g * m : (g + 1) * m])
                    logits = np.array(logits)
                    weights = np.exp(logits - logits.max())
                    weights /= weights.sum()
                    y[n, i, j, g * m : (g + 1) * m] = weights @ np.array(values)
    if layer.use_projection:
        y = y @ w["projection"][0] + w["projection"][1]
    return y


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("composability", ["squared_difference", "absolute_difference", "multiplication"])
def test_matches_naive_loops_including_borders(strides, composability):
    x = np.random.RandomState(0).randn(2, 6, 6, 16).astype("float32")
    layer = LocalRelation(
        12, kernel_size=3, strides=strides, channels_per_group=8, composability=composability, bias_initializer=RANDOM_BIAS
    )
    out = to_numpy(layer(x))
    assert out.shape == (2, 6 // strides, 6 // strides, 12)
    assert_parity(out, naive_local_relation(x, layer), f"local relation {composability}, strides {strides} vs naive loops")


@pytest.mark.parametrize("strides", [1, 2])
def test_matches_naive_loops_odd_sizes_wide_keys_no_projection(strides):
    x = np.random.RandomState(1).randn(1, 7, 5, 8).astype("float32")
    layer = LocalRelation(
        8, kernel_size=5, strides=strides, channels_per_group=4, key_channels_per_group=2,
        geometry_hidden_units=3, use_projection=False, bias_initializer=RANDOM_BIAS,
    )  # fmt: skip
    out = to_numpy(layer(x))
    assert out.shape == (1, (7 - 1) // strides + 1, (5 - 1) // strides + 1, 8)
    assert_parity(out, naive_local_relation(x, layer), f"local relation, kernel 5, strides {strides} vs naive loops")


def _interior(out_size, in_size, radius, strides, offset):
    """Output indices of the shifted crop whose window lies inside the image in both crops:
    pixel c = i * strides there is pixel c + offset of the unshifted crop."""
    return [i for i in range(out_size) if radius <= i * strides and i * strides + offset + radius < in_size]


@pytest.mark.parametrize("strides,shift", [(1, (2, 1)), (1, (0, 3)), (2, (2, 4))])
def test_translation_equivariance(strides, shift):
    dy, dx = shift
    size, radius = 12, 1
    image = np.random.RandomState(2).randn(1, size + dy, size + dx, 8).astype("float32")
    layer = LocalRelation(8, kernel_size=3, strides=strides, channels_per_group=4, bias_initializer=RANDOM_BIAS)
    base = to_numpy(layer(image[:, :size, :size]))
    moved = to_numpy(layer(image[:, dy : dy + size, dx : dx + size]))  # moved[p] sees base's pixel p + shift
    rows = _interior(moved.shape[1], size, radius, strides, dy)
    cols = _interior(moved.shape[2], size, radius, strides, dx)
    assert len(rows) >= 3 and len(cols) >= 3
    for i in rows:
        for j in cols:
            np.testing.assert_allclose(moved[0, i, j], base[0, i + dy // strides, j + dx // strides], atol=1e-5)
    # the borders are not equivariant: cells outside the image are left out there
    assert not np.allclose(moved[0, 0, 0], base[0, dy // strides, dx // strides], atol=1e-5)


def test_geometry_prior_depends_only_on_relative_position():
    layer = LocalRelation(8, kernel_size=5, channels_per_group=2, bias_initializer=RANDOM_BIAS)
    layer.build((None, 6, 6, 8))
    prior = to_numpy(layer.geometry_prior())
    assert prior.shape == (5, 5, 4)
    assert_parity(prior, naive_prior(layer), "geometry prior vs naive MLP")
    np.testing.assert_array_equal(window_offsets(3), [[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 0], [0, 1], [1, -1], [1, 0], [1, 1]])

    # A constant image makes the appearance term the same for every cell, so every pixel's
    # weights are the softmax of the prior alone, over the cells inside the image.
    x = np.tile(np.random.RandomState(3).randn(1, 1, 1, 8), (2, 6, 6, 1)).astype("float32")
    weights = to_numpy(layer.aggregation_weights(x))  # (B, H, W, k*k, G)
    assert weights.shape == (2, 6, 6, 25, 4)
    flat_prior = prior.reshape(25, 4)
    for i in range(6):
        for j in range(6):
            inside = np.array([0 <= i + a - 2 < 6 and 0 <= j + b - 2 < 6 for a in range(5) for b in range(5)])
            expected = np.where(inside[:, None], np.exp(flat_prior - flat_prior[inside].max(0)), 0.0)
            expected /= expected.sum(0)
            assert_parity(weights[:, i, j], np.broadcast_to(expected, (2, 25, 4)), f"aggregation weights at ({i}, {j}) vs softmax of the prior")
    # interior pixels share exactly the same weights
    np.testing.assert_allclose(weights[:, 2:4, 2:4], np.broadcast_to(weights[:1, 2:3, 2:3], (2, 2, 2, 25, 4)), atol=1e-6)


def test_one_training_step_moves_every_weight():
    inputs = keras.Input((8, 8, 16))
    features = LocalRelation(8, kernel_size=3, strides=2, channels_per_group=4)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.RandomState(4)
    x, y = rng.randn(4, 8, 8, 16).astype("float32"), rng.randint(0, 3, size=(4,))
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    assert len(before) == 12  # query, key, 2 prior layers, projection (kernel + bias each) + Dense
    losses = [float(np.asarray(model.train_on_batch(x, y))) for _ in range(2)]
    assert all(np.isfinite(losses))
    for weight, old in zip(model.trainable_weights, before):
        assert np.any(np.abs(to_numpy(weight) - old) > 0), weight.path


def test_parameter_count_formula():
    channels, m, k, hidden, d, filters = 32, 8, 7, 5, 2, 24
    layer = LocalRelation(filters, kernel_size=k, channels_per_group=m, key_channels_per_group=d, geometry_hidden_units=hidden)
    layer.build((None, 14, 14, channels))
    groups = channels // m
    expected = 2 * (channels + 1) * groups * d + 3 * hidden + (hidden + 1) * groups + (channels + 1) * filters
    assert layer.count_params() == expected


def test_dynamic_spatial_size_and_output_shape():
    inputs = keras.Input((None, None, 8))
    layer = LocalRelation(6, kernel_size=3, strides=2, channels_per_group=4)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None, None, None, 6)
    assert layer.compute_output_shape((None, 7, 5, 8)) == (None, 4, 3, 6)
    model = keras.Model(inputs, outputs)
    assert tuple(model(np.zeros((1, 7, 5, 8), "float32")).shape) == (1, 4, 3, 6)


def test_config_round_trip():
    layer = LocalRelation(
        16, kernel_size=5, strides=2, channels_per_group=4, composability="absolute_difference",
        key_channels_per_group=2, geometry_hidden_units=7, use_projection=True, use_bias=False,
    )  # fmt: skip
    clone = LocalRelation.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_keras_save_and_load(tmp_path):
    inputs = keras.Input((6, 6, 8))
    outputs = LocalRelation(4, kernel_size=3, channels_per_group=4, composability="multiplication")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.RandomState(5).randn(2, 6, 6, 8).astype("float32")
    model.save(tmp_path / "local_relation.keras")
    restored = keras.saving.load_model(tmp_path / "local_relation.keras")
    np.testing.assert_allclose(to_numpy(restored(x)), to_numpy(model(x)), atol=1e-6)


def test_mixed_float16_is_finite_and_close():
    x = np.random.RandomState(6).randn(2, 6, 6, 16).astype("float32")
    layer = LocalRelation(8, kernel_size=3, strides=2, channels_per_group=8, dtype="mixed_float16")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.aggregation_weights(x).dtype) == "float32"
    out = to_numpy(out).astype("float32")
    assert np.all(np.isfinite(out))
    reference = LocalRelation(8, kernel_size=3, strides=2, channels_per_group=8)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(out, to_numpy(reference(x)), atol=5e-2)


def test_global_mixed_float16_policy_runs():
    keras.config.set_dtype_policy("mixed_float16")
    out = to_numpy(LocalRelation(8, kernel_size=3, channels_per_group=4)(np.random.RandomState(7).randn(1, 5, 5, 8)))
    assert out.dtype == np.float16 and np.all(np.isfinite(out))


def test_even_kernel_is_rejected():
    with pytest.raises(ValueError, match="odd kernel_size.*kernel_size=4"):
        LocalRelation(8, kernel_size=4)


@pytest.mark.parametrize("strides", [0, 3])
def test_bad_strides_are_rejected(strides):
    with pytest.raises(ValueError, match=f"strides 1 or 2; got strides={strides}"):
        LocalRelation(8, kernel_size=3, strides=strides)


def test_channels_must_divide_into_groups():
    with pytest.raises(ValueError, match="12 input channels are not divisible by channels_per_group=8"):
        LocalRelation(8, kernel_size=3, channels_per_group=8)(np.zeros((1, 6, 6, 12), "float32"))


@pytest.mark.parametrize("strides,size,fits", [(1, 2, 3), (2, 4, 5)])
def test_kernel_larger_than_input_is_rejected(strides, size, fits):
    with pytest.raises(ValueError, match=f"kernel_size=7 is larger.*height {size} with strides={strides}.*kernel_size <= {fits}"):
        LocalRelation(8, kernel_size=7, strides=strides, channels_per_group=4)(np.zeros((1, size, 9, 8), "float32"))
    # the largest kernel the message allows is accepted
    LocalRelation(8, kernel_size=fits, strides=strides, channels_per_group=4)(np.zeros((1, size, 9, 8), "float32"))


def test_filters_must_match_channels_without_projection():
    with pytest.raises(ValueError, match="outputs its 8 input channels; got filters=4"):
        LocalRelation(4, kernel_size=3, channels_per_group=4, use_projection=False)(np.zeros((1, 4, 4, 8), "float32"))


def test_unknown_composability_is_rejected():
    with pytest.raises(ValueError, match="composability must be one of"):
        LocalRelation(8, composability="cosine")
