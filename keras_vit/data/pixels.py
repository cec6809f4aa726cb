"""tf.data pipelines of iGPT pixel tokens (Chen et al., 2020).

Images are read by `load_dataset` (the offline `shapes` datasets, prepared TFDS datasets,
folders of images), resized to `image_size` (antialiased bilinear), and each pixel becomes the
index of its nearest palette colour, in raster order: `T = image_size ** 2` tokens in [0, K).
Id `K` (the palette size) is the start-of-sequence id and the mask id, so a model's vocabulary
is `K + 1`.

```python
palette = fit_dataset_palette("cifar10", clusters=512, data_dir=data_dir)
train, info = load_pixel_dataset("cifar10", "train", palette=palette, data_dir=data_dir,
                                 shuffle=True)  # (inputs, targets): int32 (64, 1024) each
model.fit(train, ...)
```
"""

import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

from keras_vit.data.palette import _check_palette
from keras_vit.data.palette import fit_palette
from keras_vit.data.palette import load_palette
from keras_vit.data.palette import quantize_tf
from keras_vit.data.pipeline import load_dataset

OBJECTIVES = ("causal", "masked")
# The whole image is read: a crop of area 1 and aspect 1 (random resized crop when shuffling).
_WHOLE_IMAGE = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "eval_crop_fraction": 1.0}


@dataclasses.dataclass(frozen=True)
class PixelDatasetInfo:
    """Facts about the split returned by `load_pixel_dataset`.

    Attributes:
        name: the dataset name or folder path that was loaded.
        num_examples: images in the split, before batching.
        image_size: side of the square images that were quantized.
        num_tokens: tokens per image, `T = image_size ** 2`.
        palette_size: colours in the palette, `K`; tokens are in [0, K).
        vocabulary_size: `K + 1`: the colours and the start-of-sequence / mask id.
        start_id: the start-of-sequence id, `K` (first causal input).
        mask_id: the mask id of the masked objective, `K`.
        objective: `"causal"` or `"masked"`.
        num_classes: number of classes (for linear probes, `with_labels=True`).
        class_names: class names, indexed by label.
    """

    name: str
    num_examples: int
    image_size: int
    num_tokens: int
    palette_size: int
    vocabulary_size: int
    start_id: int
    mask_id: int
    objective: str
    num_classes: int
    class_names: list[str]


def load_pixel_dataset(
    dataset="shapes",
    split="train",
    *,
    palette,
    image_size=32,
    batch_size=64,
    objective="causal",
    mask_rate=0.15,
    shuffle=False,
    seed=0,
    data_dir=None,
    with_labels=False,
    max_tokens=None,
    drop_remainder=None,
    shuffle_buffer=None,
):
    """Batches of pixel tokens for generative pretraining or linear probes.

    Args:
        dataset: what `load_dataset` reads: `"shapes"`, `"shapes/small"`, a prepared TFDS
            dataset (e.g. `"cifar10"`) or a folder with one sub-folder of images per class.
        split: a split, e.g. `"train"`, `"test"`, `"train[:90%]"`.
        palette: float `(K, 3)` colours in [-1, 1], or the path of a palette `.npy` file
            (`fit_dataset_palette`, `save_palette`).
        image_size: side of the square images, `T = image_size ** 2` tokens (32 -> 1024).
        batch_size: images per batch.
        objective: `"causal"`: `(inputs, targets)`, inputs `[K, t_0, ..., t_{T-2}]` (the
            start id, then the tokens shifted right), targets the tokens. `"masked"` (iGPT's
            BERT objective): `(inputs, targets, sample_weight)`, each position masked
            independently with probability `mask_rate` (replaced by id `K` in the inputs),
            targets the tokens, and the weights 1.0 at masked positions, 0.0 elsewhere, so that
            `model.fit` trains on the masked positions only.
        mask_rate: probability that a position is masked, in (0, 1).
        shuffle: read the images as the training pipeline of `load_dataset` does: files and
            records shuffled with `seed` (again on every iteration) and images flipped
            left-right at random. The masks of `"masked"` then also change on every iteration;
            without `shuffle` the order is fixed and every iteration gives the same masks.
        seed: seed of the shuffling, the flips and the masks (with TensorFlow's global seed,
            as every `tf.data` shuffle).
        data_dir: TFDS data directory (see `load_dataset`).
        with_labels: yield `(tokens, labels)` instead, tokens int32 `(batch, T)` and labels
            int32 `(batch,)`, for linear probes (`objective` and `mask_rate` are unused).
        max_tokens: the longest sequence the model takes, or None; a larger `T` raises.
        drop_remainder: drop the last partial batch. Defaults to `shuffle`.
        shuffle_buffer: records in the shuffle buffer (see `load_dataset`).

    The whole image is used: with `shuffle`, it is resized to a square; without, its central
    square is (the same for square images such as CIFAR's).

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of int32 `(batch, T)` token batches as above
        (weights float32 `(batch, T)`), and a `PixelDatasetInfo`. Not repeated.
    """
    palette = _resolve_palette(palette)
    num_tokens = _check_options(image_size, objective, mask_rate, max_tokens)
    size = len(palette)
    if drop_remainder is None:
        drop_remainder = bool(shuffle)
    images, source = load_dataset(
        dataset, split, data_dir=data_dir, image_size=image_size, batch_size=batch_size,
        training=bool(shuffle), seed=seed, shuffle_buffer=shuffle_buffer,
        drop_remainder=drop_remainder, **_WHOLE_IMAGE,
    )
    info = PixelDatasetInfo(
        name=source.name,
        num_examples=source.num_examples,
        image_size=image_size,
        num_tokens=num_tokens,
        palette_size=size,
        vocabulary_size=size + 1,
        start_id=size,
        mask_id=size,
        objective=objective,
        num_classes=source.num_classes,
        class_names=list(source.class_names),
    )
    # One image at a time: `(T, K)` distances each, not `(batch * T, K)`.
    tokens = images.unbatch().map(
        lambda image, label: (quantize_tf(image, palette), label), num_parallel_calls=tf.data.AUTOTUNE
    )
    tokens = tokens.batch(batch_size, drop_remainder=drop_remainder)
    if with_labels:
        dataset = tokens
    elif objective == "causal":
        dataset = tokens.map(lambda batch, label: causal_inputs(batch, size), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=bool(shuffle)).batch(2)
        dataset = tf.data.Dataset.zip(tokens, seeds).map(
            lambda batch, seed_pair: masked_inputs(batch[0], size, mask_rate, seed_pair),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE), info


def causal_inputs(tokens, start_id):
    """`(inputs, targets)` of next-token prediction: inputs `[start_id, t_0, ..., t_{T-2}]`,
    targets `tokens`; int32 `(batch, T)` each."""
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    start = tf.fill(tf.stack([tf.shape(tokens)[0], 1]), tf.constant(start_id, tf.int32))
    return tf.concat([start, tokens[:, :-1]], axis=1), tokens


def masked_inputs(tokens, mask_id, mask_rate, seed):
    """`(inputs, targets, sample_weight)` of the masked (BERT) objective: each position is
    masked with probability `mask_rate` (stateless, from the int `(2,)` `seed`); inputs hold
    `mask_id` there, targets are `tokens`, the weights are the mask as float32."""
    tokens = tf.convert_to_tensor(tokens, tf.int32)
    mask = tf.random.stateless_uniform(tf.shape(tokens), seed=seed) < mask_rate
    inputs = tf.where(mask, tf.constant(mask_id, tf.int32), tokens)
    return inputs, tokens, tf.cast(mask, tf.float32)


def fit_dataset_palette(
    dataset="shapes",
    split="train",
    image_size=32,
    clusters=512,
    *,
    max_images=5000,
    max_pixels=200_000,
    seed=0,
    data_dir=None,
):
    """Fits a palette (`fit_palette`) to at most `max_images` images of a dataset split.

    The images are read in a random order (files and records shuffled, so a folder sorted by
    class still gives every class), whole, resized to `image_size` as `load_pixel_dataset`
    resizes them. The order follows `seed` and, as every `tf.data` shuffle, TensorFlow's
    global seed (`keras.utils.set_random_seed`): the same pair gives the same palette. Fit
    once and keep the palette with `save_palette`. `max_pixels` and `seed` are
    `fit_palette`'s. Returns float32 `(clusters, 3)` in [-1, 1].
    """
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise ValueError(f"max_images must be a positive integer, got max_images={max_images!r}.")
    images, _ = load_dataset(
        dataset, split, data_dir=data_dir, image_size=image_size, batch_size=min(256, max_images),
        training=True, seed=seed, drop_remainder=False, **_WHOLE_IMAGE,
    )
    images = images.map(lambda image, label: image).unbatch().take(max_images).batch(256)
    return fit_palette(images.as_numpy_iterator(), clusters=clusters, max_pixels=max_pixels, seed=seed)


def _resolve_palette(palette):
    if isinstance(palette, (str, os.PathLike)):
        return load_palette(palette)
    if palette is None:
        raise ValueError(
            "load_pixel_dataset needs a palette: a float (K, 3) array in [-1, 1] or the path of "
            "a .npy file. Fit one with keras_vit.data.fit_dataset_palette(dataset, split)."
        )
    return _check_palette(palette, "The palette given to load_pixel_dataset")


def _check_options(image_size, objective, mask_rate, max_tokens):
    """Checks the options; returns the tokens per image."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(
            f"image_size must be a positive integer (the side of the square images), got "
            f"image_size={image_size!r}. iGPT uses 32, 48 or 64."
        )
    if objective not in OBJECTIVES:
        raise ValueError(
            f"Unknown objective={objective!r}. Expected one of {OBJECTIVES}: 'causal' for "
            "next-pixel prediction, 'masked' for iGPT's BERT objective."
        )
    if isinstance(mask_rate, bool) or not isinstance(mask_rate, (int, float)) or not 0 < mask_rate < 1:
        raise ValueError(
            f"mask_rate must be a probability in (0, 1), got mask_rate={mask_rate!r}. "
            "iGPT masks 15% of the positions: mask_rate=0.15."
        )
    num_tokens = int(image_size) ** 2
    if max_tokens is not None and num_tokens > max_tokens:
        largest = math.isqrt(int(max_tokens))
        raise ValueError(
            f"image_size={image_size} gives {image_size} x {image_size} = {num_tokens} tokens per "
            f"image, more than max_tokens={max_tokens}. Pass image_size <= {largest}, or a "
            "model with a longer sequence."
        )
    return num_tokens
