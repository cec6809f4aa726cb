"""Open-vocabulary detection data: OWL-ViT's text-queried boxes and CLIP's image-caption pairs.

Categories are text. On the offline data they are the 48 "color shape"
captions of the shapes (`SHAPES_CATEGORIES`), and `DEFAULT_UNSEEN` holds 6 of
them out of detection training, to measure how well a detector finds
categories it never saw boxed:

- `load_open_vocabulary_dataset` reads `shapes_detection` (or any TFDS
  detection dataset or COCO folder `keras_vit.data.load_detection_dataset`
  reads) as OWL-ViT batches: square images, the same tokenized category
  queries for every image, and boxes labeled by their query. Training
  queries only the seen categories and leaves the unseen objects unlabeled
  (as OWL-ViT leaves objects outside its label space); evaluation queries
  all of them.
- `load_caption_dataset` reads the single-shape `shapes` dataset as
  image-caption pairs covering all 48 categories, unseen ones included, to
  pretrain the towers CLIP-style first (as CLIP saw every concept), so that
  the text tower can place an unseen combination of a known color and a
  known shape.

```python
tokenizer = keras_vit.data.tokenizer.train_clip_tokenizer(SHAPES_CATEGORIES)
captions, _ = load_caption_dataset(tokenizer=tokenizer, training=True)
train, info = load_open_vocabulary_dataset(tokenizer=tokenizer, training=True)
test, info = load_open_vocabulary_dataset("test", tokenizer=tokenizer)  # all 48 queries
```
"""

import dataclasses
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vit.data import detection
from keras_vit.data import pipeline
from keras_vit.data import shapes
from keras_vit.data import shapes_detection

# Color-major: "red circle", "red square", ..., "red ring", "green circle", ..., "black ring";
# category `color * 6 + shape` with indices in `shapes.COLOR_NAMES` and `shapes.SHAPE_NAMES`.
SHAPES_CATEGORIES = tuple(f"{color} {shape}" for color in shapes.COLOR_NAMES for shape in shapes.SHAPE_NAMES)
# Held out of detection training: one category per shape, each of another color, so that every
# held-out color and shape is also seen boxed in 5 other categories (white and black are never held
# out). Objects of each in the 1200 test images of `shapes_detection`: 75, 82, 76, 98, 111 and 78
# (seen categories: 55 to 129); in the 6000 training images: 359, 390, 351, 515, 571, 392 (327 to 575).
DEFAULT_UNSEEN = ("red triangle", "green cross", "blue ring", "yellow circle", "orange square", "purple star")
QUERY_MODES = ("seen", "all")
# OWL-ViT's text tower reads queries of 16 tokens.
OWL_VIT_QUERY_LENGTH = 16
# The objects' features whose names make the category, per dataset (others: their "label").
_LABEL_FEATURES = {shapes_detection.ShapesDetection.name: ("color", "label")}
_CAPTION_FEATURES = ("color", "label")
_DEFAULT_MAX_OBJECTS = {shapes_detection.ShapesDetection.name: shapes_detection.MAX_OBJECTS}


@dataclasses.dataclass(frozen=True)
class OpenVocabularyInfo:
    """Facts about the split returned by `load_open_vocabulary_dataset`.

    Attributes:
        name: the dataset name or path that was loaded.
        query_names: the categories queried, in query order: `y["labels"]`
            and the last axis of the detector's logits index them.
        seen_names: the categories detection training sees boxed.
        unseen_names: the held-out categories.
        num_examples: images in the split, before batching.
        image_size: side of the square images.
        max_objects: `T`, the padded number of boxes per image.
    """

    name: str
    query_names: list
    seen_names: list
    unseen_names: list
    num_examples: int
    image_size: int
    max_objects: int

    @property
    def unseen_queries(self):
        """Indices of the unseen categories in `query_names`, to report their AP apart."""
        return [index for index, name in enumerate(self.query_names) if name in self.unseen_names]


@dataclasses.dataclass(frozen=True)
class CaptionInfo:
    """Facts about the split returned by `load_caption_dataset`.

    Attributes:
        name: the dataset that was loaded.
        captions: every caption the batches hold (`SHAPES_CATEGORIES`).
        num_examples: image-caption pairs in the split, before batching.
        image_size: side of the square images.
        sequence_length: tokens per caption.
    """

    name: str
    captions: list
    num_examples: int
    image_size: int
    sequence_length: int


def load_open_vocabulary_dataset(
    split="train",
    *,
    tokenizer,
    name="shapes_detection",
    data_dir=None,
    categories=SHAPES_CATEGORIES,
    unseen=DEFAULT_UNSEEN,
    training=False,
    queries=None,
    batch_size=8,
    image_size=128,
    max_objects=None,
    query_length=OWL_VIT_QUERY_LENGTH,
    seed=0,
    shuffle_buffer=None,
    drop_remainder=None,
):
    """Builds OWL-ViT batches `(x, y)` whose classes are text queries.

    - `x["images"]`: float32 `(batch, S, S, 3)` in `[0, 255]`, each image
      resized to `S = image_size` both ways (no padding: OWL-ViT's boxes are
      relative to the whole image);
    - `x["input_ids"]`, `x["attention_mask"]`: int32 `(batch, Q, query_length)`,
      the Q queried category names, tokenized once, the same for every image;
    - `y["boxes"]`: float32 `(batch, T, 4)` normalized `(cx, cy, w, h)`;
    - `y["labels"]`: int32 `(batch, T)`, each object's index in the queries
      (`info.query_names`), 0 where padded;
    - `y["valid"]`: float32 `(batch, T)`, 1 for a real object;
    - `y["image_id"]`: int64 `(batch,)`, `y["image_size"]`: int32 `(batch, 2)`
      as `load_detection_dataset` gives them.

    Objects whose category is not queried are left out of `y`. Training
    shuffles and flips images (and boxes) horizontally at random; it never
    crops or rescales, so objects keep their size.

    Args:
        split: `"train"` or `"test"` (`"validation"` reads `"test"`), or any
            split `load_detection_dataset` takes.
        tokenizer: a `CLIPTokenizer` (e.g. `train_clip_tokenizer(SHAPES_CATEGORIES)`)
            whose end-of-text id is its largest, where OWL-ViT pools.
        name: `"shapes_detection"` (or `"shapes_detection/small"`), whose
            categories are the objects' captions, or another dataset
            `load_detection_dataset` reads, whose categories are its class names.
        data_dir: TFDS data directory (see `load_detection_dataset`).
        categories: the category names, each a class of the dataset.
        unseen: the categories held out of training, a subset of `categories`.
        training: shuffle and flip.
        queries: `"seen"` (categories not in `unseen`) or `"all"`. Defaults to
            `"seen"` when training, else `"all"`.
        batch_size: images per batch.
        image_size: side of the square images.
        max_objects: `T`. Defaults to the most objects `shapes_detection` draws
            in an image (6), else 100.
        query_length: tokens per query of the detector's text tower (its
            `query_length`, 16 as published); the tokenizer's must match.
        seed: seed of the shuffling and of the flips.
        shuffle_buffer: shuffle buffer size. Defaults to `min(10000, num_examples)`.
        drop_remainder: drop the last partial batch. Defaults to `training`.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of `(x, y)` batches and an
        `OpenVocabularyInfo`. A training dataset reshuffles and draws new flips
        each time it is iterated.
    """
    categories, unseen = _check_categories(categories, unseen)
    queries = _query_mode(queries, training)
    query_names = [c for c in categories if queries == "all" or c not in unseen]
    if not query_names:
        raise ValueError(
            f"Every category is unseen ({list(unseen)}), so queries='seen' leaves nothing to query. "
            "Hold out fewer categories or pass queries='all'."
        )
    input_ids, attention_mask = _encode(tokenizer, query_names, query_length)
    dataset_name = detection._dataset_name(name)
    if max_objects is None:
        max_objects = _DEFAULT_MAX_OBJECTS.get(dataset_name, 100)
    detection._check_options(image_size, image_size, [image_size], batch_size, 0.0, max_objects, None,
                             shuffle_buffer)
    if drop_remainder is None:
        drop_remainder = training
    label_features = _LABEL_FEATURES.get(dataset_name, ("label",))
    source = detection._source(name, split, data_dir, training, seed, max_objects, label_features)
    detection._check_source(source, name, split, max_objects=max_objects, batch_size=batch_size,
                            drop_remainder=drop_remainder)
    query_of_class = _query_of_class(source.class_names, categories, query_names, name)

    def example(item, pair):
        item = _keep_queried(item, query_of_class)
        item = detection._clean(item, max_objects, name)
        item["original_size"] = tf.shape(item["image"])[:2]
        if training:
            item = detection._random_flip(item, pair)
        item["image"] = pipeline._resize(item["image"], image_size)
        x, y = detection._to_outputs(item)
        return {"images": x["images"]}, y

    def add_queries(x, y):
        count = batch_size if drop_remainder else tf.shape(x["images"])[0]  # Static when it can be.
        tiled = {key: tf.tile(value[None], [count, 1, 1]) for key, value in
                 (("input_ids", input_ids), ("attention_mask", attention_mask))}
        return {**x, **tiled}, y

    dataset = detection._examples(source, example, training=training, seed=seed, shuffle_buffer=shuffle_buffer)
    dataset = dataset.padded_batch(
        batch_size,
        padded_shapes=(
            {"images": [image_size, image_size, 3]},
            {"boxes": [max_objects, 4], "labels": [max_objects], "valid": [max_objects], "image_id": [],
             "image_size": [2]},
        ),
        drop_remainder=drop_remainder,
    )
    dataset = dataset.map(add_queries, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    info = OpenVocabularyInfo(
        name=str(name),
        query_names=query_names,
        seen_names=[c for c in categories if c not in unseen],
        unseen_names=list(unseen),
        num_examples=source.num_examples,
        image_size=image_size,
        max_objects=max_objects,
    )
    return dataset, info


def load_caption_dataset(
    split="train",
    *,
    tokenizer,
    name="shapes",
    data_dir=None,
    image_size=128,
    batch_size=32,
    training=False,
    seed=0,
    shuffle_buffer=None,
    drop_remainder=None,
):
    """Builds image-caption batches `x` of the `shapes` dataset, for CLIP pretraining.

    Each image holds one shape and its caption names its color and shape
    ("red star"); all 48 `SHAPES_CATEGORIES` occur, unseen ones included.
    Only `shapes` images are used (64x64, the shape filling 35%-75% of the
    side), not crops of `shapes_detection`.

    - `x["images"]`: float32 `(batch, S, S, 3)` in `[0, 255]`, resized to
      `S = image_size`;
    - `x["input_ids"]`, `x["attention_mask"]`: int32 `(batch, length)`, the
      tokenized captions (`length`: the tokenizer's `sequence_length`). With
      48 captions, a batch repeats some: equal ids are equal captions
      (`CLIPContrastiveLoss` counts them all as positives).

    Args:
        split: `"train"` or `"test"`.
        tokenizer: a `CLIPTokenizer` whose end-of-text id is its largest.
        name: `"shapes"` or `"shapes/small"`, generated locally on first use.
        data_dir: TFDS data directory. Defaults to `pipeline.DEFAULT_DATA_DIR`.
        image_size: side of the square images.
        batch_size: pairs per batch.
        training: shuffle and flip the images horizontally at random.
        seed: seed of the shuffling and of the flips.
        shuffle_buffer: shuffle buffer size. Defaults to `min(10000, num_examples)`.
        drop_remainder: drop the last partial batch. Defaults to `training`.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of `x` batches and a
        `CaptionInfo`.
    """
    input_ids, attention_mask = _encode(tokenizer, SHAPES_CATEGORIES, None)
    # No boxes: max_objects is moot.
    detection._check_options(image_size, image_size, [image_size], batch_size, 0.0, 1, None, shuffle_buffer)
    if drop_remainder is None:
        drop_remainder = training
    source = _caption_source(name, split, data_dir)
    detection._check_source(source, name, split, max_objects=1, batch_size=batch_size, drop_remainder=drop_remainder)

    def example(item, pair):
        image = item["image"]
        if training:
            image = tf.image.stateless_random_flip_left_right(image, pair)
        return {
            "images": pipeline._resize(image, image_size),
            "input_ids": tf.gather(input_ids, item["label"]),
            "attention_mask": tf.gather(attention_mask, item["label"]),
        }

    dataset = detection._examples(source, example, training=training, seed=seed, shuffle_buffer=shuffle_buffer)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    info = CaptionInfo(
        name=str(name),
        captions=list(SHAPES_CATEGORIES),
        num_examples=source.num_examples,
        image_size=image_size,
        sequence_length=int(input_ids.shape[-1]),
    )
    return dataset, info


def _check_categories(categories, unseen):
    """`(categories, unseen)` as tuples of str, checked."""
    if isinstance(categories, str) or not isinstance(categories, (list, tuple)) or not categories:
        raise ValueError(f"categories must be a non-empty list of category names, got {categories!r}; "
                         f"e.g. SHAPES_CATEGORIES ({SHAPES_CATEGORIES[0]!r}, ...).")
    if isinstance(unseen, str) or not isinstance(unseen, (list, tuple)):
        raise ValueError(f"unseen must be a list of category names (possibly empty), got {unseen!r}; "
                         f"e.g. DEFAULT_UNSEEN {DEFAULT_UNSEEN}.")
    wrong = [c for c in [*categories, *unseen] if not isinstance(c, str) or not c.strip()][:3]
    if wrong:
        raise ValueError(f"Category names must be non-empty str; found {wrong}.")
    repeated = sorted({c for c in categories if categories.count(c) > 1})
    if repeated:
        raise ValueError(f"categories lists {repeated} more than once; each category is one query.")
    missing = [c for c in unseen if c not in categories]
    if missing:
        raise ValueError(f"The unseen categories {missing} are not in categories; hold out some of "
                         f"{list(categories)[:8]}{'...' if len(categories) > 8 else ''}.")
    return tuple(categories), tuple(dict.fromkeys(unseen))


def _query_mode(queries, training):
    if queries is None:
        return "seen" if training else "all"
    if queries not in QUERY_MODES:
        raise ValueError(f"queries={queries!r}: pass 'seen' (the categories not held out, for training) or "
                         "'all' (every category, for evaluation).")
    return queries


def _encode(tokenizer, texts, length):
    """int32 `(input_ids, attention_mask)` `(len(texts), length)` of `texts`, as OWL-ViT and CLIP read them."""
    if tokenizer is None or not callable(tokenizer) or not hasattr(tokenizer, "sequence_length"):
        raise ValueError(
            f"tokenizer={tokenizer!r}: pass a keras_vit.data.CLIPTokenizer to encode the "
            "category names, e.g. train_clip_tokenizer(SHAPES_CATEGORIES) or "
            "CLIPTokenizer.from_directory(...) (keras_vit.data.tokenizer)."
        )
    if length is not None and tokenizer.sequence_length != length:
        raise ValueError(
            f"The tokenizer encodes {tokenizer.sequence_length} tokens per text, but the detector's text "
            f"tower reads query_length={length} (OWL-ViT: 16). Build the tokenizer with "
            f"sequence_length={length}, or pass the detector's query_length."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        try:
            encoded = tokenizer(list(texts))
        except UserWarning as e:
            raise ValueError(f"Category names must fit in the tokenizer's {tokenizer.sequence_length} tokens: "
                             f"{e}") from None
    input_ids = np.asarray(encoded["input_ids"], np.int32)
    attention_mask = np.asarray(encoded["attention_mask"], np.int32)
    ends = attention_mask.sum(axis=-1) - 1
    wrong = [text for text, end, top in zip(texts, ends, input_ids.argmax(axis=-1)) if end != top][:3]
    if wrong:
        raise ValueError(
            f"The tokenizer's last id of {wrong} is not the largest id of the text: CLIP and OWL-ViT pool the "
            "text at its largest id, which must be <|endoftext|>'s. Use a CLIP vocabulary "
            "(train_clip_tokenizer lays one out so) and category names without <|endoftext|>."
        )
    return tf.constant(input_ids), tf.constant(attention_mask)


def _query_of_class(class_names, categories, query_names, name):
    """int32 `(classes,)`: each dataset class's index in `query_names`, -1 if not queried."""
    unknown = [c for c in categories if c not in class_names]
    if unknown:
        if detection._dataset_name(name) in _LABEL_FEATURES:
            known = f"each is '<color> <shape>' of the colors {shapes.COLOR_NAMES} and shapes {shapes.SHAPE_NAMES}"
        else:
            known = f"its class names are {list(class_names)}"
        raise ValueError(f"The categories {unknown[:5]} are not categories of {name!r}: {known}. "
                         "Pass categories among them.")
    index = {category: i for i, category in enumerate(query_names)}
    return tf.constant([index.get(c, -1) for c in class_names], tf.int32)


def _keep_queried(item, query_of_class):
    """Labels `item`'s objects by their query; leaves out those of no query."""
    labels = tf.gather(query_of_class, item["labels"])
    keep = labels >= 0
    return {**item, "boxes": tf.boolean_mask(item["boxes"], keep), "labels": tf.boolean_mask(labels, keep)}


def _caption_source(name, split, data_dir):
    """`shapes`' records as a `detection._Source` of `image` uint8 and `label`, the caption's index."""
    if detection._dataset_name(name) != shapes.Shapes.name:
        raise ValueError(f"load_caption_dataset reads the offline 'shapes' dataset ('shapes' or "
                         f"'shapes/small'), got name={name!r}.")
    builder = tfds.builder(name, data_dir=data_dir or pipeline.DEFAULT_DATA_DIR)
    if not builder.is_prepared():
        builder.download_and_prepare()  # Generated locally: nothing is downloaded.
    split = pipeline._resolve_split(name, split, list(builder.info.splits))
    features = builder.info.features
    classes = {key: features[key] for key in _CAPTION_FEATURES}  # Color-major, as SHAPES_CATEGORIES.

    def load(record):
        return {"image": pipeline._decode(record["image"]), "label": detection._combined_label(record, classes)}

    return detection._Source(
        records=builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()},
                                   read_config=tfds.ReadConfig(try_autocache=False)),  # as pipeline.py
        load=load,
        class_names=list(SHAPES_CATEGORIES),
        num_examples=builder.info.splits[split].num_examples,
    )
