import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_vit.data import COLOR_NAMES
from keras_vit.data import SHAPE_NAMES
from keras_vit.data import Shapes
from keras_vit.data import render_example
from keras_vit.data import shapes

pytestmark = pytest.mark.backend_agnostic


def test_render_example_is_deterministic():
    first, again = render_example(7), render_example(7)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["image"], render_example(8)["image"])
    assert not np.array_equal(
        first["image"], render_example(7, split="test")["image"]
    )


def test_render_example_fields():
    for index in range(60):
        example = render_example(index)
        assert example["image"].shape == (64, 64, 3)
        assert example["image"].dtype == np.uint8
        assert example["label"] == index % len(SHAPE_NAMES)
        color = COLOR_NAMES[example["color"]]
        shape = SHAPE_NAMES[example["label"]]
        assert example["caption"] == f"{color} {shape}"
        # The box side is 35%-75% of the image, and the shape is whole even
        # after the default eval center crop (4 pixels off each border).
        ymin, xmin, ymax, xmax = example["bbox"] * 64
        assert 4 <= ymin < ymax <= 60 and 4 <= xmin < xmax <= 60
        assert 0.32 * 64 <= max(ymax - ymin, xmax - xmin) <= 0.78 * 64


def test_shape_contrasts_with_background():
    luma = np.array([0.299, 0.587, 0.114])
    for index in range(60):
        example = render_example(index)
        image = example["image"].astype(np.float64)
        color = np.array(shapes.PALETTE[COLOR_NAMES[example["color"]]])
        ymin, xmin, ymax, xmax = np.round(example["bbox"] * 64).astype(int)
        outside = np.ones((64, 64), bool)
        outside[ymin - 1 : ymax + 1, xmin - 1 : xmax + 1] = False
        contrast = np.abs(image[outside] @ luma - color @ luma)
        assert np.percentile(contrast, 5) >= 60
        # Fully covered pixels have exactly the palette color.
        assert np.all(image == color, axis=-1).sum() > 50


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_bbox_is_tight(shape):
    background = np.zeros((64, 64, 3))
    image, bbox = shapes.render_shape(
        shape, "white", background, center=(30.3, 35.6), radius=17.2, angle=0.4
    )
    rows = np.flatnonzero(image.any(axis=(1, 2)))
    cols = np.flatnonzero(image.any(axis=(0, 2)))
    drawn = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
    np.testing.assert_allclose(bbox * 64, drawn, atol=1)


def test_builder_configs():
    default, small = Shapes.BUILDER_CONFIGS
    assert (default.train_examples, default.test_examples) == (6000, 1200)
    assert (small.train_examples, small.test_examples) == (600, 120)


def test_tfds_load_is_offline_and_complete(tmp_path, no_network):
    splits, info = tfds.load("shapes", data_dir=tmp_path, with_info=True)
    assert info.splits["train"].num_examples == Shapes.TRAIN_EXAMPLES
    assert info.splits["test"].num_examples == Shapes.TEST_EXAMPLES
    assert info.supervised_keys == ("image", "label")
    features = info.features
    assert features["image"].shape == (64, 64, 3)
    assert features["label"].names == list(SHAPE_NAMES)
    assert features["color"].names == list(COLOR_NAMES)
    assert isinstance(features["bbox"], tfds.features.BBoxFeature)
    # The dataset is ordered: record i is render_example(i).
    record = next(iter(tfds.as_numpy(splits["test"].skip(3))))
    expected = render_example(3, split="test")
    np.testing.assert_array_equal(record["image"], expected["image"])
    np.testing.assert_allclose(record["bbox"], expected["bbox"])
    assert record["caption"].decode() == expected["caption"]
    assert record["color"] == expected["color"]


def test_small_config(shapes_dir):
    builder = tfds.builder("shapes/small", data_dir=shapes_dir)
    assert builder.info.splits["train"].num_examples == 600
    assert builder.info.splits["test"].num_examples == 120
    labels = [
        label
        for _, label in tfds.as_numpy(
            builder.as_dataset(split="train", as_supervised=True)
        )
    ]
    np.testing.assert_array_equal(np.bincount(labels), [100] * 6)
