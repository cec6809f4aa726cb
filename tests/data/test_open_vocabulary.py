"""OWL-ViT's open-vocabulary batches and CLIP's caption batches on the small offline datasets."""

import collections
import json

import numpy as np
import pytest
import tensorflow as tf

from keras_vit.data.tokenizer import CLIPTokenizer, train_clip_tokenizer
from keras_vit.data import COLOR_NAMES
from keras_vit.data import DEFAULT_UNSEEN
from keras_vit.data import SHAPE_NAMES
from keras_vit.data import SHAPES_CATEGORIES
from keras_vit.data import load_caption_dataset
from keras_vit.data import load_open_vocabulary_dataset
from keras_vit.data import render_detection_example
from keras_vit.data import render_example

pytestmark = pytest.mark.backend_agnostic

SIZE = 128
SMALL = "shapes_detection/small"  # 240 train, 48 test images
SEEN = [c for c in SHAPES_CATEGORIES if c not in DEFAULT_UNSEEN]


@pytest.fixture(autouse=True)
def _seed_and_reset():
    """Overrides conftest's per-test Keras reset: these tests build no Keras state."""
    yield


@pytest.fixture(scope="module")
def tokenizer():
    return train_clip_tokenizer(list(SHAPES_CATEGORIES))


def _load(tokenizer, shapes_detection_data_dir, split="test", **options):
    return load_open_vocabulary_dataset(split, tokenizer=tokenizer, name=SMALL, data_dir=shapes_detection_data_dir, **options)


def _xyxy(boxes):
    cx, cy, w, h = np.moveaxis(np.asarray(boxes), -1, 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def _truth(image_id, split, keep=lambda caption: True):
    """Image and `[(caption, (x1, y1, x2, y2))]` of the kept objects of a rendered example."""
    example = render_detection_example(int(image_id), split)
    objects = example["objects"]
    ymin, xmin, ymax, xmax = objects["bbox"].T
    boxes = np.stack([xmin, ymin, xmax, ymax], axis=-1)
    return example["image"].astype(np.float32), [(c, b) for c, b in zip(objects["caption"], boxes) if keep(c)]


def _objects(tokenizer, x, y, i):
    """`[(caption, (x1, y1, x2, y2))]` of image `i` of a batch, the caption decoded from its query."""
    valid = y["valid"].numpy()[i] == 1
    np.testing.assert_array_equal(valid, np.sort(valid)[::-1])  # Padding comes last.
    queries = tokenizer.decode(x["input_ids"][i].numpy())
    return [(queries[label], box) for label, box in zip(y["labels"].numpy()[i][valid], _xyxy(y["boxes"].numpy()[i][valid]))]


def _assert_same_objects(actual, expected):
    assert sorted(c for c, _ in actual) == sorted(c for c, _ in expected)
    for caption, box in actual:
        assert any(c == caption and np.allclose(box, b, atol=1e-6) for c, b in expected), (caption, box, expected)


def test_categories_and_default_unseen():
    assert len(SHAPES_CATEGORIES) == 48 and len(set(SHAPES_CATEGORIES)) == 48
    for color_index, color in enumerate(COLOR_NAMES):  # Color-major.
        for shape_index, shape in enumerate(SHAPE_NAMES):
            assert SHAPES_CATEGORIES[color_index * len(SHAPE_NAMES) + shape_index] == f"{color} {shape}"
    colors, shapes = zip(*(category.split(" ") for category in DEFAULT_UNSEEN))
    assert sorted(shapes) == sorted(SHAPE_NAMES) and len(set(colors)) == 6
    seen_colors, seen_shapes = zip(*(category.split(" ") for category in SEEN))
    assert set(colors) <= set(seen_colors) and set(shapes) <= set(seen_shapes)


def test_evaluation_batches_query_all_categories(tokenizer, shapes_detection_data_dir):
    dataset, info = _load(tokenizer, shapes_detection_data_dir, batch_size=10)
    assert info.query_names == list(SHAPES_CATEGORIES) and info.unseen_names == list(DEFAULT_UNSEEN)
    assert info.seen_names == SEEN and [info.query_names[i] for i in info.unseen_queries] == list(DEFAULT_UNSEEN)
    assert (info.num_examples, info.image_size, info.max_objects) == (48, SIZE, 6)
    batches = list(dataset)
    assert [len(x["images"]) for x, _ in batches] == [10, 10, 10, 10, 8]
    x, y = batches[0]
    assert x["images"].shape == (10, SIZE, SIZE, 3) and x["images"].dtype == tf.float32
    for key in ("input_ids", "attention_mask"):
        assert x[key].shape == (10, 48, 16) and x[key].dtype == tf.int32
        np.testing.assert_array_equal(x[key].numpy(), np.broadcast_to(x[key][0], x[key].shape))
    assert tokenizer.decode(x["input_ids"][0].numpy()) == list(SHAPES_CATEGORIES)
    assert y["boxes"].shape == (10, 6, 4) and y["boxes"].dtype == tf.float32
    assert y["labels"].dtype == tf.int32 and y["valid"].dtype == tf.float32
    unseen_objects = 0
    for x, y in batches:
        for i, image_id in enumerate(y["image_id"].numpy()):
            image, expected = _truth(image_id, "test")
            np.testing.assert_allclose(x["images"][i], image, atol=0.5)
            _assert_same_objects(_objects(tokenizer, x, y, i), expected)
            unseen_objects += sum(c in DEFAULT_UNSEEN for c, _ in expected)
    assert unseen_objects > 5


def test_training_batches_leave_unseen_out_and_flip_boxes_with_images(tokenizer, shapes_detection_data_dir):
    dataset, info = _load(tokenizer, shapes_detection_data_dir, "train", training=True, batch_size=16)
    assert info.query_names == SEEN and info.num_examples == 240
    assert not set(info.query_names) & set(DEFAULT_UNSEEN)
    flips, dropped, checked = collections.Counter(), 0, 0
    for x, y in dataset:
        assert x["images"].shape == (16, SIZE, SIZE, 3) and x["input_ids"].shape == (16, 42, 16)
        assert tokenizer.decode(x["input_ids"][0].numpy()) == SEEN
        for i, image_id in enumerate(y["image_id"].numpy()):
            image, every = _truth(image_id, "train")
            expected = [(c, b) for c, b in every if c not in DEFAULT_UNSEEN]
            dropped += len(every) - len(expected)
            augmented = x["images"][i].numpy()
            flipped = not np.allclose(augmented, image, atol=0.5)
            flips[flipped] += 1
            if flipped:
                np.testing.assert_allclose(augmented, image[:, ::-1], atol=0.5)
                expected = [(c, np.array([1 - b[2], b[1], 1 - b[0], b[3]])) for c, b in expected]
                image = image[:, ::-1]
            actual = _objects(tokenizer, x, y, i)
            _assert_same_objects(actual, expected)
            for _, box in actual:  # The box frames the same pixels as before the flip.
                x1, y1, x2, y2 = np.round(box * SIZE).astype(int)
                np.testing.assert_allclose(augmented[y1:y2, x1:x2].mean((0, 1)), image[y1:y2, x1:x2].mean((0, 1)), atol=0.5)
                checked += 1
    assert flips[True] > 50 and flips[False] > 50 and dropped > 20 and checked > 600
    assert sum(flips.values()) == 240  # drop_remainder: 15 full batches.
    first, second = (next(iter(dataset))[1]["image_id"].numpy() for _ in range(2))
    assert not np.array_equal(first, second)  # Each pass reshuffles.


def test_training_is_seeded(tokenizer, shapes_detection_data_dir):
    def first(seed):
        x, y = next(iter(_load(tokenizer, shapes_detection_data_dir, "train", training=True, batch_size=8, seed=seed)[0]))
        return x["images"].numpy(), y["image_id"].numpy()

    (images, ids), (images_again, ids_again), (_, other_ids) = first(3), first(3), first(4)
    np.testing.assert_array_equal(images, images_again)
    np.testing.assert_array_equal(ids, ids_again)
    assert not np.array_equal(ids, other_ids)


def test_query_options(tokenizer, shapes_detection_data_dir):
    # Training on every category labels the unseen objects too.
    dataset, info = _load(tokenizer, shapes_detection_data_dir, "train", training=True, queries="all", batch_size=8)
    x, y = next(iter(dataset))
    assert info.query_names == list(SHAPES_CATEGORIES) and x["input_ids"].shape == (8, 48, 16)
    for i, image_id in enumerate(y["image_id"].numpy()):
        assert len(_objects(tokenizer, x, y, i)) == len(_truth(image_id, "train")[1])
    # Evaluating on the seen ones only, or on a few categories: the other objects are left out.
    for categories, unseen, queries in [(SHAPES_CATEGORIES, DEFAULT_UNSEEN, "seen"), (SHAPES_CATEGORIES[:12], (), None)]:
        dataset, info = _load(tokenizer, shapes_detection_data_dir, categories=categories, unseen=unseen, queries=queries)
        kept = [c for c in categories if c not in unseen]
        x, y = next(iter(dataset))
        assert info.query_names == kept and tokenizer.decode(x["input_ids"][0].numpy()) == kept
        for i, image_id in enumerate(y["image_id"].numpy()):
            _assert_same_objects(_objects(tokenizer, x, y, i), _truth(image_id, "test", keep=kept.__contains__)[1])


def test_caption_batches_match_their_images(tokenizer, shapes_data_dir):
    dataset, info = load_caption_dataset("test", tokenizer=tokenizer, name="shapes/small", data_dir=shapes_data_dir,
                                         batch_size=50)
    assert info.captions == list(SHAPES_CATEGORIES) and (info.num_examples, info.image_size) == (120, SIZE)
    assert info.sequence_length == 16
    index = 0
    for x in dataset:
        assert x["images"].dtype == tf.float32 and x["images"].shape[1:] == (SIZE, SIZE, 3)
        assert x["input_ids"].shape[1:] == (16,) and x["input_ids"].dtype == x["attention_mask"].dtype == tf.int32
        np.testing.assert_array_equal(x["attention_mask"], tokenizer(tokenizer.decode(x["input_ids"].numpy()))["attention_mask"])
        for i, caption in enumerate(tokenizer.decode(x["input_ids"].numpy())):  # Eval batches keep the index order.
            example = render_example(index, "test")
            assert caption == example["caption"] == f"{COLOR_NAMES[example['color']]} {SHAPE_NAMES[example['label']]}"
            resized = tf.image.resize(example["image"], (SIZE, SIZE), antialias=True).numpy()
            np.testing.assert_allclose(x["images"][i], np.clip(resized, 0, 255), atol=1e-3)
            index += 1
    assert index == 120
    # Training: shuffled and flipped, every caption still its image's (found by its mean color).
    options = dict(tokenizer=tokenizer, name="shapes/small", data_dir=shapes_data_dir)
    originals = [(image, caption) for x in load_caption_dataset(**options, batch_size=100)[0]
                 for image, caption in zip(x["images"].numpy(), tokenizer.decode(x["input_ids"].numpy()))]
    means = np.array([image.mean(axis=(0, 1)) for image, _ in originals])
    flips, captions = collections.Counter(), collections.Counter()
    for x in load_caption_dataset(**options, training=True, batch_size=32)[0]:
        assert x["images"].shape == (32, SIZE, SIZE, 3) and x["input_ids"].shape == (32, 16)
        for image, caption in zip(x["images"].numpy(), tokenizer.decode(x["input_ids"].numpy())):
            original, original_caption = originals[np.abs(means - image.mean(axis=(0, 1))).sum(axis=1).argmin()]
            assert caption == original_caption
            flipped = not np.allclose(image, original, atol=1e-2)
            if flipped:
                np.testing.assert_allclose(image, original[:, ::-1], atol=1e-2)
            flips[flipped] += 1
            captions[caption] += 1
    assert flips[True] > 200 and flips[False] > 200
    assert sum(captions.values()) == 576 and set(captions) == set(SHAPES_CATEGORIES)  # Unseen ones included.


# Non-square images of rectangles (x, y, w, h, category id) for a COCO folder.
RECTANGLES = [(90, 150, [(10, 10, 40, 30, 1), (70, 40, 50, 35, 2), (20, 60, 25, 20, 3)]),
              (140, 100, [(5, 5, 30, 60, 3), (50, 80, 40, 50, 1)])]


def _write_coco(folder):
    (folder / "annotations").mkdir()
    (folder / "train").mkdir()
    images, annotations = [], []
    for i, (height, width, rectangles) in enumerate(RECTANGLES):
        image = np.zeros((height, width, 3), np.uint8)
        for x, y, w, h, category in rectangles:
            image[y:y + h, x:x + w] = 80 * category
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": category, "bbox": [x, y, w, h],
                                "iscrowd": 0})
        tf.io.write_file(str(folder / "train" / f"{i}.png"), tf.io.encode_png(image))
        images.append({"id": i, "file_name": f"{i}.png", "height": height, "width": width})
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (folder / "annotations" / "instances_train.json").write_text(json.dumps(data))


def test_coco_folder_categories_are_its_class_names(tokenizer, tmp_path):
    _write_coco(tmp_path)
    dataset, info = load_open_vocabulary_dataset(tokenizer=tokenizer, name=str(tmp_path), categories=("cat", "bird"),
                                                 unseen=("bird",), image_size=64, batch_size=2)
    assert info.query_names == ["cat", "bird"] and info.max_objects == 100
    x, y = next(iter(dataset))
    assert x["images"].shape == (2, 64, 64, 3) and x["input_ids"].shape == (2, 2, 16)
    names = {1: "cat", 3: "bird"}  # No "dog" query: dogs are left out.
    for i, (height, width, rectangles) in enumerate(RECTANGLES):
        kept = [(names[c], [rx / width, ry / height, (rx + w) / width, (ry + h) / height])
                for rx, ry, w, h, c in rectangles if c in names]
        _assert_same_objects(_objects(tokenizer, x, y, i), kept)


def _eos_not_largest(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    vocabulary = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    bos, eos = vocabulary["<|startoftext|>"], vocabulary["<|endoftext|>"]
    vocabulary["<|startoftext|>"], vocabulary["<|endoftext|>"] = eos, bos
    return CLIPTokenizer(vocabulary, str(tmp_path / "merges.txt"))


def test_bad_input(tokenizer, shapes_detection_data_dir, shapes_data_dir, tmp_path):
    bad = [
        (dict(unseen=("pink circle",)), r"unseen categories \['pink circle'\] are not in categories"),
        (dict(categories=(*SHAPES_CATEGORIES, "pink circle"), unseen=()),
         r"\['pink circle'\] are not categories of 'shapes_detection/small'.*colors \('red'.*shapes \('circle'"),
        (dict(categories=("red circle", "red circle"), unseen=()), r"lists \['red circle'\] more than once"),
        (dict(categories="red circle"), "categories must be a non-empty list"),
        (dict(queries="unseen"), r"queries='unseen': pass 'seen'.*or 'all'"),
        (dict(categories=("red circle",), unseen=("red circle",), training=True), "leaves nothing to query"),
        (dict(tokenizer=None), r"tokenizer=None: pass a keras_vit.data.CLIPTokenizer"),
        (dict(tokenizer=train_clip_tokenizer(list(SHAPES_CATEGORIES), sequence_length=8)),
         r"encodes 8 tokens per text.*query_length=16"),
        (dict(tokenizer=_eos_not_largest(tokenizer, tmp_path)), r"must be <\|endoftext\|>'s"),
        (dict(categories=("a very long way from a red circle in a field",), unseen=()), "must fit in the tokenizer's 16"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            _load(options.pop("tokenizer", tokenizer), shapes_detection_data_dir, **options)
    with pytest.raises(ValueError, match=r"reads the offline 'shapes' dataset.*name='shapes_detection'"):
        load_caption_dataset(tokenizer=tokenizer, name="shapes_detection", data_dir=shapes_data_dir)
    with pytest.raises(ValueError, match="tokenizer=None"):
        load_caption_dataset(tokenizer=None, name="shapes/small", data_dir=shapes_data_dir)
