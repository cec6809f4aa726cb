"""Predictions and attention maps of a trained classifier on image files.

`list_image_files` expands files and folders into image paths, `load_images`
preprocesses them exactly as `keras_vit.data.load_dataset(training=False)`
does (decode, central crop, antialiased resize), `predict_images` returns each
image's top classes, and `attention_rollout` / `save_attention_overlay` show
where a ViT looks (Abnar & Zuidema, 2020).
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_vit.data import pipeline
from keras_vit.evaluation.classification import save_figure
from keras_vit.layers import MultiHeadSelfAttention, PatchEmbedding, TransformerBlock

_HEADER_BYTES = 12  # Enough for every format `pipeline._is_image_header` knows.


def list_image_files(paths):
    """Image paths from files and folders.

    A folder is searched recursively (names starting with "." skipped, files
    with an extension of `pipeline.IMAGE_EXTENSIONS`, sorted); a file is taken
    as given. Every path is checked by its first bytes (JPEG, PNG, GIF, BMP).

    Args:
        paths: a path or a list of paths of image files and folders.

    Returns a list of paths, each once, in the order given.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found += _folder_images(path)
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise ValueError(f"{path!r}: no such file or folder. Pass image files or folders holding images.")
    for path in found:
        _check_header(path)
    return list(dict.fromkeys(found))


def _folder_images(folder):
    """Sorted image paths under `folder` (recursive, following links once); ValueError when none."""
    images, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link loop or a second link to a listed folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        images += [
            os.path.join(root, name)
            for name in files
            if not name.startswith(".") and name.lower().endswith(pipeline.IMAGE_EXTENSIONS)
        ]
    if not images:
        raise ValueError(
            f"Folder {folder!r} holds no images (searched recursively for {', '.join(pipeline.IMAGE_EXTENSIONS)}; "
            "hidden names skipped). Pass a folder with images, or the image files themselves."
        )
    return sorted(images)


def _check_header(path):
    """ValueError when `path` does not start like a JPEG, PNG, GIF or BMP file."""
    try:
        with open(path, "rb") as file:
            header = file.read(_HEADER_BYTES)
    except OSError as error:
        raise ValueError(f"{path!r} cannot be read ({error.strerror or error}). Check its permissions.") from None
    if not pipeline._is_image_header(header):
        what = f"starts with {header[:4]!r}" if header else "is empty"
        raise ValueError(
            f"{path!r} is not an image: it {what}, where a JPEG, PNG, GIF or BMP file was expected. "
            "Remove it from the paths, or convert it to JPEG or PNG."
        )


def load_images(paths, image_size, eval_crop_fraction=0.875):
    """Decodes and preprocesses image files as `load_dataset(training=False)` does.

    Each image is decoded to RGB, cropped to its central square of side
    `eval_crop_fraction * min(height, width)` and resized (bilinear,
    antialiased) to `image_size`.

    Args:
        paths: image file paths (see `list_image_files`).
        image_size: side of the square output, in pixels.
        eval_crop_fraction: side of the central crop over the shorter side, in (0, 1].

    Returns float32 `(len(paths), image_size, image_size, 3)` in [0, 255].
    """
    _check_size_and_crop(image_size, eval_crop_fraction)
    images = np.zeros((len(paths), image_size, image_size, 3), np.float32)
    for index, path in enumerate(paths):
        images[index] = _load_image(os.fspath(path), image_size, eval_crop_fraction)
    return images


def _check_size_and_crop(image_size, eval_crop_fraction):
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}: pass the model's input side.")
    if not 0 < eval_crop_fraction <= 1:
        raise ValueError(
            f"eval_crop_fraction must be in (0, 1], got {eval_crop_fraction!r}. Use 1.0 to keep the whole image."
        )


def _load_image(path, image_size, eval_crop_fraction):
    """float32 `(image_size, image_size, 3)`: the pipeline's decode and center crop of one file."""
    try:
        image = pipeline._decode(tf.io.read_file(path))
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        raise ValueError(
            f"{path!r} could not be decoded as an image ({error.message.splitlines()[0]}). "
            "Check that the file is a complete JPEG, PNG, GIF or BMP image."
        ) from None
    return pipeline._center_crop(image, int(image_size), float(eval_crop_fraction)).numpy()


def predict_images(
    model,
    paths,
    class_names,
    image_size,
    eval_crop_fraction=0.875,
    top_k=5,
    batch_size=32,
    progress=True,
):
    """The `top_k` classes of each image, most probable first.

    Args:
        model: a classifier mapping `(batch, image_size, image_size, 3)` raw
            pixels in [0, 255] to `(batch, classes)` logits, or probabilities
            when it ends with a softmax.
        paths: image files and folders (see `list_image_files`).
        class_names: the name of each model output, in order.
        image_size, eval_crop_fraction: the preprocessing (see `load_images`).
        top_k: classes listed per image (at most the number of classes).
        batch_size: images per model call.
        progress: show a progress bar when there is more than one batch.

    Returns a list with one dict per image:
        `{"path": str, "top": [{"class": str, "probability": float}, ...]}`.
    """
    _check_predict_options(model, class_names, top_k, batch_size)
    _check_size_and_crop(image_size, eval_crop_fraction)
    files = list_image_files(paths)
    batches = range(0, len(files), batch_size)
    bar = keras.utils.Progbar(len(files), unit_name="image") if progress and len(batches) > 1 else None
    results = []
    for start in batches:
        chunk = files[start : start + batch_size]
        probabilities = predict_probabilities(model, load_images(chunk, image_size, eval_crop_fraction))
        results += [_top_classes(path, row, class_names, top_k) for path, row in zip(chunk, probabilities)]
        if bar is not None:
            bar.update(len(results))
    return results


def _check_predict_options(model, class_names, top_k, batch_size):
    outputs = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if outputs is not None and outputs != len(class_names):
        raise ValueError(
            f"The model has {outputs} outputs but {len(class_names)} class names were given: "
            "pass one class name per output, in order."
        )
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")


def predict_probabilities(model, images):
    """Class probabilities `(batch, classes)` of images `(batch, size, size, 3)`: the
    model's outputs when it ends with a softmax, else the softmax of its logits."""
    outputs = np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(images)), np.float64)
    if outputs_are_probabilities(model, outputs):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def outputs_are_probabilities(model, outputs=None):
    """Whether `model` ends with a softmax: read from its last layer's activation
    (a Dense head, an Activation or a Softmax layer); for other last layers,
    whether `outputs` are non-negative rows summing to 1."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    if activation is not None:
        return getattr(activation, "__name__", "") == "softmax"
    if outputs is None:
        return False
    outputs = np.asarray(outputs)
    return bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))


def _top_classes(path, probabilities, class_names, top_k):
    order = np.argsort(-probabilities, kind="stable")[: min(top_k, len(class_names))]
    top = [{"class": str(class_names[i]), "probability": float(probabilities[i])} for i in order]
    return {"path": path, "top": top}


def attention_rollout(model, images, batch_size=32):
    """Attention rollout (Abnar & Zuidema, 2020) of a ViT over its patch grid.

    For each block the attention weights are averaged over heads, the
    identity is added (the residual) and rows renormalized; the per-block
    matrices are multiplied from the first block to the last. The map is the
    class token's row over the patch tokens, or for models without a class
    token (average or max pooling) the mean of all tokens' rows. Each map is
    then scaled to [0, 1] by its minimum and maximum (a constant map is all ones).

    Args:
        model: a ViT or ResNet+ViT hybrid (a functional model whose
            `TransformerBlock`s with `MultiHeadSelfAttention` form a chain).
            Swin and ResNet models have no global attention and are refused.
        images: float32 `(n, height, width, 3)` in the model's input range.
        batch_size: images per forward pass.

    Returns float32 `(n, grid_height, grid_width)` in [0, 1].
    """
    blocks, embedding = _vit_parts(model)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    prefix = keras.Model(inputs, blocks[0].input, name="attention_rollout_prefix")
    images = np.asarray(images, np.float32)
    maps = []
    for start in range(0, len(images), batch_size):
        scores = _block_attention(prefix, blocks, images[start : start + batch_size])
        maps.append(rollout(scores, embedding.num_prefix_tokens, embedding.grid_size))
    if not maps:
        return np.zeros((0, *embedding.grid_size), np.float32)
    return np.concatenate(maps)


def attention_maps(model, images, batch_size=32):
    """What a model looks at, `(n, grid_height, grid_width)` in [0, 1]: `attention_rollout` for ViT
    models, `swin_attention` for Swin; a ValueError for models without attention over the image."""
    if _swin_blocks(model):
        return swin_attention(model, images, batch_size)
    return attention_rollout(model, images, batch_size)


def attention_map_kind(model):
    """What `attention_maps` computes for `model`: "last-stage attention" (Swin) or "attention rollout"."""
    return "last-stage attention" if _swin_blocks(model) else "attention rollout"


def swin_attention(model, images, batch_size=32):
    """The attention the last Swin block pays to each position of its feature map: its window
    attention weights averaged over heads and queries, put back on the map (windows reversed,
    the shift undone), then scaled to [0, 1] per image. Returns `(n, height, width)` of the last
    stage's map (7x7 for Swin-T at 224 px, where the last stage is one window)."""
    blocks = _swin_blocks(model)
    if not blocks:
        raise ValueError(f"{model.name!r} has no Swin blocks; attention_maps handles ViT and Swin models.")
    block = blocks[-1]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    prefix = keras.Model(inputs, block.input, name="swin_attention_prefix")
    images = np.asarray(images, np.float32)
    maps = []
    for start in range(0, len(images), batch_size):
        x = prefix(images[start : start + batch_size], training=False)
        _, scores = block(x, training=False, return_attention_scores=True)
        maps.append(_received_attention(block.attention, keras.ops.convert_to_numpy(scores), x.shape[1:3]))
    return np.concatenate(maps) if maps else np.zeros((0, *block.input.shape[1:3]), np.float32)


def _received_attention(window_attention, scores, size):
    """`(batch, height, width)` of window weights `(batch * windows, heads, M^2, M^2)`, scaled to [0, 1]."""
    m, shift = window_attention.effective_window, window_attention.effective_shift
    padded_h, padded_w = window_attention.padded_size
    received = np.asarray(scores, np.float64).mean(axis=(1, 2))  # (batch * windows, M^2)
    rows, cols = padded_h // m, padded_w // m
    grid = received.reshape(-1, rows, cols, m, m).transpose(0, 1, 3, 2, 4).reshape(-1, padded_h, padded_w)
    grid = np.roll(grid, (shift, shift), axis=(1, 2))[:, : size[0], : size[1]]
    low = grid.min(axis=(1, 2), keepdims=True)
    spread = grid.max(axis=(1, 2), keepdims=True) - low
    return np.where(spread > 0, (grid - low) / np.where(spread > 0, spread, 1.0), 1.0).astype(np.float32)


def _swin_blocks(model):
    from keras_vit.applications.swin.block import SwinTransformerBlock

    return [layer for layer in getattr(model, "layers", []) if isinstance(layer, SwinTransformerBlock)]


def _vit_parts(model):
    """`(blocks, patch_embedding)` of a ViT-like functional model; ValueError otherwise."""
    blocks = [
        layer for layer in model.layers
        if isinstance(layer, TransformerBlock) and isinstance(layer.attention, MultiHeadSelfAttention)
    ]
    embeddings = [layer for layer in model.layers if isinstance(layer, PatchEmbedding)]
    if not blocks or len(embeddings) != 1 or not isinstance(model, keras.Model) or not model.inputs:
        raise ValueError(
            f"Attention maps are available for ViT models (and the ResNet+ViT hybrids): {model.name!r} has "
            f"{len(blocks)} global self-attention blocks and {len(embeddings)} patch embeddings. For Swin, "
            "attention_maps / swin_attention give the last stage's attention; the ResNet family has none."
        )
    for previous, block in zip(blocks, blocks[1:]):
        if block.input is not previous.output:
            raise ValueError(
                f"Attention rollout needs the transformer blocks of {model.name!r} to form a chain, but "
                f"{block.name!r} does not take {previous.name!r}'s output. Build the model with "
                "keras_vit.applications.VisionTransformer."
            )
    return blocks, embeddings[0]


def _block_attention(prefix, blocks, images):
    """Per-block attention weights, each float64 `(batch, heads, tokens, tokens)`."""
    x = prefix(images, training=False)
    scores = []
    for block in blocks:
        x, weights = block(x, training=False, return_attention_scores=True)
        scores.append(np.asarray(keras.ops.convert_to_numpy(weights), np.float64))
    return scores


def rollout(scores, num_prefix_tokens, grid_size):
    """Rollout maps `(batch, grid_h, grid_w)` from per-block weights `(batch, heads, tokens, tokens)`."""
    batch, _, tokens, _ = scores[0].shape
    joint = np.broadcast_to(np.eye(tokens), (batch, tokens, tokens))
    for weights in scores:
        mixed = weights.mean(axis=1) + np.eye(tokens)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        joint = mixed @ joint
    rows = joint[:, 0] if num_prefix_tokens else joint.mean(axis=1)
    maps = rows[:, num_prefix_tokens:].reshape(batch, *grid_size)
    low = maps.min(axis=(1, 2), keepdims=True)
    spread = maps.max(axis=(1, 2), keepdims=True) - low
    scaled = np.where(spread > 0, (maps - low) / np.where(spread > 0, spread, 1.0), 1.0)
    return scaled.astype(np.float32)


def save_attention_overlay(image, attention, path, title="", kind="attention rollout"):
    """Writes a PNG of `image` beside the image with `attention` overlaid (jet, alpha 0.5).

    Args:
        image: `(height, width, 3)` pixels in [0, 255].
        attention: `(grid_h, grid_w)` map in [0, 1] (see `attention_rollout`),
            upsampled bilinearly to the image size.
        path: the PNG to write.
        title: optional figure title.
    """
    image = np.asarray(image, np.float32)
    attention = np.asarray(attention, np.float32)
    if image.ndim != 3 or attention.ndim != 2:
        raise ValueError(
            f"save_attention_overlay takes one image (height, width, 3) and one map (grid_h, grid_w), "
            f"got shapes {image.shape} and {attention.shape}; index the batch first."
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    upsampled = tf.image.resize(attention[..., None], image.shape[:2], method="bilinear").numpy()[..., 0]
    pixels = np.clip(image / 255.0, 0.0, 1.0)
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 4.3))
    try:
        left.imshow(pixels)
        left.set_title("image")
        right.imshow(pixels)
        right.imshow(upsampled, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        right.set_title(kind)
        for axes in (left, right):
            axes.axis("off")
        if title:
            figure.suptitle(title)
        save_figure(figure, path)
    finally:
        plt.close(figure)
    return path
