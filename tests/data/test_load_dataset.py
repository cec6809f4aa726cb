import os
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_vit.data import SHAPE_NAMES
from keras_vit.data import load_dataset
from keras_vit.data import pipeline

pytestmark = pytest.mark.backend_agnostic


def _write_image(path, height, width, channels, value):
    """Writes a constant PNG or JPEG image, by extension."""
    image = tf.fill((height, width, channels), tf.constant(value, tf.uint8))
    encode = tf.io.encode_jpeg if path.suffix == ".jpg" else tf.io.encode_png
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), encode(image))


def _first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("image_size", [64, 40])
def test_batches(shapes_dir, training, image_size):
    dataset, info = load_dataset(
        "shapes/small",
        "test",
        data_dir=shapes_dir,
        image_size=image_size,
        batch_size=32,
        training=training,
    )
    assert info.num_classes == 6
    assert info.class_names == list(SHAPE_NAMES)
    assert (info.num_examples, info.image_size) == (120, image_size)
    batches = [(x.numpy(), y.numpy()) for x, y in dataset]
    # Training drops the last partial batch, eval keeps it.
    sizes = [len(y) for _, y in batches]
    assert sizes == ([32] * 3 if training else [32, 32, 32, 24])
    images, labels = batches[0]
    assert images.shape == (32, image_size, image_size, 3)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 200
    assert set(np.concatenate([y for _, y in batches])) <= set(range(6))


def test_eval_is_deterministic_and_ordered(shapes_dir):
    dataset, _ = load_dataset("shapes/small", "test", data_dir=shapes_dir)
    first, again = _first_batch(dataset), _first_batch(dataset)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], np.arange(64) % 6)


def test_train_is_reproducible_with_seed(shapes_dir):
    def batch(seed):
        dataset, _ = load_dataset(
            "shapes/small", data_dir=shapes_dir, training=True, seed=seed
        )
        return _first_batch(dataset)

    first, again, other = batch(0), batch(0), batch(1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    # Shuffled, unlike the ordered source.
    assert not np.array_equal(first[1], np.arange(64) % 6)


def test_train_augmentation_changes_between_epochs(shapes_dir):
    dataset, _ = load_dataset(
        "shapes/small", data_dir=shapes_dir, training=True, shuffle_buffer=1
    )
    first, second = _first_batch(dataset), _first_batch(dataset)
    np.testing.assert_array_equal(first[1], second[1])  # Same examples...
    assert not np.array_equal(first[0], second[0])  # ...augmented anew.


def test_shapes_default_data_dir(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(pipeline, "DEFAULT_DATA_DIR", str(tmp_path))
    _, info = load_dataset("shapes/small", "test")
    assert info.num_examples == 120
    assert (tmp_path / "shapes" / "small").is_dir()


def test_eval_center_crop(shapes_dir):
    full, _ = load_dataset(
        "shapes/small", "test", data_dir=shapes_dir, eval_crop_fraction=1.0
    )
    cropped, _ = load_dataset(
        "shapes/small", "test", data_dir=shapes_dir, image_size=56
    )
    # 56 / 64 = 0.875: the default center crop is the central 56x56 window.
    np.testing.assert_allclose(
        _first_batch(cropped)[0], _first_batch(full)[0][:, 4:60, 4:60], atol=1
    )


def test_categorical_labels(shapes_dir):
    dataset, _ = load_dataset(
        "shapes/small", "test", data_dir=shapes_dir, label_mode="categorical"
    )
    _, labels = _first_batch(dataset)
    assert labels.shape == (64, 6) and labels.dtype == np.float32
    np.testing.assert_array_equal(labels.argmax(-1), np.arange(64) % 6)
    np.testing.assert_array_equal(labels.sum(-1), 1)


@pytest.mark.parametrize(
    "split, num_examples",
    [("validation", 120), ("train[:10%]", 60), ("train+test[:50%]", 660)],
)
def test_split_strings(shapes_dir, split, num_examples):
    dataset, info = load_dataset(
        "shapes/small", split, data_dir=shapes_dir, batch_size=1000
    )
    assert info.num_examples == num_examples
    assert len(_first_batch(dataset)[1]) == num_examples


@pytest.fixture
def image_folder(tmp_path):
    """bird: 5 RGB PNGs, cat: 10 grayscale PNGs, dog: 10 JPEGs."""
    root = tmp_path / "pets"
    for i in range(5):
        _write_image(root / "bird" / f"{i}.png", 20, 30, 3, 10)
    for i in range(10):
        _write_image(root / "cat" / f"{i}.png", 16, 16, 1, 128)
        _write_image(root / "dog" / "nested" / f"{i}.jpg", 40, 24, 3, 250)
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_folder_dataset(image_folder):
    counts = {}
    for split in ("train", "validation", "test"):
        dataset, info = load_dataset(
            str(image_folder), split, image_size=16, batch_size=100
        )
        assert info.class_names == ["bird", "cat", "dog"]
        images, labels = _first_batch(dataset)
        assert images.shape == (info.num_examples, 16, 16, 3)
        counts[split] = np.bincount(labels, minlength=3).tolist()
        # Each class has its own constant gray level, grayscale made RGB.
        levels = {0: 10, 1: 128, 2: 250}
        for image, label in zip(images, labels):
            np.testing.assert_allclose(image, levels[label], atol=3)
    assert counts == {
        "train": [4, 8, 8],
        "validation": [1, 2, 2],
        "test": [1, 2, 2],
    }


def test_folder_dataset_with_split_folders(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for name in ("a", "b"):
            for i in range(count):
                _write_image(tmp_path / split / name / f"{i}.png", 8, 8, 3, 0)
    train, info = load_dataset(str(tmp_path), "train", batch_size=100)
    val, val_info = load_dataset(str(tmp_path), "validation", batch_size=100)
    assert info.class_names == val_info.class_names == ["a", "b"]
    assert _first_batch(train)[0].shape == (6, 64, 64, 3)
    assert _first_batch(val)[0].shape == (4, 64, 64, 3)


def _assert_raises(match, data_dir=None, **kwargs):
    with pytest.raises(ValueError, match=match):
        load_dataset(data_dir=data_dir, **kwargs)
    if data_dir is not None:  # Nothing half-written.
        assert not os.path.exists(data_dir) or not os.listdir(data_dir)


def test_errors(tmp_path, image_folder, no_network):
    data_dir = str(tmp_path / "tfds")
    _assert_raises("'shapez'.*'shapes'.*folder", data_dir, name="shapez")
    _assert_raises("'cifar10' is not prepared", data_dir, name="cifar10")
    _assert_raises("image_size=4", data_dir, image_size=4)
    _assert_raises("batch_size=0", data_dir, batch_size=0)
    _assert_raises("label_mode='onehot'", data_dir, label_mode="onehot")
    _assert_raises("eval_crop_fraction=1.5", data_dir, eval_crop_fraction=1.5)
    folder = str(image_folder)
    _assert_raises("'trian'.*folder", name=folder, split="trian")
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    _assert_raises(re.escape(f"{str(empty)!r}") + ".*'.png'", name=str(empty))
    _write_image(tmp_path / "single" / "a" / "0.png", 8, 8, 3, 0)
    _assert_raises(
        "'.*single' has 1 class sub-folder.*at least 2",
        name=str(tmp_path / "single"),
    )


def test_errors_on_prepared_shapes(shapes_dir):
    with pytest.raises(ValueError, match="'trian'.*'test', 'train'"):
        load_dataset("shapes/small", "trian", data_dir=shapes_dir)
    with pytest.raises(ValueError, match="batch_size=1000"):
        load_dataset(
            "shapes/small",
            "test",
            data_dir=shapes_dir,
            batch_size=1000,
            training=True,
        )


def _num_examples(folder):
    return sum(
        load_dataset(str(folder), split)[1].num_examples
        for split in ("train", "validation")
    )


@pytest.mark.parametrize(
    "link, target, match",
    [
        ("cat/again", ".", "loops back"),  # 41 copies of each cat before.
        ("cat/deep/up", "../..", "loops back"),
        ("dog/cats", "../cat", "overlaps the folder"),
        ("cat/more", "{outside}", "leaves the dataset folder"),
    ],
)
def test_folder_bad_links_are_refused(image_folder, tmp_path, link, target, match):
    outside = tmp_path / "outside"
    _write_image(outside / "0.png", 8, 8, 3, 0)
    path = image_folder / link
    path.parent.mkdir(exist_ok=True)
    path.symlink_to(target.format(outside=outside), target_is_directory=True)
    named = f"{re.escape(repr(str(path)))} -> '/.*{match}.*Remove the link"
    with pytest.raises(ValueError, match=named):
        load_dataset(str(image_folder))


def test_folder_links_list_each_file_once(image_folder, tmp_path):
    # A class folder linked from elsewhere and a link to a hidden folder are read.
    for i in range(5):
        _write_image(tmp_path / "elsewhere" / "fish" / f"{i}.png", 8, 8, 3, 60)
        _write_image(image_folder / ".pool" / f"{i}.png", 8, 8, 3, 10)
    (image_folder / "fish").symlink_to(tmp_path / "elsewhere" / "fish")
    (image_folder / "bird" / "pool").symlink_to("../.pool")
    # File links to a listed file are dropped, also across train and validation.
    for i in range(10):
        (image_folder / "cat" / f"copy{i}.png").symlink_to(f"{i}.png")
    _, info = load_dataset(str(image_folder))
    assert info.class_names == ["bird", "cat", "dog", "fish"]
    assert _num_examples(image_folder) == 10 + 10 + 10 + 5
    (image_folder / "dog" / "cat.png").symlink_to("../cat/0.png")
    same = "'.*dog/cat.png' and '.*cat/0.png' are the same file.*'cat' and 'dog'"
    with pytest.raises(ValueError, match=same):
        load_dataset(str(image_folder))


def test_folder_held_out_class_unknown_to_train(tmp_path):
    def make(root, classes):
        for split, names in zip(("train", "val"), classes):
            for name in names:
                _write_image(root / split / name / "0.png", 8, 8, 3, 0)

    make(tmp_path / "a", (("cat", "dog"), ("cat", "bird")))
    train, val = str(tmp_path / "a" / "train"), str(tmp_path / "a" / "val")
    unknown = f"{val!r} has class sub-folder(s) ['bird'] that {train!r} lacks"
    for split in ("train", "validation"):
        with pytest.raises(ValueError, match=re.escape(unknown)):
            load_dataset(str(tmp_path / "a"), split)
    # A training class with no held-out folder is fine: fewer classes validated.
    make(tmp_path / "b", (("bird", "cat", "dog"), ("cat",)))
    _, info = load_dataset(str(tmp_path / "b"), "validation")
    assert (info.class_names, info.num_examples) == (["bird", "cat", "dog"], 1)


def test_folder_unreadable_images_are_named(image_folder):
    cat = image_folder / "cat"
    (cat / "notes.jpg").write_text("not an image")
    (cat / "empty.png").write_bytes(b"")
    (cat / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (cat / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    # PNG bytes named .jpg: decode_image reads them.
    (cat / "0.png").rename(cat / "0.jpg")
    with pytest.raises(ValueError) as raised:
        load_dataset(str(image_folder))
    message = str(raised.value)
    # Named with the count and the fix; hidden files are not counted.
    assert message.startswith(f"2 of the 27 image files of {str(image_folder)!r}")
    assert message.endswith("Delete them or convert them to JPEG or PNG.")
    assert f"{str(cat / 'notes.jpg')!r} (starts with b'not '" in message
    assert f"{str(cat / 'empty.png')!r} (empty)" in message
    assert "._0.png" not in message and str(cat / "0.jpg") not in message
    (cat / "notes.jpg").unlink()
    (cat / "empty.png").unlink()
    labels = [
        _first_batch(load_dataset(str(image_folder), split, batch_size=100)[0])[1]
        for split in ("train", "validation")
    ]
    assert np.bincount(np.concatenate(labels)).tolist() == [5, 10, 10]
    for i in range(20):
        (cat / f"bad{i}.gif").write_bytes(b"GIF")  # Too short to be one.
    five_and_more = r"^20 of the 45 image files .*(bad.*){5}and 15 more\. Delete"
    with pytest.raises(ValueError, match=five_and_more):
        load_dataset(str(image_folder), "validation")
