import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vit.data import SHAPE_NAMES
from keras_vit.data import load_detection_dataset
from keras_vit.data import render_detection_example
from keras_vit.data import tfds_detection_record

pytestmark = pytest.mark.backend_agnostic

# Pure colors of the rectangles drawn in the synthetic COCO folders; the
# category id of a rectangle is its color's index + 1.
COLORS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)])
# (height, width, rectangles as (x, y, w, h, color index)) of each image.
RECTANGLE_IMAGES = [
    (90, 150, [(10, 10, 40, 30, 0), (70, 40, 50, 35, 1), (20, 60, 25, 20, 2)]),
    (140, 100, [(5, 5, 30, 60, 3), (50, 80, 40, 50, 0), (60, 10, 30, 30, 2)]),
    (120, 120, [(0, 0, 30, 30, 1), (80, 70, 40, 50, 2)]),
]


def _rectangles_image(height, width, rectangles):
    image = np.zeros((height, width, 3), np.uint8)
    for x, y, w, h, color in rectangles:
        image[y : y + h, x : x + w] = COLORS[color]
    return image


def _write_coco(folder, split="train", images=RECTANGLE_IMAGES, annotations=None,
                categories=None, layout="coco"):
    """Writes PNGs and an instances JSON; returns the JSON's path.

    `layout` "coco": `folder/annotations/instances_<split>.json` + `folder/<split>/`;
    "flat": `folder/instances.json` next to the images.
    """
    image_dir = folder / split if layout == "coco" else folder
    json_dir = folder / "annotations" if layout == "coco" else folder
    image_dir.mkdir(parents=True, exist_ok=True)
    json_dir.mkdir(parents=True, exist_ok=True)
    entries, default_annotations = [], []
    for i, (height, width, rectangles) in enumerate(images):
        name = f"img{i}.png"
        png = tf.io.encode_png(_rectangles_image(height, width, rectangles))
        tf.io.write_file(str(image_dir / name), png)
        entries.append({"id": 100 + i, "file_name": name, "height": height, "width": width})
        for x, y, w, h, color in rectangles:
            default_annotations.append(
                {"id": len(default_annotations) + 1, "image_id": 100 + i, "category_id": int(color) + 1,
                 "bbox": [x, y, w, h], "iscrowd": 0, "area": w * h}
            )
    data = {
        "images": entries,
        "annotations": default_annotations if annotations is None else annotations,
        "categories": categories or [{"id": c + 1, "name": f"color{c}"} for c in range(len(COLORS))],
    }
    name = f"instances_{split}.json" if layout == "coco" else "instances.json"
    (json_dir / name).write_text(json.dumps(data))
    return json_dir / name


def _unpadded(x, i):
    mask = x["pixel_mask"][i].numpy()
    height, width = int(mask[:, 0].sum()), int(mask[0].sum())
    return x["images"][i].numpy()[:height, :width], height, width


def _color_mask(image, color):
    """Pixels `alpha * color` (over black) with `alpha >= 0.5`."""
    color = color.astype(np.float32)
    alpha = image @ color / (color @ color)
    residual = np.linalg.norm(image - alpha[..., None] * color, axis=-1)
    return (alpha >= 0.5) & (residual < 30)


def _xyxy(boxes):
    cx, cy, w, h = np.moveaxis(np.asarray(boxes), -1, 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def test_shapes_eval_batches(shapes_detection_data_dir):
    dataset, info = load_detection_dataset(
        "shapes_detection/small", "test", data_dir=shapes_detection_data_dir, batch_size=10, max_objects=8
    )
    assert (info.num_classes, info.class_names, info.num_examples) == (6, list(SHAPE_NAMES), 48)
    assert (info.image_size, info.max_size, info.max_objects) == (128, 128, 8)
    batches = list(dataset)
    assert [len(y["image_id"]) for _, y in batches] == [10, 10, 10, 10, 8]
    x, y = batches[1]
    assert x["images"].shape == (10, 128, 128, 3) and x["images"].dtype == tf.float32
    assert x["pixel_mask"].shape == (10, 128, 128) and np.all(x["pixel_mask"].numpy() == 1)
    assert y["boxes"].shape == (10, 8, 4) and y["boxes"].dtype == tf.float32
    assert y["labels"].dtype == tf.int32 and y["valid"].dtype == tf.float32
    assert y["image_id"].dtype == tf.int64 and y["image_size"].dtype == tf.int32
    np.testing.assert_array_equal(y["image_id"], np.arange(10, 20))
    np.testing.assert_array_equal(y["image_size"], [[128, 128]] * 10)
    for i in range(10):
        expected = render_detection_example(10 + i, "test")
        n = len(expected["objects"]["label"])
        # The eval resize keeps 128 pixels: the image is the rendered one.
        np.testing.assert_allclose(x["images"][i], expected["image"], atol=0.5)
        np.testing.assert_array_equal(y["valid"][i], [1] * n + [0] * (8 - n))
        np.testing.assert_array_equal(y["labels"][i, :n], expected["objects"]["label"])
        np.testing.assert_array_equal(y["labels"][i, n:], 0)
        ymin, xmin, ymax, xmax = expected["objects"]["bbox"].T
        expected_boxes = np.stack([xmin, ymin, xmax, ymax], axis=-1)
        np.testing.assert_allclose(_xyxy(y["boxes"][i, :n]), expected_boxes, atol=1e-6)
        np.testing.assert_array_equal(y["boxes"][i, n:], 0)


def test_label_features_combine_color_and_shape(shapes_detection_data_dir):
    dataset, info = load_detection_dataset(
        "shapes_detection/small", "test", data_dir=shapes_detection_data_dir, batch_size=16, max_objects=6,
        label_features=("color", "label"),
    )
    assert info.num_classes == 48 and info.class_names[:2] == ["red circle", "red square"]
    x, y = next(iter(dataset))
    for i in range(16):
        objects = render_detection_example(i, "test")["objects"]
        n = len(objects["label"])
        labels = y["labels"].numpy()[i, :n]
        np.testing.assert_array_equal(labels, objects["color"] * len(SHAPE_NAMES) + objects["label"])
        assert [info.class_names[label] for label in labels] == objects["caption"]
    with pytest.raises(ValueError, match=r"label_features=\('colour',\) must name ClassLabel features.*'color'"):
        load_detection_dataset("shapes_detection/small", data_dir=shapes_detection_data_dir, label_features=("colour",))


def test_shapes_train_batches_are_seeded_and_augmented(shapes_detection_data_dir):
    def first(seed):
        dataset, _ = load_detection_dataset(
            "shapes_detection/small", data_dir=shapes_detection_data_dir, training=True, seed=seed, batch_size=4
        )
        return next(iter(dataset))

    (x, y), (x_again, y_again), (x_other, _) = first(0), first(0), first(1)
    np.testing.assert_array_equal(x["images"], x_again["images"])
    np.testing.assert_array_equal(y["boxes"], y_again["boxes"])
    assert x["images"].shape != x_other["images"].shape or not np.array_equal(x["images"], x_other["images"])
    # Shuffled, and resized to DETR's scales times 128 / 800 (77 to 128).
    assert not np.array_equal(y["image_id"], np.arange(4))
    sides = [min(_unpadded(x, i)[1:]) for i in range(4)]
    assert all(77 <= side <= 128 for side in sides)
    boxes = y["boxes"].numpy()[y["valid"].numpy() == 1]
    assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2:] > 0)


def test_augmented_boxes_cover_their_objects(tmp_path):
    _write_coco(tmp_path)
    dataset, info = load_detection_dataset(
        str(tmp_path), "train", training=True, image_size=64, batch_size=1, crop_probability=0.7, seed=3
    )
    assert info.max_size == round(64 * 1333 / 800)
    checked, cropped, sides = 0, 0, set()
    for _ in range(6):  # Each pass draws new augmentations.
        for x, y in dataset:
            image, height, width = _unpadded(x, 0)
            sides.add(min(height, width))
            # Pixels at least half covered by each color, over black.
            masks = {c + 1: _color_mask(image, color) for c, color in enumerate(COLORS)}
            valid = y["valid"].numpy()[0] == 1
            labels = y["labels"].numpy()[0][valid]
            boxes = _xyxy(y["boxes"].numpy()[0][valid]) * [width, height, width, height]
            source = RECTANGLE_IMAGES[int(y["image_id"][0]) - 100]
            cropped += len(labels) < len(source[2])
            for label, (x1, y1, x2, y2) in zip(labels, boxes):
                if x2 - x1 < 2 or y2 - y1 < 2:
                    continue  # A sliver cut by the crop, too thin to see.
                rows = np.flatnonzero(masks[label].any(axis=1))
                cols = np.flatnonzero(masks[label].any(axis=0))
                extent = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
                np.testing.assert_allclose(extent, [x1, y1, x2, y2], atol=1.5)
                checked += 1
            # Every rectangle still visible has its box.
            visible = {c for c, mask in masks.items() if mask.sum() >= 6}
            assert visible <= set(labels.tolist())
    assert checked > 30 and cropped > 0
    assert len(sides) > 3 and all(38 <= side <= 64 for side in sides)


def test_random_flip_mirrors_images_and_boxes(tmp_path):
    _write_coco(tmp_path, images=RECTANGLE_IMAGES[:1])
    dataset, _ = load_detection_dataset(
        str(tmp_path), training=True, image_size=90, max_size=150, scales=[90], crop_probability=0,
        batch_size=1,
    )
    original = _rectangles_image(*RECTANGLE_IMAGES[0][:2], RECTANGLE_IMAGES[0][2]).astype(np.float32)
    red_centers = set()
    for _ in range(8):
        x, y = next(iter(dataset))
        image = x["images"][0].numpy()
        red_x = float(y["boxes"][0, 0, 0])  # The first box is the red one.
        red_centers.add(round(red_x, 4))
        mirrored = red_x > 0.5
        np.testing.assert_allclose(image, original[:, ::-1] if mirrored else original, atol=1e-3)
    assert red_centers == {round(30 / 150, 4), round(1 - 30 / 150, 4)}


def test_padding_and_pixel_mask(tmp_path):
    images = [(40, 60, [(0, 0, 60, 40, 0)]), (64, 48, [(8, 8, 16, 16, 1)])]
    _write_coco(tmp_path, images=images)
    # Shorter side 32: 40x60 -> 32x48, 64x48 -> 42x32 (DETR rounds down).
    dataset, _ = load_detection_dataset(str(tmp_path), image_size=32, max_size=64, batch_size=2)
    x, y = next(iter(dataset))
    assert x["images"].shape == (2, 42, 48, 3)
    mask = x["pixel_mask"].numpy()
    expected = np.zeros((2, 42, 48))
    expected[0, :32, :48] = 1
    expected[1, :42, :32] = 1
    np.testing.assert_array_equal(mask, expected)
    images = x["images"].numpy()
    assert np.all(images[mask == 0] == 0)
    np.testing.assert_allclose(images[0][mask[0] == 1], [[255, 0, 0]] * 32 * 48, atol=1e-3)
    np.testing.assert_array_equal(y["image_size"], [[40, 60], [64, 48]])
    # Boxes are normalized by the unpadded image: the full-image red box.
    np.testing.assert_allclose(y["boxes"][0, 0], [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(y["boxes"][1, 0], [16 / 48, 16 / 64, 16 / 48, 16 / 64])
    # A fixed pad size, for static shapes.
    dataset, _ = load_detection_dataset(
        str(tmp_path), image_size=32, max_size=64, batch_size=2, pad_to=64, max_objects=3
    )
    x, y = next(iter(dataset))
    assert x["images"].shape == (2, 64, 64, 3) and y["boxes"].shape == (2, 3, 4)
    np.testing.assert_array_equal(x["pixel_mask"].numpy()[:, :42, :48], mask)
    assert x["pixel_mask"].numpy().sum() == mask.sum()
    # The longer side is capped at max_size (DETR's rounding would give 65).
    _write_coco(tmp_path / "wide", images=[(20, 100, [(0, 0, 10, 10, 0)])])
    dataset, _ = load_detection_dataset(str(tmp_path / "wide"), image_size=32, max_size=64, batch_size=1)
    x, _ = next(iter(dataset))
    assert x["images"].shape == (1, 13, 64, 3)


def test_coco_folder_reading(tmp_path):
    annotations = [
        {"id": 1, "image_id": 100, "category_id": 1, "bbox": [10, 10, 40, 30], "iscrowd": 0},
        {"id": 2, "image_id": 100, "category_id": 3, "bbox": [70, 40, 50, 35]},
        {"id": 3, "image_id": 100, "category_id": 1, "bbox": [0, 0, 150, 90], "iscrowd": 1},
        {"id": 4, "image_id": 100, "category_id": 3, "bbox": [5, 5, 0, 10], "iscrowd": 0},
        {"id": 5, "image_id": 101, "category_id": 3, "bbox": [0, 0, 100.5, 140], "iscrowd": 0},
    ]
    categories = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]
    json_path = _write_coco(tmp_path, "val2017", annotations=annotations, categories=categories)
    # "validation" finds COCO's own val2017 names; the JSON's path reads the same.
    for name, split in [(str(tmp_path), "validation"), (str(json_path), "train")]:
        dataset, info = load_detection_dataset(name, split, image_size=90, max_size=150, batch_size=3)
        assert info.class_names == ["N/A", "cat", "N/A", "dog"] and info.num_classes == 4
        assert info.num_examples == 3
        x, y = next(iter(dataset))
        np.testing.assert_array_equal(y["image_id"], [100, 101, 102])
        np.testing.assert_array_equal(y["image_size"], [[90, 150], [140, 100], [120, 120]])
        # Crowd and zero-width boxes are left out; an image without boxes stays.
        np.testing.assert_array_equal(y["valid"].numpy().sum(axis=1), [2, 1, 0])
        np.testing.assert_array_equal(y["labels"][0, :2], [1, 3])
        expected = [[10 / 150, 10 / 90, 50 / 150, 40 / 90], [70 / 150, 40 / 90, 120 / 150, 75 / 90]]
        np.testing.assert_allclose(_xyxy(y["boxes"][0, :2]), expected, atol=1e-6)
        # Half a pixel past the border is clipped to it.
        np.testing.assert_allclose(_xyxy(y["boxes"][1, 0]), [0, 0, 1, 1])
    # Images next to the JSON.
    json_path = _write_coco(tmp_path / "flat", layout="flat")
    dataset, info = load_detection_dataset(str(json_path), image_size=64, batch_size=3)
    x, y = next(iter(dataset))
    assert info.num_classes == 5 and x["images"].shape[0] == 3
    np.testing.assert_array_equal(y["valid"].numpy().sum(axis=1), [3, 3, 2])


class FakeCocoDetection(tfds.core.GeneratorBasedBuilder):
    """Two images with coco/2017's features (80 labels, crowd flags, ids)."""

    VERSION = tfds.core.Version("1.0.0")
    url_infos = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "image/filename": tfds.features.Text(),
                    "image/id": np.int64,
                    "objects": tfds.features.Sequence(
                        {
                            "area": np.int64,
                            "bbox": tfds.features.BBoxFeature(),
                            "id": np.int64,
                            "is_crowd": np.bool_,
                            "label": tfds.features.ClassLabel(num_classes=80),
                        }
                    ),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"validation": self._generate_examples()}

    def _generate_examples(self):
        for i, (height, width, rectangles) in enumerate(RECTANGLE_IMAGES[:2]):
            boxes = [
                tfds.features.BBox(y / height, x / width, (y + h) / height, (x + w) / width)
                for x, y, w, h, _ in rectangles
            ]
            yield i, {
                "image": _rectangles_image(height, width, rectangles),
                "image/filename": f"{i}.png",
                "image/id": 500 + i,
                "objects": {
                    "area": [w * h for _, _, w, h, _ in rectangles],
                    "bbox": boxes,
                    "id": list(range(len(rectangles))),
                    "is_crowd": [j == 1 for j in range(len(rectangles))],
                    "label": [70 + c for *_, c in rectangles],
                },
            }


def test_an_unchanged_annotation_file_is_read_once(tmp_path):
    from keras_vit.data import read_coco_annotations

    json_path = _write_coco(tmp_path, "train2017")
    first = read_coco_annotations(str(json_path), str(tmp_path / "train2017"), 10)
    assert read_coco_annotations(str(json_path), str(tmp_path / "train2017"), 10) is first
    data = json.loads(json_path.read_text())
    data["annotations"] = data["annotations"][:1]
    json_path.write_text(json.dumps(data))
    changed = read_coco_annotations(str(json_path), str(tmp_path / "train2017"), 10)
    assert changed is not first and sum(len(labels) for labels in changed.labels) == 1


def test_tfds_coco_features(tmp_path, no_network):
    FakeCocoDetection(data_dir=str(tmp_path)).download_and_prepare()
    dataset, info = load_detection_dataset(
        "fake_coco_detection", "validation", data_dir=str(tmp_path), image_size=90, max_size=150, batch_size=2
    )
    assert info.num_classes == 80 and info.num_examples == 2
    x, y = next(iter(dataset))
    np.testing.assert_array_equal(y["image_id"], [500, 501])
    np.testing.assert_array_equal(y["image_size"], [[90, 150], [140, 100]])
    # The crowd box (the second of each image) is dropped.
    np.testing.assert_array_equal(y["valid"].numpy().sum(axis=1), [2, 2])
    np.testing.assert_array_equal(y["labels"][:, :2], [[70, 72], [73, 72]])
    expected = [[10 / 150, 10 / 90, 50 / 150, 40 / 90], [20 / 150, 60 / 90, 45 / 150, 80 / 90]]
    np.testing.assert_allclose(_xyxy(y["boxes"][0, :2]), expected, atol=1e-6)
    # More boxes than max_objects is found while reading (TFDS has no
    # per-image index to check first).
    dataset, _ = load_detection_dataset(
        "fake_coco_detection", "validation", data_dir=str(tmp_path), max_objects=1, batch_size=2
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_objects=1: raise max_objects"):
        next(iter(dataset))
    # The mapping by itself, on a coco-like example.
    example = {
        "image": tf.zeros((4, 6, 3), tf.uint8),
        "image/id": tf.constant(7, tf.int64),
        "objects": {
            "bbox": tf.constant([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 1.0]]),
            "label": tf.constant([5, 9], tf.int64),
            "is_crowd": tf.constant([False, True]),
        },
    }
    record = tfds_detection_record(example)
    np.testing.assert_allclose(record["boxes"], [[0.2, 0.1, 0.4, 0.3]])
    assert record["labels"].dtype == tf.int32 and record["labels"].numpy().tolist() == [5]
    assert int(record["image_id"]) == 7
    del example["image/id"]
    assert int(tfds_detection_record(example, index=3)["image_id"]) == 3


# Bad input: each is refused before any batch, with the value and the fix.


def _annotation(bbox, category_id=1, image_id=100):
    return {"id": 9, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0}


BAD_ANNOTATIONS = [
    ([_annotation([100, 10, 60, 20])], r"bbox=\[100, 10, 60, 20\].*x2=160.*outside the image"),
    ([_annotation([-5, 10, 20, 20])], r"outside the image"),
    ([_annotation([50, 10, -20, 20])], r"negative width or height \(x2 < x1.*not \[x1, y1, x2, y2\]"),
    ([_annotation([5, 10, 20, 20], category_id=7)], r"category_id=7.*ids \[1, 2, 3, 4\].*Add the category"),
    ([_annotation([5, 10, 20, 20], image_id=5)], r"image_id=5, which is not in 'images'"),
    ([_annotation([5, 10, 20])], r"COCO boxes are 4 numbers \[x, y, width, height\]"),
    ([], r"has no 'annotations' \(an empty annotation file\?\)"),
]


def test_bad_annotations(tmp_path):
    for i, (annotations, message) in enumerate(BAD_ANNOTATIONS):
        _write_coco(tmp_path / str(i), annotations=annotations, images=RECTANGLE_IMAGES[:1])
        with pytest.raises(ValueError, match=message):
            load_detection_dataset(str(tmp_path / str(i)))
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match=r"has no 'images' \(an empty annotation file\?\)"):
        load_detection_dataset(str(json_path))


def test_too_many_objects_or_classes(tmp_path, shapes_detection_data_dir):
    _write_coco(tmp_path)
    message = r"img0.png' \(id 100\).*3 boxes.*max_objects=2.*Raise max_objects to at least 3"
    with pytest.raises(ValueError, match=message):
        load_detection_dataset(str(tmp_path), max_objects=2)
    with pytest.raises(ValueError, match=r"label_features=\('color',\) needs a TFDS dataset.*category ids"):
        load_detection_dataset(str(tmp_path), label_features="color")
    with pytest.raises(ValueError, match=r"up to 6 objects, more than max_objects=5"):
        load_detection_dataset("shapes_detection/small", data_dir=shapes_detection_data_dir, max_objects=5)
    with pytest.raises(ValueError, match=r"labels up to 4 \(5 classes\).*num_classes=4.*classes=5"):
        load_detection_dataset(str(tmp_path), num_classes=4)


def test_missing_image_and_wrong_size(tmp_path):
    _write_coco(tmp_path)
    (tmp_path / "train" / "img1.png").unlink()
    with pytest.raises(ValueError, match=r"1 of the 3 images .* missing from .*img1.png"):
        load_detection_dataset(str(tmp_path))
    _write_coco(tmp_path)
    data = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    data["images"][0]["width"] = 151
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(data))
    dataset, _ = load_detection_dataset(str(tmp_path), batch_size=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="fix its height and width there"):
        next(iter(dataset))


def test_bad_names_and_options(tmp_path, no_network):
    message = r"Unknown dataset 'shapes_detectoin'.*Did you mean \['shapes_detection'"
    with pytest.raises(ValueError, match=message):
        load_detection_dataset("shapes_detectoin")
    with pytest.raises(ValueError, match=r"'nothere.json' does not exist"):
        load_detection_dataset("nothere.json")
    with pytest.raises(ValueError, match=r"'coco/2017' is not prepared in .*never downloads"):
        load_detection_dataset("coco/2017", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"'mnist' is not an object detection dataset"):
        load_detection_dataset("mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"no annotations for split 'train'.*instances_train2017.json"):
        load_detection_dataset(str(tmp_path))
    with pytest.raises(ValueError, match=r"pad_to=\(100, 100\) cannot hold.*max_size=128"):
        load_detection_dataset("shapes_detection", pad_to=100)
    with pytest.raises(ValueError, match=r"max_objects must be an int >= 1, got max_objects=0"):
        load_detection_dataset("shapes_detection", max_objects=0)
