"""iGPT pixel-token pipelines on `shapes/small`: causal shift, masked weights, labels, palettes, errors."""

import numpy as np
import pytest

from keras_vit.data import fit_dataset_palette
from keras_vit.data import load_dataset
from keras_vit.data import load_pixel_dataset
from keras_vit.data import quantize_numpy
from keras_vit.data import save_palette

pytestmark = pytest.mark.backend_agnostic  # tf.data, NumPy and scikit-learn only

SIZE = 8  # 64 tokens per image
CLUSTERS = 16


@pytest.fixture(scope="module")
def palette(shapes_dir):
    return fit_dataset_palette("shapes/small", "test", image_size=SIZE, clusters=CLUSTERS, max_images=24,
                               max_pixels=1000, data_dir=shapes_dir)


def _load(shapes_dir, palette, **options):
    options = {"image_size": SIZE, "batch_size": 16, **options}
    return load_pixel_dataset("shapes/small", "test", palette=palette, data_dir=shapes_dir, **options)


def _expected_tokens(shapes_dir, palette):
    """The tokens of the eval images, from `load_dataset` and the NumPy quantizer."""
    images, _ = load_dataset("shapes/small", "test", data_dir=shapes_dir, image_size=SIZE, batch_size=120,
                             eval_crop_fraction=1.0)
    return quantize_numpy(next(iter(images))[0].numpy(), palette)


def test_fit_dataset_palette_is_deterministic(shapes_dir, palette):
    assert palette.shape == (CLUSTERS, 3) and palette.dtype == np.float32
    assert -1 <= palette.min() and palette.max() <= 1
    # The image order follows `seed` and TensorFlow's global seed (set per test by conftest).
    first, again = (
        fit_dataset_palette("shapes/small", "test", image_size=SIZE, clusters=CLUSTERS, max_images=24,
                            max_pixels=1000, seed=7, data_dir=shapes_dir)
        for _ in range(2)
    )
    np.testing.assert_array_equal(again, first)


def test_causal_inputs_are_the_tokens_shifted_after_the_start_id(shapes_dir, palette):
    dataset, info = _load(shapes_dir, palette)
    assert (info.num_examples, info.num_tokens, info.palette_size) == (120, 64, CLUSTERS)
    assert (info.vocabulary_size, info.start_id, info.mask_id, info.num_classes) == (17, 16, 16, 6)
    batches = list(dataset.as_numpy_iterator())
    assert [len(inputs) for inputs, _ in batches] == [16] * 7 + [8]  # the last partial batch is kept
    inputs = np.concatenate([inputs for inputs, _ in batches])
    targets = np.concatenate([targets for _, targets in batches])
    assert inputs.dtype == targets.dtype == np.int32 and inputs.shape == targets.shape == (120, 64)
    np.testing.assert_array_equal(inputs[:, 0], CLUSTERS)
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    np.testing.assert_array_equal(targets, _expected_tokens(shapes_dir, palette))
    assert len(np.unique(targets)) > 4  # the images use many colours of the palette


def test_masked_weights_mark_the_masked_positions(shapes_dir, palette):
    dataset, info = _load(shapes_dir, palette, objective="masked", mask_rate=0.3, seed=5)
    assert info.objective == "masked"
    batches = list(dataset.as_numpy_iterator())
    inputs, targets, weights = (np.concatenate(part) for part in zip(*batches))
    assert weights.dtype == np.float32 and set(np.unique(weights)) == {0.0, 1.0}
    masked = weights == 1
    np.testing.assert_array_equal(inputs[masked], CLUSTERS)
    np.testing.assert_array_equal(inputs[~masked], targets[~masked])
    np.testing.assert_array_equal(targets, _expected_tokens(shapes_dir, palette))
    assert 0.27 < masked.mean() < 0.33  # 7680 positions, masked with probability 0.3
    # Without shuffling every iteration gives the same masks; another seed gives others.
    np.testing.assert_array_equal(np.concatenate([w for *_, w in dataset.as_numpy_iterator()]), weights)
    other, _ = _load(shapes_dir, palette, objective="masked", mask_rate=0.3, seed=6)
    assert not np.array_equal(np.concatenate([w for *_, w in other.as_numpy_iterator()]), weights)


def test_labels_for_linear_probes_and_a_palette_file(shapes_dir, palette, tmp_path):
    path = save_palette(tmp_path / "palette.npy", palette)
    dataset, _ = _load(shapes_dir, str(path), with_labels=True, batch_size=120)
    tokens, labels = next(iter(dataset.as_numpy_iterator()))
    assert labels.dtype == np.int32 and tokens.shape == (120, 64)
    np.testing.assert_array_equal(labels, np.arange(120) % 6)  # shapes' labels cycle
    np.testing.assert_array_equal(tokens, _expected_tokens(shapes_dir, palette))


def test_shuffled_batches_are_full_and_reproducible(shapes_dir, palette):
    first, _ = _load(shapes_dir, palette, shuffle=True, seed=1)
    second, _ = _load(shapes_dir, palette, shuffle=True, seed=1)
    batches = [targets for _, targets in first.as_numpy_iterator()]
    assert [len(b) for b in batches] == [16] * 7  # the partial batch is dropped
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate([t for _, t in second.as_numpy_iterator()]))
    assert not np.array_equal(np.concatenate(batches), _expected_tokens(shapes_dir, palette)[:112])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"objective": "bert"}, r"Unknown objective='bert'. Expected one of \('causal', 'masked'\)"),
        ({"mask_rate": 0.0}, r"mask_rate must be a probability in \(0, 1\), got mask_rate=0.0"),
        ({"mask_rate": 1.5}, r"got mask_rate=1.5"),
        ({"max_tokens": 32}, r"image_size=8 gives 8 x 8 = 64 tokens.*max_tokens=32. Pass image_size <= 5"),
        ({"palette": None}, "needs a palette.*fit_dataset_palette"),
        ({"palette": np.zeros((4, 2))}, r"shape \(4, 2\), expected \(K, 3\)"),
    ],
)
def test_bad_options(shapes_dir, palette, options, message):
    options = {"palette": palette, **options}
    with pytest.raises(ValueError, match=message):
        load_pixel_dataset("shapes/small", "test", image_size=SIZE, data_dir=shapes_dir, **options)
