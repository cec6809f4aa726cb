"""tf.data input pipelines for object detection, with DETR's augmentation.

`load_detection_dataset` reads the offline `shapes_detection` dataset, a
TFDS detection dataset prepared in `data_dir` (`coco/2017`), or a
COCO-format folder or instances JSON (layouts in `keras_vit.data.coco`),
and returns padded batches `(x, y)` for `model.fit`:

- `x["images"]`: float32 `(batch, H, W, 3)` in `[0, 255]`, each image
  padded with zeros at the bottom and right to the batch's largest height
  and width (or to `pad_to`);
- `x["pixel_mask"]`: float32 `(batch, H, W)`, 1 on the image, 0 on padding;
- `y["boxes"]`: float32 `(batch, max_objects, 4)` normalized
  `(cx, cy, w, h)` relative to the unpadded resized image;
- `y["labels"]`: int32 `(batch, max_objects)`, 0 where padded (with
  `label_features`, the index of the combination of several of the objects'
  class features, e.g. color and shape);
- `y["valid"]`: float32 `(batch, max_objects)`, 1 for a real object;
- `y["image_id"]`: int64 `(batch,)`, the image's id in its source (COCO
  image id, example index for `shapes_detection`);
- `y["image_size"]`: int32 `(batch, 2)`, `(height, width)` of the original
  image, to put predicted boxes back in its pixels.

Sizes follow DETR's recipe, scaled by `image_size / 800`: evaluation resizes
the shorter side to `image_size` with the longer side capped at `max_size`
(DETR: 800 and 1333); training flips at random, then with probability
`crop_probability` (0.5) resizes the shorter side to 400-600, takes a random
crop of 384-600 pixels a side and uses that, and finally resizes the shorter
side to one of `scales` (480, 512, ..., 800) with the same cap. Boxes follow
every step: they are clipped to the crop and dropped when nothing is left.
Only TensorFlow ops are used, so the batches feed `model.fit` on every Keras
backend. Nothing is ever downloaded.
"""

import dataclasses
import difflib
import itertools
import os
import re
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vit.data import coco
from keras_vit.data import pipeline
from keras_vit.data import shapes_detection

# DETR's sizes for COCO, which the defaults scale by `image_size / 800`.
DETR_IMAGE_SIZE = 800
DETR_MAX_SIZE = 1333
DETR_SCALES = tuple(range(480, 801, 32))
DETR_CROP_RESIZES = (400, 500, 600)
DETR_CROP_SIZE = (384, 600)
# Default `image_size` per dataset; any other source uses DETR's 800.
DEFAULT_IMAGE_SIZES = {shapes_detection.ShapesDetection.name: shapes_detection.IMAGE_SIZE}
_MAX_SHUFFLE_BUFFER = 10000


@dataclasses.dataclass(frozen=True)
class DetectionInfo:
    """Facts about the split returned by `load_detection_dataset`.

    Attributes:
        name: the dataset name or path that was loaded.
        num_classes: number of classes (labels are in `[0, num_classes)`).
        class_names: class names, indexed by label.
        num_examples: images in the split, before batching.
        image_size: shorter side of the evaluation images.
        max_size: cap on the longer side of every image.
        max_objects: `T`, the padded number of boxes per image.
    """

    name: str
    num_classes: int
    class_names: list
    num_examples: int
    image_size: int
    max_size: int
    max_objects: int


@dataclasses.dataclass(frozen=True)
class _Source:
    """Unbatched records and the function that makes each one a dict of
    `image` uint8 `(H, W, 3)`, `boxes` float32 `(n, 4)` normalized
    `(x1, y1, x2, y2)`, `labels` int32 `(n,)` and `image_id` int64 `()`."""

    records: tf.data.Dataset
    load: Callable
    class_names: list
    num_examples: int
    max_objects: int = None  # Most boxes in an image, when known before reading.


@dataclasses.dataclass(frozen=True)
class _Sizes:
    """Image sizes in pixels (see `load_detection_dataset`); `crop_resizes`
    and `crop_size` are DETR's random crop's, scaled."""

    image_size: int
    max_size: int
    scales: tuple
    crop_resizes: tuple
    crop_size: tuple
    crop_probability: float


def load_detection_dataset(
    name="shapes_detection",
    split="train",
    *,
    data_dir=None,
    batch_size=8,
    image_size=None,
    max_size=None,
    scales=None,
    training=False,
    crop_probability=0.5,
    max_objects=100,
    num_classes=None,
    label_features=("label",),
    pad_to=None,
    seed=0,
    shuffle_buffer=None,
    drop_remainder=None,
):
    """Builds a batched detection dataset (format in the module docstring).

    Args:
        name: `"shapes_detection"` (generated locally on first use, also
            `"shapes_detection/small"`), a TFDS detection dataset prepared in
            `data_dir` (`"coco/2017"`: crowd boxes are dropped), a COCO-format
            folder or the path of an instances JSON (see `keras_vit.data.coco`;
            labels are category ids, so COCO has 91 classes).
        split: a TFDS split (`"train"`, `"validation"`, `"test[:10%]"`;
            `"validation"` reads `"test"` where there is no validation split),
            or a COCO folder's split name or alias (`"train"`, `"validation"`,
            `"val2017"`).
        data_dir: TFDS data directory. Defaults to `pipeline.DEFAULT_DATA_DIR`
            for `shapes_detection` and to the TFDS default otherwise.
        batch_size: images per batch.
        image_size: shorter side of the evaluation images and the largest
            training scale. Defaults to 128 for `shapes_detection` (its size)
            and 800 (DETR's) for other datasets.
        max_size: cap on the longer side. Defaults to `image_size` for
            `shapes_detection` (square images) and to
            `round(image_size * 1333 / 800)` otherwise.
        scales: shorter sides the training images are resized to, one chosen
            at random per image. Defaults to DETR's 480, 512, ..., 800 scaled by
            `image_size / 800` (77 to 128 for `shapes_detection`).
        training: shuffle and augment (flip, random crop, multi-scale resize).
        crop_probability: chance of DETR's random crop per training image
            (0 turns it off).
        max_objects: boxes per image in `y` (padded with `valid` 0). An image
            with more boxes is an error; it must stay <= the model's number
            of queries.
        num_classes: the model's number of classes, if given: a dataset whose
            labels reach it is an error.
        label_features: the ClassLabel features of a TFDS dataset's `objects`
            that make the label. Several give one class per combination, first
            feature major, named by their names joined with spaces:
            `("color", "label")` on `shapes_detection` gives the 48 classes
            "red circle", "red square", ..., "black ring" (label
            `color * 6 + shape`).
        pad_to: `(height, width)` (or one int) to pad every batch to, for
            static shapes (XLA on TPU; use it with `drop_remainder=True`).
            It must be at least `max_size` both ways. None pads each batch to
            its largest image.
        seed: seed of the shuffling and of the augmentations.
        shuffle_buffer: shuffle buffer size. Defaults to
            `min(10000, num_examples)`.
        drop_remainder: drop the last partial batch. Defaults to `training`.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of `(x, y)` batches and a
        `DetectionInfo`. The dataset is not repeated; a training dataset
        reshuffles and draws new augmentations each time it is iterated.
    """
    dataset_name = _dataset_name(name)
    if image_size is None:
        image_size = DEFAULT_IMAGE_SIZES.get(dataset_name, DETR_IMAGE_SIZE)
    if max_size is None:
        is_shapes = dataset_name in DEFAULT_IMAGE_SIZES
        max_size = image_size if is_shapes else round(image_size * DETR_MAX_SIZE / DETR_IMAGE_SIZE)
    if scales is None:
        scales = _scaled(DETR_SCALES, image_size)
    pad_to = _check_options(image_size, max_size, scales, batch_size, crop_probability,
                            max_objects, pad_to, shuffle_buffer)
    if drop_remainder is None:
        drop_remainder = training
    source = _source(name, split, data_dir, training, seed, max_objects, label_features)
    _check_source(source, name, split, max_objects=max_objects, batch_size=batch_size,
                  drop_remainder=drop_remainder)
    if num_classes is not None and len(source.class_names) > num_classes:
        raise ValueError(
            f"{name!r} has labels up to {len(source.class_names) - 1} "
            f"({len(source.class_names)} classes), which reach num_classes="
            f"{num_classes}. Build the model with classes={len(source.class_names)}."
        )
    info = DetectionInfo(
        name=str(name),
        num_classes=len(source.class_names),
        class_names=list(source.class_names),
        num_examples=source.num_examples,
        image_size=image_size,
        max_size=max_size,
        max_objects=max_objects,
    )
    sizes = _Sizes(
        image_size=image_size,
        max_size=max_size,
        scales=tuple(scales),
        crop_resizes=_scaled(DETR_CROP_RESIZES, image_size),
        crop_size=_scaled(DETR_CROP_SIZE, image_size),
        crop_probability=crop_probability,
    )
    dataset = _batches(
        source, sizes, name=name, training=training, batch_size=batch_size, max_objects=max_objects,
        pad_to=pad_to, seed=seed, shuffle_buffer=shuffle_buffer, drop_remainder=drop_remainder,
    )
    return dataset, info


def tfds_detection_record(example, index=None):
    """Maps a TFDS detection example to the pipeline's record.

    Args:
        example: a TFDS example with `image` and `objects/bbox` (normalized
            `ymin, xmin, ymax, xmax`), `objects/label`, optionally
            `objects/is_crowd` (crowd boxes are dropped, as DETR does) and the
            image id as `image/id` (COCO) or `image_id` (`shapes_detection`).
        index: the example's position, used as its id when it has none.

    Returns:
        dict: `image` (as stored: encoded bytes or uint8), `boxes` float32
        `(n, 4)` normalized `(x1, y1, x2, y2)`, `labels` int32 `(n,)`,
        `image_id` int64 `()`.
    """
    objects = example["objects"]
    boxes = tf.gather(tf.cast(objects["bbox"], tf.float32), [1, 0, 3, 2], axis=-1)
    labels = tf.cast(objects["label"], tf.int32)
    if "is_crowd" in objects:
        keep = tf.logical_not(tf.cast(objects["is_crowd"], tf.bool))
        boxes, labels = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)
    image_id = example.get("image/id", example.get("image_id", index))
    if image_id is None:
        raise ValueError(
            "The example has no 'image/id' or 'image_id' feature; pass its index "
            "as `index`."
        )
    return {
        "image": example["image"],
        "boxes": boxes,
        "labels": labels,
        "image_id": tf.cast(image_id, tf.int64),
    }


def _dataset_name(name):
    return re.split(r"[/:]", str(name))[0]


def _scaled(sizes, image_size):
    """DETR's `sizes` for 800 pixel images, scaled to `image_size`."""
    return tuple(sorted({max(1, round(s * image_size / DETR_IMAGE_SIZE)) for s in sizes}))


def _check_options(image_size, max_size, scales, batch_size, crop_probability,
                   max_objects, pad_to, shuffle_buffer):
    """Checks the options; returns `pad_to` as `(height, width)` or None."""
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(
            f"image_size must be an int >= 8, got image_size={image_size!r}: the "
            "shorter side of the evaluation images (DETR: 800)."
        )
    if not isinstance(max_size, int) or max_size < image_size:
        raise ValueError(
            f"max_size must be an int >= image_size={image_size}, got "
            f"max_size={max_size!r}: the cap on the longer side (DETR: 1333 for 800)."
        )
    if not scales or not all(isinstance(s, int) and s >= 1 for s in scales):
        raise ValueError(
            f"scales must be a non-empty list of positive ints (shorter sides), got "
            f"scales={scales!r}. DETR's: {list(DETR_SCALES)}."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got batch_size={batch_size}.")
    if not 0 <= crop_probability <= 1:
        raise ValueError(
            f"crop_probability must be in [0, 1], got {crop_probability}. DETR uses 0.5."
        )
    if not isinstance(max_objects, int) or max_objects < 1:
        raise ValueError(
            f"max_objects must be an int >= 1, got max_objects={max_objects!r}: the "
            "padded number of boxes per image, at most the model's queries."
        )
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise ValueError(
            "shuffle_buffer must be None (automatic) or at least 1, got "
            f"shuffle_buffer={shuffle_buffer}."
        )
    if pad_to is None:
        return None
    pad_to = (pad_to, pad_to) if isinstance(pad_to, int) else tuple(pad_to)
    if len(pad_to) != 2 or min(pad_to) < max_size:
        raise ValueError(
            f"pad_to={pad_to} cannot hold every image: images are up to "
            f"max_size={max_size} pixels on either side. Pass pad_to=({max_size}, "
            f"{max_size}) or more, or a smaller max_size."
        )
    return pad_to


def _check_source(source, name, split, *, max_objects, batch_size, drop_remainder):
    """Checks `max_objects` and `batch_size` against what `source` holds."""
    if source.max_objects is not None and source.max_objects > max_objects:
        raise ValueError(
            f"Images of {name!r} hold up to {source.max_objects} objects, more than "
            f"max_objects={max_objects}. Raise max_objects to at least "
            f"{source.max_objects} (it must stay <= the model's number of queries)."
        )
    if drop_remainder and source.num_examples < batch_size:
        raise ValueError(
            f"Split {split!r} of {name!r} has {source.num_examples} images, fewer "
            f"than batch_size={batch_size}, so dropping the remainder leaves no "
            "batch. Use a smaller batch_size or drop_remainder=False."
        )


def _source(name, split, data_dir, training, seed, max_objects, label_features=("label",)):
    label_features = (label_features,) if isinstance(label_features, str) else tuple(label_features)
    path = os.path.expanduser(str(name))
    if os.path.exists(path):
        if label_features != ("label",):
            raise ValueError(
                f"label_features={label_features} needs a TFDS dataset whose objects have those "
                f"features; the labels of the COCO files {name!r} are their category ids. Leave "
                "label_features at ('label',)."
            )
        json_path, image_dir = coco.find_coco_files(path, split)
        return _coco_source(json_path, image_dir, max_objects)
    if path.lower().endswith(".json"):
        raise ValueError(
            f"Annotation file {name!r} does not exist. Pass the path of a COCO "
            "instances JSON, a COCO-format folder, or a TFDS dataset name."
        )
    return _tfds_source(name, split, data_dir, training, seed, label_features)


def _coco_source(json_path, image_dir, max_objects):
    annotations = coco.read_coco_annotations(json_path, image_dir, max_objects)
    lengths = [len(labels) for labels in annotations.labels]
    flat_boxes = np.concatenate(annotations.boxes).reshape(-1, 4)
    flat_labels = np.concatenate(annotations.labels).astype(np.int32)
    records = tf.data.Dataset.from_tensor_slices(
        {
            "path": annotations.files,
            "image_id": annotations.image_ids,
            "size": annotations.sizes,
            "boxes": tf.RaggedTensor.from_row_lengths(flat_boxes, lengths),
            "labels": tf.RaggedTensor.from_row_lengths(flat_labels, lengths),
        }
    )

    def load(record):
        image = pipeline._decode(tf.io.read_file(record["path"]))
        size = tf.shape(image)[:2]
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(size, record["size"])),
            ["Image", record["path"], "has (height, width)", size, "but its entry in",
             json_path, "says", record["size"], ": fix its height and width there."],
        )
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        return {
            "image": image,
            "boxes": record["boxes"],
            "labels": record["labels"],
            "image_id": record["image_id"],
        }

    return _Source(
        records=records,
        load=load,
        class_names=annotations.class_names,
        num_examples=len(annotations.files),
        max_objects=max(lengths),
    )


def _tfds_source(name, split, data_dir, training, seed, label_features=("label",)):
    """Reads a TFDS detection dataset; prepares `shapes_detection` on first use."""
    dataset_name = _dataset_name(name)
    known = tfds.list_builders(with_community_datasets=False)
    if dataset_name not in known:
        matches = difflib.get_close_matches(dataset_name, known, n=5)
        hint = f" Did you mean {matches}?" if matches else ""
        raise ValueError(
            f"Unknown dataset {name!r}: it is neither an existing folder or JSON "
            f"file nor a TFDS dataset.{hint} Expected 'shapes_detection', a TFDS "
            "detection dataset such as 'coco/2017', a COCO-format folder "
            "(annotations/instances_<split>.json + <split>/) or an instances JSON."
        )
    is_shapes = dataset_name == shapes_detection.ShapesDetection.name
    if is_shapes and data_dir is None:
        data_dir = pipeline.DEFAULT_DATA_DIR
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    label_feature = _label_feature(features)
    if label_feature is None:
        raise ValueError(
            f"Dataset {name!r} is not an object detection dataset: expected the "
            "features 'image' and 'objects' with 'bbox' and a ClassLabel 'label' "
            f"(as coco/2017), got {sorted(features.keys())}."
        )
    label_classes = _class_features(name, features["objects"], label_features)
    if not builder.is_prepared():
        if not is_shapes:
            raise ValueError(
                f"Dataset {name!r} is not prepared in {builder.data_dir!r} and "
                "keras_vit never downloads data. Prepare it once, e.g. "
                f"tfds.builder({name!r}, data_dir=...).download_and_prepare() on a "
                "machine with network access (or with the manual files TFDS asks "
                "for), then pass that data_dir."
            )
        builder.download_and_prepare()
    split = pipeline._resolve_split(name, split, list(builder.info.splits))
    decoders = None
    if isinstance(features["image"], tfds.features.Image):
        decoders = {"image": tfds.decode.SkipDecoding()}
    records = builder.as_dataset(
        split=split,
        shuffle_files=training and not builder.info.disable_shuffling,
        decoders=decoders,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),  # as pipeline.py
    )

    def load(record):
        example = record["example"]
        objects = {**example["objects"], "label": _combined_label(example["objects"], label_classes)}
        item = tfds_detection_record({**example, "objects": objects}, record["index"])
        item["image"] = pipeline._decode(item["image"])
        return item

    return _Source(
        records=records.enumerate().map(lambda index, example: {"index": index, "example": example}),
        load=load,
        class_names=_combined_names(label_classes),
        num_examples=builder.info.splits[split].num_examples,
        max_objects=shapes_detection.MAX_OBJECTS if is_shapes else None,
    )


def _label_feature(features):
    """The ClassLabel of a detection dataset's `objects`, or None."""
    if "image" not in features or "objects" not in features:
        return None
    objects = features["objects"]
    if "bbox" not in objects or "label" not in objects:
        return None
    label = objects["label"]
    return label if isinstance(label, tfds.features.ClassLabel) else None


def _class_features(name, objects, label_features):
    """`{key: ClassLabel}` of `objects` for each of `label_features`, checked."""
    known = [key for key in objects.keys() if isinstance(objects[key], tfds.features.ClassLabel)]
    if not label_features or any(key not in known for key in label_features):
        raise ValueError(
            f"label_features={label_features} must name ClassLabel features of the objects "
            f"of {name!r}, which has {known}; pass e.g. ('label',)."
        )
    return {key: objects[key] for key in label_features}


def _combined_names(classes):
    """The name of each combination of `classes` (`{key: ClassLabel}`): "red circle"."""
    return [" ".join(names) for names in itertools.product(*(feature.names for feature in classes.values()))]


def _combined_label(objects, classes):
    """The index of each object's combination of `classes` (`{key: ClassLabel}`), first key major."""
    label = tf.zeros_like(tf.cast(objects["label"], tf.int64))
    for key, feature in classes.items():
        label = label * feature.num_classes + tf.cast(objects[key], tf.int64)
    return label


def _examples(source, transform, *, training, seed, shuffle_buffer):
    """`transform(item, seed)` of each of `source`'s loaded records. When training, the
    records are shuffled and each gets a new stateless seed pair (else seed is None)."""
    if not training:
        return source.records.map(lambda record: transform(source.load(record), None),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    buffer = shuffle_buffer or min(_MAX_SHUFFLE_BUFFER, source.num_examples)
    records = source.records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(records, seeds).map(
        lambda record, pair: transform(source.load(record), pair), num_parallel_calls=tf.data.AUTOTUNE
    )


def _batches(source, sizes, *, name, training, batch_size, max_objects, pad_to, seed,
             shuffle_buffer, drop_remainder):
    """Shuffles (when training), transforms and pads `source`'s records."""

    def example(item, seed):
        item = _clean(item, max_objects, name)
        item["original_size"] = tf.shape(item["image"])[:2]
        if training:
            item = _augment(item, seed, sizes)
        else:
            item["image"] = _resize(item["image"], sizes.image_size, sizes.max_size)
        return _to_outputs(item)

    dataset = _examples(source, example, training=training, seed=seed, shuffle_buffer=shuffle_buffer)
    image_shape = list(pad_to) if pad_to else [None, None]
    dataset = dataset.padded_batch(
        batch_size,
        padded_shapes=(
            {"images": image_shape + [3], "pixel_mask": image_shape},
            {
                "boxes": [max_objects, 4],
                "labels": [max_objects],
                "valid": [max_objects],
                "image_id": [],
                "image_size": [2],
            },
        ),
        drop_remainder=drop_remainder,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _clean(item, max_objects, name):
    """Drops boxes of zero area; checks the image has at most `max_objects`."""
    item = _keep_nonempty(item)
    count = tf.shape(item["labels"])[0]
    check = tf.debugging.Assert(
        count <= max_objects,
        [f"An image of {name} has more objects than max_objects={max_objects}: raise "
         "max_objects (it must stay <= the model's number of queries). image_id:",
         item["image_id"], "objects:", count],
    )
    with tf.control_dependencies([check]):
        item["labels"] = tf.identity(item["labels"])
    return item


def _keep_nonempty(item):
    boxes = item["boxes"]
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {**item, "boxes": tf.boolean_mask(boxes, keep), "labels": tf.boolean_mask(item["labels"], keep)}


def _augment(item, seed, sizes):
    """DETR's training transform: flip, maybe a random crop, multi-scale resize."""
    flip_seed, select_seed, crop_seed, scale_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    item = _random_flip(item, flip_seed)
    crop = tf.random.stateless_uniform([], select_seed) < sizes.crop_probability
    shape = tf.shape(item["image"])
    full = tf.stack([0, 0, shape[0], shape[1]])
    window = tf.cond(crop, lambda: _random_window(shape, crop_seed, sizes), lambda: full)
    item = _crop(item, window)
    scale = _choice(sizes.scales, scale_seed)
    item["image"] = _resize(item["image"], scale, sizes.max_size)
    return item


def _random_flip(item, seed):
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = item["image"]
    x1, y1, x2, y2 = tf.unstack(item["boxes"], axis=-1)
    flipped = tf.stack([1.0 - x2, y1, 1.0 - x1, y2], axis=-1)
    return {
        **item,
        "image": tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image),
        "boxes": tf.where(flip, flipped, item["boxes"]),
    }


def _choice(values, seed):
    index = tf.random.stateless_uniform([], seed, minval=0, maxval=len(values), dtype=tf.int32)
    return tf.gather(tf.constant(values, tf.int32), index)


def _random_window(shape, seed, sizes):
    """DETR's RandomSizeCrop after a resize to a random shorter side, as a
    window `(top, left, height, width)` in the original image's pixels."""
    resize_seed, height_seed, width_seed, top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=5)
    )
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    factor = tf.cast(_choice(sizes.crop_resizes, resize_seed), tf.float32) / tf.minimum(height, width)
    low, high = sizes.crop_size

    def crop_side(side, side_seed):
        resized = tf.cast(side * factor, tf.int32)
        upper = tf.maximum(tf.minimum(resized, high), low)
        return tf.minimum(_uniform_int(low, upper, side_seed), resized), resized

    crop_height, resized_height = crop_side(height, height_seed)
    crop_width, resized_width = crop_side(width, width_seed)
    top = _uniform_int(0, resized_height - crop_height, top_seed)
    left = _uniform_int(0, resized_width - crop_width, left_seed)
    # Back to the original pixels (one resampling of the image in all).
    window = tf.cast(tf.stack([top, left, crop_height, crop_width]), tf.float32) / factor
    window = tf.cast(tf.round(window), tf.int32)
    crop_height = tf.clip_by_value(window[2], 1, shape[0])
    crop_width = tf.clip_by_value(window[3], 1, shape[1])
    top = tf.minimum(window[0], shape[0] - crop_height)
    left = tf.minimum(window[1], shape[1] - crop_width)
    return tf.stack([top, left, crop_height, crop_width])


def _uniform_int(low, high, seed):
    """An int32 in `[low, high]`, both ends included."""
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high + 1, dtype=tf.int32)


def _crop(item, window):
    """Crops the image to `window` `(top, left, height, width)` in pixels;
    clips the boxes to it and drops those left empty."""
    shape = tf.shape(item["image"])
    top, left, height, width = tf.unstack(window)
    image = tf.slice(item["image"], tf.stack([top, left, 0]), tf.stack([height, width, -1]))
    size = tf.cast(tf.stack([shape[1], shape[0]] * 2), tf.float32)
    offset = tf.cast(tf.stack([left, top] * 2), tf.float32)
    extent = tf.cast(tf.stack([width, height] * 2), tf.float32)
    boxes = tf.clip_by_value(item["boxes"] * size - offset, 0.0, extent) / extent
    return _keep_nonempty({**item, "image": image, "boxes": boxes})


def _resize(image, size, max_size):
    """Resizes the shorter side to `size`, or the longer side to `max_size` if
    it would pass it (DETR's `get_size`, whose rounding can pass `max_size` by
    a pixel: here it never does); float32 in `[0, 255]`."""
    shape = tf.cast(tf.shape(image)[:2], tf.float64)
    height, width = shape[0], shape[1]
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    size = tf.cast(size, tf.float64)
    size = tf.where(long / short * size > max_size, tf.round(max_size * short / long), size)
    size = tf.maximum(size, 1.0)
    longer = tf.minimum(tf.floor(size * long / short), max_size)
    new_height = tf.where(height <= width, size, longer)
    new_width = tf.where(height <= width, longer, size)
    new_size = tf.cast(tf.stack([new_height, new_width]), tf.int32)
    image = tf.image.resize(image, new_size, antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def _to_outputs(item):
    """The `(x, y)` of one image, before padding."""
    image = item["image"]
    x1, y1, x2, y2 = tf.unstack(item["boxes"], axis=-1)
    boxes = tf.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)
    count = tf.shape(boxes)[0]
    x = {"images": image, "pixel_mask": tf.ones(tf.shape(image)[:2], tf.float32)}
    y = {
        "boxes": boxes,
        "labels": item["labels"],
        "valid": tf.ones([count], tf.float32),
        "image_id": item["image_id"],
        "image_size": item["original_size"],
    }
    return x, y
