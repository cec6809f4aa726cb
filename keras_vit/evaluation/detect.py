"""`keras-vit detect`: run a trained detector on image files."""

import os

import numpy as np
import tensorflow as tf

from keras_vit.evaluation.detection import post_process_detections
from keras_vit.evaluation.predict import _check_header


def read_image(path):
    """An image file as float32 `(height, width, 3)` RGB in [0, 255]; ValueError if it is no image."""
    path = os.fspath(path)
    _check_header(path)
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        raise ValueError(f"{path!r} could not be decoded as an image ({error.message.splitlines()[0]}).") from None
    return tf.cast(image, tf.float32).numpy()


def load_detection_images(paths, image_size, max_size):
    """Decodes image files and resizes each as the detection pipeline's evaluation does: shorter
    side `image_size`, longer side at most `max_size`.

    Returns `(images, sizes)`: a list of float32 `(h, w, 3)` arrays in [0, 255] and the
    original `(height, width)` of each file.
    """
    images, sizes = [], []
    for path in paths:
        image = read_image(path)
        height, width = int(image.shape[0]), int(image.shape[1])
        scale = min(image_size / min(height, width), max_size / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        images.append(tf.image.resize(image, size, antialias=True).numpy())
        sizes.append((height, width))
    return images, np.asarray(sizes, np.int32)


def pad_batch(images, pad_to=None):
    """`{"images": (n, H, W, 3), "pixel_mask": (n, H, W)}`: images padded at the bottom/right with zeros."""
    height = max(image.shape[0] for image in images) if pad_to is None else pad_to[0]
    width = max(image.shape[1] for image in images) if pad_to is None else pad_to[1]
    batch = np.zeros((len(images), height, width, 3), np.float32)
    mask = np.zeros((len(images), height, width), np.float32)
    for index, image in enumerate(images):
        batch[index, : image.shape[0], : image.shape[1]] = image
        mask[index, : image.shape[0], : image.shape[1]] = 1.0
    return {"images": batch, "pixel_mask": mask}


def detect_images(model, paths, image_size, max_size, threshold=0.5, batch_size=8):
    """`post_process_detections` of `model` on image files: one dict of pixel xyxy `boxes`,
    `scores` and `labels` per file, in the file's own pixels."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    detections = []
    for start in range(0, len(paths), batch_size):
        images, sizes = load_detection_images(paths[start:start + batch_size], image_size, max_size)
        pad_to = _fixed_size(model)
        detections += post_process_detections(model.predict_on_batch(pad_batch(images, pad_to)), sizes, threshold)
    return detections


def _fixed_size(model):
    """`(height, width)` of a model built for one image size, None for any size."""
    shapes = model.input_shape
    shapes = list(shapes.values()) if isinstance(shapes, dict) else shapes if isinstance(shapes, list) else [shapes]
    height, width = next(shape for shape in shapes if len(shape) == 4)[1:3]
    return None if height is None or width is None else (height, width)
