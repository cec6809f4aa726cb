"""Checkpoint readers: transformers directories, timm state dicts, Keras weights.

Generic machinery only: safetensors reading, `WeightMap` (all mismatches in one
error), the converter registry and the dispatch below. Each model family
registers its own converters (`keras_vit/applications/<family>/convert.py`).
Everything reads local files; nothing is downloaded. Pickles are never loaded.
"""

import os

from keras_vit.convert import timm, transformers
from keras_vit.convert.keras_weights import load_keras_weights
from keras_vit.convert.registry import (
    TimmConverter,
    TransformersConverter,
    register_converter,
    supported_checkpoints,
)
from keras_vit.convert.timm import load_timm_checkpoint
from keras_vit.convert.transformers import load_transformers_checkpoint
from keras_vit.convert.weight_map import WeightMap, read_safetensors


def load_weights(model, path, allow_resize=False, family=None):
    """Loads a local checkpoint into a keras-vit model built with the same architecture.

    `path` may be a transformers `save_pretrained` directory, a timm
    `.safetensors` state dict, or a Keras `.weights.h5` file. Each must match
    the model exactly: any missing, unexpected or mis-shaped weight is a
    ValueError listing them all, and nothing is assigned. The model's
    head is filled only if it has one (a headless model skips the checkpoint's head).
    `allow_resize` lets Swin relative position tables trained with another
    window size be interpolated; without it that mismatch is a ValueError.
    (ViT position embeddings of transformers and timm checkpoints are always
    interpolated; a `.weights.h5` file is read as saved, so build the model at
    the file's image size and window size.)
    `family` ("vit", "swin", ...: the constructors pass their own) picks the
    converter; without it, the checkpoint's own kind decides.
    """
    path = os.fspath(path)
    include_top = any(layer.name == "head" for layer in model.layers)
    if os.path.isdir(path):
        transformers.load_into(model, path, include_top=include_top, allow_resize=allow_resize, family=family)
    elif path.endswith(".safetensors"):
        timm.load_into(model, path, include_top=include_top, allow_resize=allow_resize, family=family)
    elif path.endswith(".weights.h5"):
        load_keras_weights(model, path, include_top=include_top)
    elif not os.path.exists(path):
        raise ValueError(f"weights={path!r}: no such file or directory. Pass None or a local checkpoint path.")
    else:
        raise ValueError(
            f"weights={path!r} is not a supported checkpoint: expected a transformers save_pretrained "
            "directory, a timm .safetensors file or a Keras .weights.h5 file."
        )


__all__ = [
    "TimmConverter",
    "TransformersConverter",
    "WeightMap",
    "load_keras_weights",
    "load_timm_checkpoint",
    "load_transformers_checkpoint",
    "load_weights",
    "read_safetensors",
    "register_converter",
    "supported_checkpoints",
]
