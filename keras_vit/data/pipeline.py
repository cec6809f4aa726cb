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

import numpy as np
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
# First bytes of the formats tf.io.decode_image reads: JPEG, PNG, GIF, BMP.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
_MAX_LISTED = 5  # Unreadable files named in the error.
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
    # `reseed(seed)`: the records with the file order of `seed` (TFDS datasets of several files).
    reseed: Callable = None


# Images this small (shorter side, pixels) get a mild crop: 8% of a 32 px image is 9 px of blur.
LOW_RESOLUTION_SIDE = 64


def default_min_crop_scale(name, image_side=None):
    """Smallest area fraction of the training crop: 0.08 (Inception style), but 0.8 for images
    of at most `LOW_RESOLUTION_SIDE` px (`image_side`, see `image_side()`; `shapes` always), where
    a small crop leaves a few blurred pixels or cuts the object out and mislabels it. On `shapes`,
    0.8 reached higher accuracy than 0.5 and 0.08."""
    if str(name).split("/")[0] == shapes.Shapes.name:
        return 0.8
    return 0.8 if image_side is not None and image_side <= LOW_RESOLUTION_SIDE else 0.08


def image_side(name, data_dir=None, sample=32):
    """The median shorter side (pixels) of the training images of `name`: from the TFDS
    feature shape when it is fixed, else from up to `sample` images of a folder (read
    evenly through it); None when unknown."""
    folder = os.path.expanduser(str(name))
    if not os.path.isdir(folder):
        dataset_name = re.split(r"[/:]", str(name))[0]
        if dataset_name == shapes.Shapes.name:
            return shapes.IMAGE_SIZE
        try:
            builder = tfds.builder(name, data_dir=data_dir)
            image_key, _ = builder.info.supervised_keys
            shape = builder.info.features[image_key].shape
        except Exception:  # unknown or unprepared: load_dataset reports it
            return None
        return min(shape[:2]) if shape[0] and shape[1] else None
    files = _folder_source(folder, "train").records
    paths = [path.decode() for path, _ in files.as_numpy_iterator()]
    chosen = paths[:: max(1, len(paths) // sample)][:sample]
    sides = [min(tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False).shape[:2])
             for path in chosen]
    return int(np.median(sides)) if sides else None


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
    epoch=None,
):
    """Builds a batched classification dataset.

    A folder is checked before any batch is built, and a ValueError says
    what to fix: hidden files and folders (names starting with ".", e.g.
    macOS `._img.jpg`) are skipped; a file whose first bytes are no JPEG,
    PNG, GIF or BMP header (an empty file, text named `.jpg`) is refused;
    so is a class folder of `val/` or `test/` that `train/` lacks. Each real
    file is listed once. A class folder may be a link to anywhere, but a
    folder link inside one is followed only when it stays inside the folder
    of the class folders (`name`, or its `train/`, `val/`...) and lists no
    folder twice: a link that loops (`cat/again -> .`), points into a listed
    folder or leaves it raises rather than being skipped, since silently
    dropping or duplicating data is worse.

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
        epoch: with `training`, make the dataset that one epoch: its order
            and augmentations then follow from `(seed, epoch)` alone, so any
            epoch can be rebuilt by itself (`load_epochs` does this without
            listing the source again). None: iterating the dataset again
            reshuffles it, for one `fit` over many epochs.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of `(images, labels)` batches,
        images float32 `(batch, image_size, image_size, 3)` in `[0, 255]`,
        and a `DatasetInfo`. The dataset is not repeated.
    """
    build, info = _prepare(
        name, split, data_dir=data_dir, image_size=image_size, batch_size=batch_size, training=training,
        seed=seed, shuffle_buffer=shuffle_buffer, crop_scale=crop_scale, crop_ratio=crop_ratio,
        eval_crop_fraction=eval_crop_fraction, label_mode=label_mode, drop_remainder=drop_remainder,
        augmentation=augmentation,
    )
    return build(epoch), info


def load_epochs(name="shapes", split="train", **options):
    """The training data one epoch at a time: `(epoch_dataset, info)`.

    `epoch_dataset(epoch)` is `load_dataset(name, split, training=True,
    epoch=epoch, **options)`: that epoch's batches, shuffled and augmented
    from `(seed, epoch)` alone, so a run resumed at any epoch (and step) sees
    the batches an uninterrupted run would. The source is listed and checked
    once. `options` are `load_dataset`'s.
    """
    build, info = _prepare(name, split, **{"training": True, **options})
    return build, info


def _prepare(
    name,
    split,
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
    """Checks the options and lists the source once; returns `(build, info)`, where
    `build(epoch=None)` makes the batched dataset (see `load_dataset`)."""
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
    if training and augmentation is not None and augmentation.mixes_labels and label_mode != "categorical":
        raise ValueError(
            f"{augmentation} mixes the labels of image pairs (MixUp/CutMix), which needs "
            "one-hot labels: pass label_mode='categorical' (and a categorical loss)."
        )
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
    info = DatasetInfo(
        name=name,
        num_classes=num_classes,
        class_names=list(source.class_names),
        num_examples=source.num_examples,
        image_size=image_size,
    )

    def preprocess(record, label, seeds=None, augment_image=None):
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

    def build(epoch=None):
        if not training:
            dataset = source.records.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
            return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
        epoch_seed = seed if epoch is None else _epoch_seed(seed, epoch)
        augment_image = mix_batch = None
        if augmentation is not None:
            augment_image = augmentation.image_function(epoch_seed)
            mix_batch = augmentation.batch_function(epoch_seed)
        records = source.records if epoch is None or source.reseed is None else source.reseed(epoch_seed)
        # One epoch's dataset gives the same batches however often it is iterated (Keras may
        # iterate once to build the model before training); otherwise each iteration reshuffles.
        again = epoch is None
        buffer = shuffle_buffer or min(_MAX_SHUFFLE_BUFFER, source.num_examples)
        dataset = records.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=again)
        seeds = tf.data.Dataset.random(
            seed=epoch_seed, rerandomize_each_iteration=again
        ).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds)
        dataset = dataset.map(
            lambda record, seeds: preprocess(*record, seeds, augment_image),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        if mix_batch is not None:
            dataset = dataset.map(mix_batch, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return build, info


def _epoch_seed(seed, epoch):
    """A 31-bit seed for epoch `epoch` of a run seeded `seed`: fixed by the pair, different per epoch."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be None or an int >= 0, got {epoch!r}.")
    return int(np.random.SeedSequence([int(seed), epoch]).generate_state(1)[0] >> 1)


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

    def records(file_seed):
        return builder.as_dataset(
            split=split,
            as_supervised=True,
            shuffle_files=shuffle_files,
            decoders=decoders,
            # No TFDS auto-cache of small splits: validation often reads only its first
            # batches, and a partly read cache is thrown away with a warning every epoch.
            read_config=tfds.ReadConfig(shuffle_seed=file_seed, try_autocache=False),
        )

    return _Source(
        records=records(seed),
        load=lambda image: image,
        class_names=features[label_key].names,
        num_examples=builder.info.splits[split].num_examples,
        reseed=records if shuffle_files else None,
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
        _check_held_out_classes(split_dirs, class_names)
        files, labels = _list_images(split_dirs[split], class_names)
        _check_image_headers(files, split_dirs[split])
    else:
        class_names = _class_names(root)
        files, labels = _list_images(root, class_names)
        _check_image_headers(files, root)  # Both splits, before training.
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


def _class_dirs(root):
    """Sorted names of the non-hidden sub-folders of `root`."""
    return sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _class_names(root):
    names = _class_dirs(root)
    if len(names) < 2:
        raise ValueError(
            f"Folder {root!r} has {len(names)} class sub-folder(s) "
            f"{names}; at least 2 are needed. Expected one sub-folder of "
            "images per class, e.g. root/cat/1.jpg and root/dog/2.jpg."
        )
    return names


def _check_held_out_classes(split_dirs, class_names):
    """Refuses a held-out class folder that `train/` lacks (it has no label)."""
    train = split_dirs["train"]
    for held_out in sorted(set(split_dirs.values()) - {train}):
        unknown = sorted(set(_class_dirs(held_out)) - set(class_names))
        if unknown:
            raise ValueError(
                f"Folder {held_out!r} has class sub-folder(s) {unknown} that "
                f"{train!r} lacks, so they have no label (the classes are the "
                f"sub-folders of {train!r}: {class_names}). Add training "
                f"images for them to {train!r}, or remove or rename them in "
                f"{held_out!r}."
            )


def _list_images(root, class_names):
    """Sorted image paths under `root/<class>/` and their labels.

    Hidden files and folders (names starting with ".") are skipped. Each real
    file is listed once (file links to a listed file are dropped).
    """
    class_dirs = [os.path.join(root, name) for name in class_names]
    # A held-out folder may lack some training classes.
    present = [os.path.isdir(d) for d in class_dirs]
    walk = _ImageWalk(
        root, [os.path.realpath(d) for d, ok in zip(class_dirs, present) if ok]
    )
    files, labels, first_seen = [], [], {}
    for label, class_dir in enumerate(class_dirs):
        if not present[label]:
            continue
        for path, real in sorted(walk.images(class_dir)):
            if real in first_seen:
                other, other_label = first_seen[real]
                if other_label != label:
                    raise ValueError(
                        f"{path!r} and {other!r} are the same file "
                        f"({real!r}) in two classes, "
                        f"{class_names[other_label]!r} and "
                        f"{class_names[label]!r}. Remove it (or the link to "
                        "it) from the class it does not belong to."
                    )
                continue
            first_seen[real] = (path, label)
            files.append(path)
            labels.append(label)
    if not files:
        raise ValueError(
            f"Found no images in the class sub-folders of {root!r}. "
            f"Accepted extensions: {IMAGE_EXTENSIONS}; expected "
            "root/<class_name>/<image>."
        )
    return files, labels


class _ImageWalk:
    """Walks class folders, following folder links that stay in the dataset.

    A class folder may itself be a link to anywhere. A folder link inside a
    class folder is followed only if its target is inside `root` and holds
    no folder already listed: a link that loops back to a folder containing
    it, points into a listed folder (images listed twice, maybe in both
    train and validation) or leaves `root` raises a ValueError.
    """

    def __init__(self, root, real_class_dirs):
        self.root = root
        self.real_root = os.path.realpath(root)
        self.listed = list(real_class_dirs)  # Real folders already listed.

    def images(self, class_dir):
        """Yields `(path, real path)` of the image files under `class_dir`."""
        stack = [(class_dir, (os.path.realpath(class_dir),))]
        while stack:
            directory, ancestors = stack.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        if entry.is_symlink():
                            real = self._follow(entry.path, ancestors)
                        else:
                            real = os.path.join(ancestors[-1], entry.name)
                        stack.append((entry.path, ancestors + (real,)))
                    elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                        real = (
                            os.path.realpath(entry.path)
                            if entry.is_symlink()
                            else os.path.join(ancestors[-1], entry.name)
                        )
                        yield entry.path, real

    def _follow(self, link, ancestors):
        """Real target of the folder `link`, or a ValueError saying why not."""
        target = os.path.realpath(link)
        shown = f"Folder link {link!r} -> {target!r}"
        fix = (
            "Remove the link, or point it at a folder inside the dataset "
            "that is not listed otherwise (a class folder itself may be a "
            "link to anywhere)."
        )
        if any(_contains(target, folder) for folder in ancestors):
            raise ValueError(
                f"{shown} loops back to a folder that contains it, so its "
                f"images would be listed over and over. {fix}"
            )
        for folder in self.listed:
            if _contains(target, folder) or _contains(folder, target):
                raise ValueError(
                    f"{shown} overlaps the folder {folder!r}, which is "
                    "already listed, so its images would be listed twice "
                    f"(maybe in two classes, or in train and validation). {fix}"
                )
        if not _contains(self.real_root, target):
            raise ValueError(
                f"{shown} leaves the dataset folder {self.root!r}. {fix}"
            )
        self.listed.append(target)
        return target


def _contains(folder, path):
    """Whether real `path` is `folder` or inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _check_image_headers(files, root):
    """Refuses files that are no image by their first bytes (no decoding)."""
    bad = []
    for path in files:
        try:  # os.open/os.read: twice as fast as open() on small files.
            fd = os.open(path, os.O_RDONLY)
            try:
                header = os.read(fd, 12)
            finally:
                os.close(fd)
        except OSError as error:
            bad.append(f"{path!r} ({error.strerror or error})")
            continue
        if not _is_image_header(header):
            what = f"starts with {header[:4]!r}" if header else "empty"
            bad.append(f"{path!r} ({what})")
    if bad:
        listed = ", ".join(bad[:_MAX_LISTED])
        if len(bad) > _MAX_LISTED:
            listed += f" and {len(bad) - _MAX_LISTED} more"
        raise ValueError(
            f"{len(bad)} of the {len(files)} image files of {root!r} are not "
            f"readable images (JPEG, PNG, GIF or BMP, by their first bytes): "
            f"{listed}. Delete them or convert them to JPEG or PNG."
        )


def _is_image_header(header):
    """Whether `header` starts a file `tf.io.decode_image` can read."""
    if header.startswith(_IMAGE_MAGIC):
        return True
    # WebP (RIFF....WEBP): tf.io.decode_image reads it where TF has decode_webp.
    webp = header[:4] == b"RIFF" and header[8:12] == b"WEBP"
    return webp and hasattr(tf.io, "decode_webp")


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
