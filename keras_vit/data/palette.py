"""The iGPT colour palette (Chen et al., 2020): k-means centres of RGB pixels scaled to [-1, 1].

A pixel's token is the index of its nearest centre (squared Euclidean distance, ties to the lower
index); an image becomes its tokens in raster order, `(H, W, 3) -> (H * W,)`. Token id `K` (the
palette size) is the start-of-sequence id and, for the masked objective, the mask id.

```python
palette = fit_palette(images, clusters=512)  # uint8 (N, H, W, 3) -> float32 (512, 3)
save_palette("palette.npy", palette)
tokens = quantize_tf(images, load_palette("palette.npy"))  # int32 (N, H * W)
```

Images given to this module are RGB in [0, 255] (uint8, or float as `load_dataset` yields them);
`keras_vit.ops.quantize` / `dequantize` are the backend-neutral versions for models (float images
there are in [-1, 1]).
"""

import warnings

import numpy as np
import tensorflow as tf

from keras_vit.data.files import atomic_path

# ITU-R BT.601 luma weights: the palette is sorted by luma, then R, G, B.
_LUMA = np.array([0.299, 0.587, 0.114])
# Pixels of the sample that seed k-means++ (the sample is in random order).
_INIT_PIXELS = 50_000
# Pixels read at once from a NumPy array (bounds the memory of the sampling keys).
_CHUNK_PIXELS = 1 << 20
# Palette values may exceed [-1, 1] by this much (float rounding); they are clipped.
_RANGE_TOLERANCE = 1e-5


def fit_palette(images, clusters=512, max_pixels=200_000, seed=0):
    """Fits a palette of `clusters` colours to the pixels of `images` with k-means.

    At most `max_pixels` pixels are used: a uniform sample without replacement drawn with
    `seed` (the same images, batch order and seed give the same palette). The fit is
    scikit-learn's `KMeans(n_init=1)`: exact Lloyd iterations on the whole sample, from a
    k-means++ start drawn on 50k of its pixels (on all 200k, that start alone took over half
    the time for the same error). Measured on 200k pixels of natural images (scikit-learn's
    sample images), 512 clusters, 2 busy CPU cores: 8-10 s, against 20-24 s for a k-means++
    start on all pixels and 1-7 s for `MiniBatchKMeans` (batch 4096), whose centres had a 4%
    higher mean squared error on held-out pixels. A palette is fitted once per dataset, so
    the slower, better fit is the default.

    When the sample holds no more distinct colours than `clusters` (a synthetic or flat-colour
    dataset), k-means has nothing to fit: the palette is those colours, exactly, each repeated
    in turn to fill `clusters` rows, and a warning says so. A repeated row is never a token
    (`quantize` takes the lower index on ties), so the vocabulary keeps its size; pass
    `clusters` equal to the number of distinct colours for a palette without repeats.

    Args:
        images: RGB values in [0, 255] with 3 channels last, uint8 or float, e.g. a
            `(N, H, W, 3)` array; or an iterable of such batches (a batch may be an
            `(images, labels)` pair, as `load_dataset`'s, of which the images are used).
        clusters: number of colours, `K`.
        max_pixels: most pixels fitted.
        seed: seed of the pixel sample and of k-means.

    Returns:
        float32 `(clusters, 3)` centres in [-1, 1], sorted by luma (then R, G, B).
    """
    _check_count("clusters", clusters, "e.g. clusters=512 (iGPT)")
    _check_count("max_pixels", max_pixels, "e.g. max_pixels=200_000")
    if max_pixels < clusters:
        raise ValueError(
            f"max_pixels={max_pixels} is smaller than clusters={clusters}: k-means needs at least "
            "one pixel per cluster. Pass max_pixels >= clusters (e.g. 200_000)."
        )
    pixels = _sample_pixels(images, max_pixels, seed)
    distinct = np.unique(pixels, axis=0)
    if len(distinct) <= clusters:
        if len(distinct) < clusters:
            warnings.warn(
                f"The sampled pixels hold {len(distinct)} distinct colours, fewer than "
                f"clusters={clusters}: the palette is those colours, repeated to fill {clusters} "
                f"rows (repeats are never chosen as tokens). Pass clusters={len(distinct)} for a "
                "palette without repeats.",
                stacklevel=2,
            )
        centres = np.resize(distinct, (clusters, 3))
    else:
        from sklearn.cluster import KMeans, kmeans_plusplus  # here: sklearn is slow to import

        # k-means++ on a random part of the sample: it costs clusters x trials x pixels distances
        # and dominated the time on 200k pixels; Lloyd then runs on the whole sample.
        head = pixels[:_INIT_PIXELS]
        if len(head) < len(pixels) and len(np.unique(head, axis=0)) <= clusters:
            head = pixels
        start, _ = kmeans_plusplus(head, clusters, random_state=seed)
        kmeans = KMeans(n_clusters=clusters, init=start, n_init=1, random_state=seed).fit(pixels)
        centres = kmeans.cluster_centers_
    centres = np.clip(centres, -1.0, 1.0).astype(np.float32)
    return _sort_by_luma(centres)


def save_palette(path, palette):
    """Writes `palette` (float `(K, 3)` in [-1, 1]) to the `.npy` file `path`, atomically.

    The file is written next to `path` and then renamed, so a reader never sees a partial
    palette. `path` is used as given (no `.npy` is appended). Returns `path`.
    """
    palette = _check_palette(palette, f"The palette given to save_palette({str(path)!r})")
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.save(file, palette)
    return path


def load_palette(path):
    """Reads a palette `.npy` file: float32 `(K, 3)` in [-1, 1].

    Any such file works, e.g. the original iGPT `kmeans_centers.npy`. Its rows are kept in
    their order (token `i` is row `i`). A ValueError names the file when it is not a palette.
    """
    try:
        palette = np.load(path, allow_pickle=False)
    except ValueError as error:  # not an .npy file (a missing file raises FileNotFoundError)
        raise ValueError(
            f"Cannot read the palette file {str(path)!r} as a NumPy .npy array ({error}). "
            "Write palettes with keras_vit.data.save_palette (or np.save)."
        ) from error
    return _check_palette(palette, f"Palette file {str(path)!r}")


def quantize_tf(images, palette):
    """Tokens of `images`: the index of each pixel's nearest palette colour, in raster order.

    TensorFlow only, so it runs in `tf.data.Dataset.map`. The distance is
    `|c|^2 - 2 x.c` (the squared distance less `|x|^2`, the same for every centre, so the
    nearest centre is the same) in float32, on the CPU (a GPU may run a float32 matmul in
    TF32); ties go to the lower index. It needs `(H * W, K)` floats per image.

    Args:
        images: `(..., H, W, 3)` RGB, uint8 or float in [0, 255].
        palette: float `(K, 3)` in [-1, 1].

    Returns:
        int32 tokens `(..., H * W)` in [0, K).
    """
    palette = _check_palette(palette, "The palette given to quantize_tf")
    images = tf.convert_to_tensor(images)
    _check_image_shape(images.shape, "quantize_tf")
    with tf.device("/CPU:0"):
        pixels = tf.cast(images, tf.float32) / 127.5 - 1.0
        shape = tf.shape(images)
        flat = tf.reshape(pixels, (-1, 3))
        norms = tf.constant(np.sum(np.square(palette), axis=-1))
        scores = norms - 2.0 * tf.matmul(flat, palette, transpose_b=True)
        tokens = tf.argmin(scores, axis=-1, output_type=tf.int32)
        tokens = tf.reshape(tokens, tf.concat([shape[:-3], [shape[-3] * shape[-2]]], axis=0))
    if images.shape.rank is None:
        return tokens
    height, width = images.shape[-3], images.shape[-2]
    length = height * width if height is not None and width is not None else None
    return tf.ensure_shape(tokens, images.shape[:-3].concatenate([length]))


def quantize_numpy(images, palette):
    """NumPy `quantize_tf`: `(..., H, W, 3)` RGB in [0, 255] -> int32 `(..., H * W)` tokens.

    Exact squared distances in float32 (per channel, no cancellation), ties to the lower index.
    """
    palette = _check_palette(palette, "The palette given to quantize_numpy")
    images = np.asarray(images)
    _check_image_shape(images.shape, "quantize_numpy")
    pixels = _scale(images).reshape(images.shape[:-3] + (-1, 1, 3))
    distances = sum(np.square(pixels[..., c] - palette[:, c]) for c in range(3))
    return np.argmin(distances, axis=-1).astype(np.int32)


def _check_count(name, value, example):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}; {example}.")


def _scale(images):
    """RGB in [0, 255] -> float32 in [-1, 1], with the operations `quantize_tf` uses."""
    return np.asarray(images, np.float32) / np.float32(127.5) - np.float32(1.0)


def _check_image_shape(shape, caller):
    shape = tf.TensorShape(shape)
    if shape.rank is not None and (shape.rank < 3 or shape[-1] not in (3, None)):
        raise ValueError(
            f"{caller} expects RGB images of shape (..., height, width, 3), got shape "
            f"{tuple(shape.as_list())}. Convert grayscale or RGBA images to RGB first."
        )


def _batches(images):
    """The images as NumPy batches of at most about `_CHUNK_PIXELS` pixels each."""
    if isinstance(images, np.ndarray) or hasattr(images, "shape"):
        images = np.asarray(images)
        if images.ndim < 2:
            yield images
            return
        per_item = max(1, int(np.prod(images.shape[1:-1])))
        step = max(1, _CHUNK_PIXELS // per_item)
        for start in range(0, len(images), step):
            yield images[start : start + step]
        return
    for batch in images:
        if isinstance(batch, (tuple, list)) and batch and not np.isscalar(batch[0]):
            batch = batch[0]  # (images, labels)
        yield np.asarray(batch)


def _sample_pixels(images, max_pixels, seed):
    """A seeded uniform sample of at most `max_pixels` pixels, float32 `(n, 3)` in [-1, 1].

    Bottom-k sampling: each pixel gets a random key and the `max_pixels` smallest keys are
    kept, so memory stays bounded however many batches `images` yields.
    """
    rng = np.random.default_rng(seed)
    kept_keys = np.zeros((0,))
    kept = np.zeros((0, 3), np.uint8)
    total = 0
    for batch in _batches(images):
        if batch.ndim < 1 or batch.shape[-1] != 3:
            raise ValueError(
                f"fit_palette expects RGB pixels with 3 channels last, e.g. (N, H, W, 3) images, "
                f"got a batch of shape {batch.shape}. Convert grayscale or RGBA images to RGB first."
            )
        if batch.dtype == bool or not np.issubdtype(batch.dtype, np.number):
            raise ValueError(f"fit_palette expects numeric RGB values in [0, 255], got dtype {batch.dtype}.")
        pixels = batch.reshape(-1, 3)
        if pixels.size and (not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 255):
            raise ValueError(
                f"fit_palette expects RGB values in [0, 255], got values from {pixels.min()} to "
                f"{pixels.max()}. Scale float images in [0, 1] by 255 (images in [-1, 1]: "
                "(x + 1) * 127.5)."
            )
        total += len(pixels)
        keys = rng.random(len(pixels))
        if len(pixels) > max_pixels:
            chosen = np.argpartition(keys, max_pixels - 1)[:max_pixels]
            keys, pixels = keys[chosen], pixels[chosen]
        kept_keys = np.concatenate([kept_keys, keys])
        kept = np.concatenate([kept, pixels])
        if len(kept_keys) > max_pixels:
            chosen = np.argpartition(kept_keys, max_pixels - 1)[:max_pixels]
            kept_keys, kept = kept_keys[chosen], kept[chosen]
    if total == 0:
        raise ValueError("fit_palette got no pixels: the images (or every batch) are empty.")
    order = np.argsort(kept_keys, kind="stable")  # a canonical order for k-means++
    return _scale(kept[order])


def _sort_by_luma(palette):
    red, green, blue = palette.astype(np.float64).T
    order = np.lexsort((blue, green, red, palette.astype(np.float64) @ _LUMA))
    return palette[order]


def _check_palette(palette, what):
    """`palette` as float32 `(K, 3)` in [-1, 1], or a ValueError that starts with `what`."""
    palette = np.asarray(palette)
    fix = "A palette is float (K, 3): K RGB colours scaled to [-1, 1] (fit one with fit_palette)."
    if palette.ndim != 2 or palette.shape[-1] != 3 or palette.shape[0] < 1:
        raise ValueError(f"{what} has shape {palette.shape}, expected (K, 3) with K >= 1. {fix}")
    if palette.dtype == bool or not np.issubdtype(palette.dtype, np.number):
        raise ValueError(f"{what} has dtype {palette.dtype}, expected float. {fix}")
    palette = palette.astype(np.float32)
    if not np.all(np.isfinite(palette)):
        raise ValueError(f"{what} holds NaN or infinite values. {fix}")
    low, high = float(palette.min()), float(palette.max())
    if low < -1 - _RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        hint = " (values in [0, 255]: scale them with x / 127.5 - 1)" if high > 1.5 else ""
        raise ValueError(f"{what} has values from {low} to {high}, expected [-1, 1]{hint}. {fix}")
    return np.clip(palette, -1.0, 1.0)
