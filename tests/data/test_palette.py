"""The iGPT palette: k-means fit, .npy files and the tf.data / NumPy quantizers against a naive loop."""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_vit.data import fit_palette
from keras_vit.data import load_palette
from keras_vit.data import quantize_numpy
from keras_vit.data import quantize_tf
from keras_vit.data import save_palette

pytestmark = pytest.mark.backend_agnostic  # NumPy, scikit-learn and tf.data only

LUMA = np.array([0.299, 0.587, 0.114])


def naive_tokens(images, palette):
    """Nearest palette row of every pixel, by explicit loops in float64, first index on ties.
    Returns `(tokens (..., H * W), gaps)`, gaps being the margin to the second-nearest row."""
    images = np.asarray(images, np.float64)
    pixels = images.reshape(-1, 3) / 127.5 - 1.0
    tokens, gaps = [], []
    for pixel in pixels:
        distances = [sum((pixel[c] - float(row[c])) ** 2 for c in range(3)) for row in palette]
        best = min(range(len(palette)), key=lambda k: (distances[k], k))
        tokens.append(best)
        gaps.append(sorted(distances)[1] - distances[best])
    return np.array(tokens).reshape(images.shape[:-3] + (-1,)), np.array(gaps)


def random_palette(rng, size=16):
    return rng.uniform(-1, 1, (size, 3)).astype("float32")


def test_quantizers_equal_a_naive_loop():
    rng = np.random.default_rng(0)
    palette = random_palette(rng)
    images = rng.integers(0, 256, (2, 4, 5, 3)).astype("uint8")
    expected, gaps = naive_tokens(images, palette)
    assert gaps.min() > 1e-5  # no near-ties: exact equality is the right test
    for tokens in (quantize_tf(images, palette).numpy(), quantize_numpy(images, palette)):
        assert tokens.shape == (2, 20) and tokens.dtype == np.int32
        np.testing.assert_array_equal(tokens, expected)
    # Float images in [0, 255] are the same pixels; a single image gives (H * W,).
    np.testing.assert_array_equal(quantize_tf(images.astype("float32"), palette).numpy(), expected)
    np.testing.assert_array_equal(quantize_numpy(images[0], palette), expected[0])


def test_quantize_tf_in_a_dataset_map():
    rng = np.random.default_rng(1)
    palette = random_palette(rng, 8)
    images = rng.integers(0, 256, (3, 6, 6, 3)).astype("uint8")
    dataset = tf.data.Dataset.from_tensor_slices(images).map(lambda image: quantize_tf(image, palette))
    assert dataset.element_spec.shape == (36,) and dataset.element_spec.dtype == tf.int32
    np.testing.assert_array_equal(np.stack(list(dataset.as_numpy_iterator())), naive_tokens(images, palette)[0])


def test_quantize_rejects_images_without_three_channels():
    palette = random_palette(np.random.default_rng(0), 4)
    for quantize in (quantize_tf, quantize_numpy):
        with pytest.raises(ValueError, match=r"\(\.\.\., height, width, 3\), got shape \(2, 4, 4, 4\)"):
            quantize(np.zeros((2, 4, 4, 4), "uint8"), palette)


def clustered_images(rng, colours, count=500, noise=3.0):
    """`count` pixels around each colour (uint8 RGB), as (1, count * len(colours), 1, 3) images."""
    pixels = np.concatenate([colour + rng.normal(0, noise, (count, 3)) for colour in colours])
    return np.clip(np.round(pixels), 0, 255).astype("uint8").reshape(1, -1, 1, 3)


def test_fit_finds_the_clusters_sorted_and_deterministic():
    rng = np.random.default_rng(0)
    colours = np.array([[220, 38, 38], [37, 84, 220], [245, 215, 35], [15, 15, 15]], float)
    images = clustered_images(rng, colours)
    palette = fit_palette(images, clusters=4, seed=3)
    assert palette.shape == (4, 3) and palette.dtype == np.float32
    assert palette.min() >= -1 and palette.max() <= 1
    # Each centre is one colour's mean (noise std 3 of 255: the mean is within 1 level).
    expected = colours / 127.5 - 1
    expected = expected[np.argsort(expected @ LUMA)]
    np.testing.assert_allclose(palette, expected, atol=1 / 127.5)
    assert np.all(np.diff(palette.astype(np.float64) @ LUMA) >= 0)  # sorted by luma
    # The same seed, and the same pixels in batches (with labels), give the same palette.
    np.testing.assert_array_equal(fit_palette(images, clusters=4, seed=3), palette)
    batches = [(images, np.zeros(1))]
    np.testing.assert_array_equal(fit_palette(iter(batches), clusters=4, seed=3), palette)


def test_fit_samples_at_most_max_pixels_with_the_seed():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20, 10, 10, 3)).astype("uint8")
    first = fit_palette(images, clusters=8, max_pixels=300, seed=0)
    np.testing.assert_array_equal(first, fit_palette(images, clusters=8, max_pixels=300, seed=0))
    assert not np.array_equal(first, fit_palette(images, clusters=8, max_pixels=300, seed=1))
    # Batches of any split give the same sample as the whole array.
    batches = [images[:7], images[7:8], images[8:]]
    np.testing.assert_array_equal(fit_palette(batches, clusters=8, max_pixels=300, seed=0), first)


def test_fit_with_fewer_colours_than_clusters_keeps_them_exactly():
    colours = np.array([[10, 20, 30], [200, 100, 50], [255, 255, 255]], "uint8")
    images = np.repeat(colours, [50, 30, 20], axis=0).reshape(1, 10, 10, 3)
    with pytest.warns(UserWarning, match=r"3 distinct colours, fewer than clusters=8.*clusters=3"):
        palette = fit_palette(images, clusters=8)
    assert palette.shape == (8, 3)
    exact = colours.astype("float32") / np.float32(127.5) - np.float32(1)
    assert {tuple(row) for row in palette} == {tuple(row) for row in exact}
    # Every pixel is a palette colour: distance 0, and the first of its copies.
    tokens = quantize_numpy(images, palette)
    np.testing.assert_array_equal(palette[tokens[0]], exact[np.repeat([0, 1, 2], [50, 30, 20])])
    first_copy = {tuple(row): i for i, row in reversed(list(enumerate(palette)))}
    assert set(tokens.ravel()) == set(first_copy.values())
    np.testing.assert_array_equal(quantize_tf(images, palette).numpy(), tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_palette(images, clusters=3).shape == (3, 3)  # exactly as many: no warning


@pytest.mark.parametrize(
    "images, options, message",
    [
        (np.full((1, 4, 4, 3), 300.0), {}, r"\[0, 255\], got values from 300.0 to 300.0"),
        (np.zeros((1, 4, 4, 4), "uint8"), {}, r"3 channels last.*shape \(1, 4, 4, 4\)"),
        (np.zeros((0, 4, 4, 3), "uint8"), {"clusters": 2}, "no pixels"),
        (np.zeros((1, 4, 4, 3), "uint8"), {"clusters": 0}, "clusters must be a positive integer, got clusters=0"),
        (np.zeros((1, 4, 4, 3), "uint8"), {"clusters": 8, "max_pixels": 4}, "max_pixels=4 is smaller than clusters=8"),
    ],
)
def test_fit_errors(images, options, message):
    with pytest.raises(ValueError, match=message):
        fit_palette(images, **options)


def test_save_load_round_trip_is_atomic(tmp_path):
    palette = random_palette(np.random.default_rng(0))
    path = tmp_path / "palette.npy"
    assert save_palette(path, palette) == path
    loaded = load_palette(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, palette)
    save_palette(str(path), palette[::-1])  # replaces the file; rows keep their order
    np.testing.assert_array_equal(load_palette(str(path)), palette[::-1])
    assert os.listdir(tmp_path) == ["palette.npy"]  # no temporary file left


def test_load_refuses_what_is_no_palette(tmp_path):
    wrong_shape = tmp_path / "wrong_shape.npy"
    np.save(wrong_shape, np.zeros((16, 4), "float32"))
    with pytest.raises(ValueError, match=r"wrong_shape\.npy' has shape \(16, 4\), expected \(K, 3\).*\[-1, 1\]"):
        load_palette(wrong_shape)
    out_of_range = tmp_path / "levels.npy"
    np.save(out_of_range, np.array([[0, 128, 255]], "float32"))
    with pytest.raises(ValueError, match=r"levels\.npy' has values from 0.0 to 255.0, expected \[-1, 1\].*127\.5"):
        load_palette(out_of_range)
    text = tmp_path / "notes.npy"
    text.write_text("not an array")
    with pytest.raises(ValueError, match=r"notes\.npy"):
        load_palette(text)
    with pytest.raises(ValueError, match=r"save_palette.*shape \(3,\), expected \(K, 3\)"):
        save_palette(tmp_path / "bad.npy", np.zeros(3))
    assert not (tmp_path / "bad.npy").exists()
