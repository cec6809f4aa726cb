import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_vit.data import COLOR_NAMES
from keras_vit.data import SHAPE_NAMES
from keras_vit.data import ShapesDetection
from keras_vit.data import render_detection_example
from keras_vit.data import shapes
from keras_vit.data import shapes_detection

pytestmark = pytest.mark.backend_agnostic

SIZE = shapes_detection.IMAGE_SIZE


def _drawn_extent(before, after):
    """`(ymin, xmin, ymax, xmax)` in pixels of the pixels that differ."""
    changed = np.any(before != after, axis=-1)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])


def test_render_is_deterministic():
    first, again = render_detection_example(5), render_detection_example(5)
    np.testing.assert_array_equal(first["image"], again["image"])
    for key in ("bbox", "label", "color"):
        np.testing.assert_array_equal(first["objects"][key], again["objects"][key])
    assert first["objects"]["caption"] == again["objects"]["caption"]
    assert not np.array_equal(first["image"], render_detection_example(6)["image"])
    assert not np.array_equal(first["image"], render_detection_example(5, "test")["image"])


def test_fields_counts_and_sizes():
    counts, sides = [], []
    for index in range(60):
        example = render_detection_example(index)
        objects = example["objects"]
        assert example["image"].shape == (SIZE, SIZE, 3) and example["image"].dtype == np.uint8
        assert example["image_id"] == index
        n = len(objects["label"])
        assert objects["bbox"].shape == (n, 4) and objects["bbox"].dtype == np.float32
        assert objects["color"].shape == (n,) and len(objects["caption"]) == n
        for label, color, caption in zip(objects["label"], objects["color"], objects["caption"]):
            assert caption == f"{COLOR_NAMES[color]} {SHAPE_NAMES[label]}"
        ymin, xmin, ymax, xmax = objects["bbox"].T * SIZE
        # Inside the image, 2 pixels off the border, 11-70 pixels on the longer side.
        assert np.all((ymin >= 1) & (xmin >= 1) & (ymax <= SIZE - 1) & (xmax <= SIZE - 1))
        longer = np.maximum(ymax - ymin, xmax - xmin)
        assert np.all((longer >= 9) & (longer <= 72))
        counts.append(n)
        sides += list(np.sqrt((ymax - ymin) * (xmax - xmin)))
    assert set(counts) == set(range(1, 7))
    sides = np.array(sides)
    # COCO's small (< 32^2 pixels) and medium areas are both frequent.
    assert 0.3 < np.mean(sides < 32) < 0.8


def test_boxes_are_the_full_extent_of_each_drawn_shape():
    for index in range(8):
        background, objects = shapes_detection.sample_scene(index)
        image, boxes = shapes_detection.render_scene(background, objects)
        np.testing.assert_array_equal(image, render_detection_example(index)["image"])
        before, _ = shapes_detection.render_scene(background, [])
        for j, spec in enumerate(objects):
            after, _ = shapes_detection.render_scene(background, objects[: j + 1])
            # Pixels touched by the shape, anti-aliased edges included, span
            # the box (pixels covered by half or more) and at most 2 more
            # pixels (the thin tip of a star).
            extent = _drawn_extent(before, after)
            box = np.round(boxes[j] * SIZE).astype(int)
            assert np.all(extent[:2] <= box[:2]) and np.all(extent[2:] >= box[2:])
            assert np.all(box[:2] - extent[:2] <= 2) and np.all(extent[2:] - box[2:] <= 2)
            # Fully covered pixels have the shape's palette color.
            color = np.array(shapes.PALETTE[spec["color"]])
            assert np.all(after[spec["coverage"] == 1] == color)
            before = after


def test_each_shape_stays_half_visible_and_apart_from_its_color():
    for index in range(30):
        background, objects = shapes_detection.sample_scene(index)
        image, boxes = shapes_detection.render_scene(background, objects)
        for j, spec in enumerate(objects):
            palette = np.array(shapes.PALETTE[spec["color"]])
            covered = spec["coverage"] == 1
            assert np.mean(np.all(image[covered] == palette, axis=-1)) >= 0.45
            for k in range(j):
                if objects[k]["color"] == spec["color"]:
                    a, b = boxes[j] * SIZE, boxes[k] * SIZE
                    assert not (np.all(a[:2] < b[2:]) and np.all(b[:2] < a[2:]))


def test_builder_configs():
    default, small = ShapesDetection.BUILDER_CONFIGS
    assert (default.train_examples, default.test_examples) == (6000, 1200)
    assert (small.train_examples, small.test_examples) == (240, 48)


def test_tfds_prepare_is_offline_and_ordered(tmp_path, no_network):
    config = shapes_detection.ShapesDetectionConfig(name="tiny", train_examples=4, test_examples=3)
    builder = ShapesDetection(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare()
    info = builder.info
    assert info.splits["train"].num_examples == 4 and info.splits["test"].num_examples == 3
    features = info.features
    assert features["image"].shape == (SIZE, SIZE, 3)
    assert isinstance(features["objects"]["bbox"], tfds.features.BBoxFeature)
    assert features["objects"]["label"].names == list(SHAPE_NAMES)
    assert features["objects"]["color"].names == list(COLOR_NAMES)
    records = list(tfds.as_numpy(builder.as_dataset(split="test")))
    for index, record in enumerate(records):
        expected = render_detection_example(index, "test")
        assert record["image_id"] == index
        np.testing.assert_array_equal(record["image"], expected["image"])
        np.testing.assert_allclose(record["objects"]["bbox"], expected["objects"]["bbox"])
        np.testing.assert_array_equal(record["objects"]["label"], expected["objects"]["label"])
        np.testing.assert_array_equal(record["objects"]["color"], expected["objects"]["color"])
        assert [c.decode() for c in record["objects"]["caption"]] == expected["objects"]["caption"]


def test_unknown_split():
    with pytest.raises(ValueError, match="Unknown split 'validation'.*'test', 'train'"):
        render_detection_example(0, "validation")
