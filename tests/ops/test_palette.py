"""keras_vit.ops quantize / dequantize against a naive loop, eagerly and inside a compiled predict."""

import keras
import numpy as np
import pytest

from keras_vit.ops import dequantize, quantize
from tests.conftest import to_numpy


def naive_nearest(pixels, palette):
    """(token, squared distance) of each float [-1, 1] pixel row, by loops in float64."""
    tokens, distances = [], []
    for pixel in np.asarray(pixels, np.float64).reshape(-1, 3):
        row = [sum((pixel[c] - float(centre[c])) ** 2 for c in range(3)) for centre in palette]
        best = min(range(len(palette)), key=lambda k: (row[k], k))
        tokens.append(best)
        distances.append(row[best])
    return np.array(tokens), np.array(distances)


def random_palette(size=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (size, 3)).astype("float32")


def test_quantize_equals_a_naive_loop_for_float_and_uint8_images():
    rng = np.random.default_rng(0)
    palette = random_palette()
    images = rng.uniform(-1, 1, (2, 3, 4, 3)).astype("float32")
    tokens = quantize(images, palette)
    assert tuple(tokens.shape) == (2, 12) and keras.backend.standardize_dtype(tokens.dtype) == "int32"
    np.testing.assert_array_equal(to_numpy(tokens).ravel(), naive_nearest(images, palette)[0])
    levels = rng.integers(0, 256, (2, 3, 4, 3)).astype("uint8")
    expected = naive_nearest(levels.astype(np.float64) / 127.5 - 1, palette)[0]
    np.testing.assert_array_equal(to_numpy(quantize(levels, palette)).ravel(), expected)
    np.testing.assert_array_equal(to_numpy(quantize(levels[0], palette)), expected[:12])  # one image


def test_round_trip_is_within_the_nearest_distance_and_exact_on_centres():
    palette = random_palette(32, seed=1)
    images = np.random.default_rng(2).uniform(-1, 1, (2, 4, 4, 3)).astype("float32")
    # Half the pixels of the second image are palette colours themselves.
    images[1, :2] = palette[[[3, 7, 7, 31], [0, 1, 2, 3]]]
    tokens = quantize(images, palette)
    restored = to_numpy(dequantize(tokens, palette, image_size=(4, 4)))
    assert restored.shape == (2, 4, 4, 3) and restored.dtype == np.float32
    _, nearest = naive_nearest(images, palette)
    error = np.sum((restored.astype(np.float64) - images) ** 2, axis=-1).ravel()
    np.testing.assert_allclose(error, nearest, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(tokens)[1, :8], [3, 7, 7, 31, 0, 1, 2, 3])
    np.testing.assert_array_equal(restored[1, :2], images[1, :2])


def test_dequantize_shapes():
    palette = random_palette(4)
    tokens = np.array([[0, 1, 2, 3, 3, 2], [1, 1, 1, 1, 0, 0]], "int32")
    flat = to_numpy(dequantize(tokens, palette))
    assert flat.shape == (2, 6, 3)
    np.testing.assert_array_equal(flat, palette[tokens])
    np.testing.assert_array_equal(to_numpy(dequantize(tokens, palette, image_size=(2, 3))), palette[tokens].reshape(2, 2, 3, 3))
    assert to_numpy(dequantize(tokens[:, :4], palette, image_size=2)).shape == (2, 2, 2, 3)
    with pytest.raises(ValueError, match=r"image_size=\(2, 2\) holds 4 pixels, but the tokens have T=6"):
        dequantize(tokens, palette, image_size=(2, 2))


def test_out_of_range_tokens_are_refused_eagerly():
    palette = random_palette(4)
    with pytest.raises(ValueError, match=r"token 4, outside \[0, 4\) for a palette of 4 colours.*start-of-sequence"):
        dequantize(np.array([[0, 4]]), palette)
    with pytest.raises(ValueError, match=r"token -1, outside \[0, 4\)"):
        dequantize(np.array([[-1, 2]]), palette)
    with pytest.raises(ValueError, match=r"token 9, outside \[0, 4\)"):
        dequantize(np.array([[9, 2]]), palette)
    with pytest.raises(ValueError, match="integer tokens, got dtype float32"):
        dequantize(np.array([[0.0, 1.0]], "float32"), palette)


def test_bad_images_and_palettes_are_refused():
    with pytest.raises(ValueError, match=r"float images in \[-1, 1\], got values from 0 to 255.*x / 127.5 - 1"):
        quantize(np.array([[[[0.0, 128.0, 255.0]]]], "float32"), random_palette(4))
    with pytest.raises(ValueError, match=r"\(\.\.\., height, width, 3\), got shape \(2, 4, 4, 1\)"):
        quantize(np.zeros((2, 4, 4, 1), "float32"), random_palette(4))
    with pytest.raises(ValueError, match=r"palette has shape \(4, 4\), expected \(K, 3\)"):
        quantize(np.zeros((2, 4, 4, 3), "float32"), np.zeros((4, 4), "float32"))
    with pytest.raises(ValueError, match=r"palette has shape \(3,\), expected \(K, 3\)"):
        dequantize(np.zeros((1, 2), "int32"), np.zeros(3, "float32"))


class _RoundTrip(keras.layers.Layer):
    def __init__(self, palette, **kwargs):
        super().__init__(**kwargs)
        self.palette = palette

    def call(self, images):
        tokens = quantize(images, self.palette)
        return dequantize(tokens, self.palette, image_size=(images.shape[1], images.shape[2]))


def test_compiled_round_trip_matches_eager():
    """Inside `predict` (jit on JAX, tf.function on TensorFlow) the token check is skipped, not an error."""
    palette = random_palette(8, seed=3)
    images = np.random.default_rng(4).uniform(-1, 1, (3, 4, 4, 3)).astype("float32")
    model = keras.Sequential([keras.Input((4, 4, 3)), _RoundTrip(palette)])
    compiled = model.predict(images, batch_size=2, verbose=0)
    eager = to_numpy(dequantize(quantize(images, palette), palette, image_size=(4, 4)))
    np.testing.assert_array_equal(compiled, eager)
