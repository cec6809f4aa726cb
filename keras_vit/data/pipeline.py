"""tf.data input pipelines for image classification.

`load_dataset` reads the offline `shapes` dataset, any prepared TFDS dataset,
or a folder of images with one sub-folder per class, and returns batches of
`(images, labels)`: float32 images in `[0, 255]` of shape
`(batch, image_size, image_size, 3)` (the models normalize them). Only
TensorFlow ops are used, so the datasets feed `model.fit` on every Keras
backend. Nothing is ever downloaded.
"""

import dataclasses
import difflib
import hashlib
import os
import re
from typing import Callable

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vit.data import shapes

DEFAULT_DATA_DIR = os.path.join(
    os.path.expanduser("~"), ".cache", "keras_vit", "tensorflow_datasets"
)
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
LABEL_MODES = ("int", "categorical")
FOLDER_SPLITS = ("train", "validation", "test")
# Share of each class held out as "validation"/"test" in a flat folder.
_HELD_OUT_FRACTION = 0.2
_HELD_OUT_DIRS = ("val", "validation", "test")
_MAX_SHUFFLE_BUFFER = 10000
# A split name, maybe sliced: "train", "train[:90%]", "test[:5%](closest)".
_SPLIT_PART = re.compile(r"^\s*([\w-]+)\s*(\[[^\]]*\](?:\(\w+\))?)?\s*$")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Facts about the split returned by `load_dataset`.

    Attributes:
        name: the dataset name or folder path that was loaded.
        num_classes: number of classes.
        class_names: class names, indexed by label.
        num_examples: examples in the split, before batching.
        image_size: side of the square images in the batches.
    """

    name: str
    num_classes: int
    class_names: list[str]
    num_examples: int
    image_size: int


@dataclasses.dataclass(frozen=True)
class _Source:
    """Unbatched `(image, label)` records before decoding.

    `records` yields encoded image bytes (or uint8 images) and int labels;
    `load` maps a record's first item to what `_decode` accepts.
    """

    records: tf.data.Dataset
    load: Callable
    class_names: list[str]
    num_examples: int


def default_min_crop_scale(name):
    """Smallest area fraction of the training crop for dataset `name`: 0.08 (Inception style),
    but 0.5 for `shapes`, whose one object a small crop would cut out and mislabel."""
    return 0.5 if str(name).split("/")[0] == shapes.Shapes.name else 0.08


def load_dataset(
    name="shapes",
    split="train",
    *,
    data_dir=None,
    image_size=64,
    batch_size=64,
    training=False,
    seed=0,
    shuffle_buffer=None,
    crop_scale=(0.08, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    eval_crop_fraction=0.875,
    label_mode="int",
    drop_remainder=None,
    augmentation=None,
):
    """Builds a batched classification dataset.

    Args:
        name: `"shapes"` (generated locally on first use, also
            `"shapes/small"`), the name of a TFDS dataset already prepared in
            `data_dir` (e.g. `"cifar10"`, `"imagenet2012"`), or the path of a
            folder holding one sub-folder of images per class.
        split: a TFDS split such as `"train"`, `"test"` or `"train[:90%]"`.
            `"validation"` reads `"test"` when a TFDS dataset has no
            validation split. A folder has `"train"` and `"validation"`
            (alias `"test"`): its own `train/` and `val/`, `validation/` or
            `test/` sub-folders if present, else a fixed 80/20 split of each
            class that does not depend on `seed`.
        data_dir: TFDS data directory. Defaults to `DEFAULT_DATA_DIR` for
            `shapes` and to the TFDS default for other datasets.
        image_size: side of the square output images.
        batch_size: examples per batch.
        training: if True, shuffle and apply a random resized crop
            (Inception style) and a random horizontal flip; else resize and
            take a center crop.
        seed: seed of the shuffling and of the augmentations.
        shuffle_buffer: shuffle buffer size. Defaults to
            `min(10000, num_examples)`.
        crop_scale: range of the random crop's area, as a fraction of the
            image area.
        crop_ratio: range of the random crop's aspect ratio (width / height).
        eval_crop_fraction: side of the eval center crop, as a fraction of
            the shorter image side.
        label_mode: `"int"` (int32 labels `(batch,)`) or `"categorical"`
            (float32 one-hot labels `(batch, num_classes)`).
        drop_remainder: drop the last partial batch. Defaults to `training`.
        augmentation: an `augment.Augmentation` (RandAugment, random erasing,
            MixUp, CutMix), applied when `training`. MixUp and CutMix mix
            labels, so they need `label_mode="categorical"`.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of `(images, labels)` batches,
        images float32 `(batch, image_size, image_size, 3)` in `[0, 255]`,
        and a `DatasetInfo`. The dataset is not repeated.
    """
    _check_options(
        image_size,
        batch_size,
        label_mode,
        shuffle_buffer,
        crop_scale,
        crop_ratio,
        eval_crop_fraction,
    )
    if drop_remainder is None:
        drop_remainder = training
    augment_image = mix_batch = None
    if training and augmentation is not None:
        if augmentation.mixes_labels and label_mode != "categorical":
            raise ValueError(
                f"{augmentation} mixes the labels of image pairs (MixUp/CutMix), which needs "
                "one-hot labels: pass label_mode='categorical' (and a categorical loss)."
            )
        augment_image = augmentation.image_function(seed)
        mix_batch = augmentation.batch_function(seed)
    folder = os.path.expanduser(name)
    if os.path.isdir(folder):
        source = _folder_source(folder, split)
    else:
        source = _tfds_source(name, split, data_dir, training, seed)
    if drop_remainder and source.num_examples < batch_size:
        raise ValueError(
            f"Split {split!r} of {name!r} has {source.num_examples} examples, "
            f"fewer than batch_size={batch_size}, so dropping the remainder "
            "leaves no batch. Use a smaller batch_size or "
            "drop_remainder=False."
        )
    num_classes = len(source.class_names)

    def preprocess(record, label, seeds=None):
        image = _decode(source.load(record))
        if training:
            crop_seed, flip_seed = tf.unstack(
                tf.random.experimental.stateless_split(seeds, num=2)
            )
            image = _random_resized_crop(
                image, image_size, crop_scale, crop_ratio, crop_seed
            )
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            if augment_image is not None:
                image = augment_image(image)
        else:
            image = _center_crop(image, image_size, eval_crop_fraction)
        label = tf.cast(label, tf.int32)
        if label_mode == "categorical":
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return image, label

    dataset = source.records
    if training:
        buffer = shuffle_buffer or min(_MAX_SHUFFLE_BUFFER, source.num_examples)
        dataset = dataset.shuffle(buffer, seed=seed)
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds)
        dataset = dataset.map(
            lambda record, seeds: preprocess(*record, seeds),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if mix_batch is not None:
        dataset = dataset.map(mix_batch, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    info = DatasetInfo(
        name=name,
        num_classes=num_classes,
        class_names=list(source.class_names),
        num_examples=source.num_examples,
        image_size=image_size,
    )
    return dataset, info


def _check_options(
    image_size,
    batch_size,
    label_mode,
    shuffle_buffer,
    crop_scale,
    crop_ratio,
    eval_crop_fraction,
):
    if image_size < 8:
        raise ValueError(
            f"image_size must be at least 8, got image_size={image_size}. "
            "Pass the input size of the model, e.g. image_size=224."
        )
    if batch_size < 1:
        raise ValueError(
            f"batch_size must be at least 1, got batch_size={batch_size}."
        )
    if label_mode not in LABEL_MODES:
        raise ValueError(
            f"Unknown label_mode={label_mode!r}. Expected one of "
            f"{LABEL_MODES}: 'int' for sparse losses, 'categorical' for "
            "one-hot labels."
        )
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise ValueError(
            "shuffle_buffer must be None (automatic) or at least 1, got "
            f"shuffle_buffer={shuffle_buffer}."
        )
    low, high = crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(
            f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}. "
            "The default is (0.08, 1.0)."
        )
    low, high = crop_ratio
    if not 0 < low <= high:
        raise ValueError(
            f"crop_ratio must satisfy 0 < min <= max, got {crop_ratio}. "
            "The default is (3/4, 4/3)."
        )
    if not 0 < eval_crop_fraction <= 1:
        raise ValueError(
            "eval_crop_fraction must be in (0, 1], got "
            f"eval_crop_fraction={eval_crop_fraction}. Use 1.0 to keep the "
            "whole image."
        )


def _tfds_source(name, split, data_dir, training, seed):
    """Reads a TFDS dataset; prepares `shapes` on first use."""
    dataset_name = re.split(r"[/:]", name)[0]
    known = tfds.list_builders(with_community_datasets=False)
    if dataset_name not in known:
        matches = difflib.get_close_matches(dataset_name, known, n=5)
        hint = f" Did you mean {matches}?" if matches else ""
        raise ValueError(
            f"Unknown dataset {name!r}: it is neither a TFDS dataset nor an "
            f"existing folder.{hint} Expected 'shapes', a name from "
            "tfds.list_builders(), or the path of a folder holding one "
            "sub-folder of images per class."
        )
    is_shapes = dataset_name == shapes.Shapes.name
    if is_shapes and data_dir is None:
        data_dir = DEFAULT_DATA_DIR
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not is_shapes:
            raise ValueError(
                f"Dataset {name!r} is not prepared in {builder.data_dir!r} "
                "and keras_vit never downloads data. Prepare it once, e.g. "
                f"tfds.builder({name!r}, data_dir=...).download_and_prepare() "
                "on a machine with network access (or with the manual files "
                "TFDS asks for), then pass that data_dir."
            )
        builder.download_and_prepare()
    split = _resolve_split(name, split, list(builder.info.splits))
    image_key, label_key = _supervised_keys(name, builder.info)
    features = builder.info.features
    # Ordered datasets (like `shapes`) refuse shuffled file reads.
    shuffle_files = training and not builder.info.disable_shuffling
    decoders = None
    if isinstance(features[image_key], tfds.features.Image):
        decoders = {image_key: tfds.decode.SkipDecoding()}
    records = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=shuffle_files,
        decoders=decoders,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    return _Source(
        records=records,
        load=lambda image: image,
        class_names=features[label_key].names,
        num_examples=builder.info.splits[split].num_examples,
    )


def _resolve_split(name, split, available):
    """Checks a TFDS split string; maps a missing "validation" to "test"."""
    parts = []
    for part in str(split).split("+"):
        match = _SPLIT_PART.match(part)
        base = match.group(1) if match else part
        if base == "validation" and base not in available:
            base = "test"
        if not match or base not in available:
            raise ValueError(
                f"Unknown split {split!r} for dataset {name!r}. Available "
                f"splits: {sorted(available)}, optionally sliced "
                "(e.g. 'train[:90%]') or joined with '+'."
            )
        parts.append(base + (match.group(2) or ""))
    return "+".join(parts)


def _supervised_keys(name, info):
    keys = info.supervised_keys
    if (
        not keys
        or len(keys) != 2
        or not all(isinstance(key, str) for key in keys)
        or not isinstance(info.features[keys[1]], tfds.features.ClassLabel)
    ):
        raise ValueError(
            f"Dataset {name!r} is not an image classification dataset: its "
            f"supervised keys are {keys}, expected ('image', 'label') with a "
            "ClassLabel label."
        )
    return keys


def _folder_source(root, split):
    """Reads `root/<class>/<image>` or `root/{train,val}/<class>/<image>`."""
    if split not in FOLDER_SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for folder {root!r}. Expected one of "
            f"{FOLDER_SPLITS} ('validation' and 'test' are the held-out part)."
        )
    split_dirs = _folder_split_dirs(root)
    if split_dirs:
        class_names = _class_names(split_dirs["train"])
        files, labels = _list_images(split_dirs[split], class_names)
    else:
        class_names = _class_names(root)
        files, labels = _list_images(root, class_names)
        files, labels = _split_files(files, labels, root, split)
    if not files:
        raise ValueError(
            f"Split {split!r} of folder {root!r} has no images. Add images "
            f"with one of the extensions {IMAGE_EXTENSIONS} to each class "
            "sub-folder."
        )
    records = tf.data.Dataset.from_tensor_slices(
        (tf.constant(files), tf.constant(labels, tf.int32))
    )
    return _Source(
        records=records,
        load=tf.io.read_file,
        class_names=class_names,
        num_examples=len(files),
    )


def _folder_split_dirs(root):
    """Split -> directory when `root` has `train/` and a held-out folder."""
    train = os.path.join(root, "train")
    held_out = [
        os.path.join(root, sub)
        for sub in _HELD_OUT_DIRS
        if os.path.isdir(os.path.join(root, sub))
    ]
    if not os.path.isdir(train) or not held_out:
        return None
    test = os.path.join(root, "test")
    return {
        "train": train,
        "validation": held_out[0],
        "test": test if test in held_out else held_out[0],
    }


def _class_names(root):
    names = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if len(names) < 2:
        raise ValueError(
            f"Folder {root!r} has {len(names)} class sub-folder(s) "
            f"{names}; at least 2 are needed. Expected one sub-folder of "
            "images per class, e.g. root/cat/1.jpg and root/dog/2.jpg."
        )
    return names


def _list_images(root, class_names):
    """Sorted image paths under `root/<class>/` and their labels."""
    files, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(root, class_name)
        found = []
        for directory, _, filenames in os.walk(class_dir, followlinks=True):
            found += [
                os.path.join(directory, filename)
                for filename in filenames
                if filename.lower().endswith(IMAGE_EXTENSIONS)
            ]
        files += sorted(found)
        labels += [label] * len(found)
    if not files:
        raise ValueError(
            f"Found no images in the class sub-folders of {root!r}. "
            f"Accepted extensions: {IMAGE_EXTENSIONS}; expected "
            "root/<class_name>/<image>."
        )
    return files, labels


def _split_files(files, labels, root, split):
    """Holds out a fixed 20% of each class, chosen by path hash."""
    kept_files, kept_labels = [], []
    for label in sorted(set(labels)):
        members = [path for path, y in zip(files, labels) if y == label]
        by_hash = sorted(members, key=lambda path: _path_hash(path, root))
        num_held_out = round(len(members) * _HELD_OUT_FRACTION)
        held_out = set(by_hash[:num_held_out])
        chosen = [
            path for path in members if (path in held_out) == (split != "train")
        ]
        kept_files += chosen
        kept_labels += [label] * len(chosen)
    return kept_files, kept_labels


def _path_hash(path, root):
    relative = os.path.relpath(path, root).replace(os.sep, "/")
    return hashlib.md5(relative.encode()).hexdigest()


def _decode(image):
    """Encoded bytes or an integer image -> uint8 `(height, width, 3)`."""
    if image.dtype == tf.string:
        return tf.io.decode_image(image, channels=3, expand_animations=False)
    if image.shape[-1] == 1:
        return tf.image.grayscale_to_rgb(image)
    return image[..., :3]


def _random_resized_crop(image, size, scale, ratio, seed):
    """Random crop of area `scale` and aspect `ratio`, resized to `size`."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=scale[0],
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)
    return _resize(image, size)


def _center_crop(image, size, fraction):
    """Central square of side `fraction * min(height, width)`, resized.

    Same as resizing the shorter side to `size / fraction` and then taking
    the central `size x size` crop, with a single resampling.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.cast(tf.minimum(height, width), tf.float32) * fraction
    side = tf.maximum(tf.cast(tf.round(side), tf.int32), 1)
    image = tf.image.crop_to_bounding_box(
        image, (height - side) // 2, (width - side) // 2, side, side
    )
    return _resize(image, size)


def _resize(image, size):
    """Bilinear (antialiased) resize to float32 `(size, size, 3)`."""
    image = tf.image.resize(image, (size, size), antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, (size, size, 3))
