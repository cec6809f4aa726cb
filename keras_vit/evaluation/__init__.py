"""Evaluating models: their cost (parameters, multiply-adds, attention memory) per image,
classification metrics on a dataset, and predictions and attention maps on image files.

The prediction functions load on first use, since they pull in TensorFlow's image ops
(`keras-vit info` imports `measure` alone).
"""

import importlib

from keras_vit.evaluation.classification import ClassificationReport, evaluate_classifier, plot_confusion_matrix
from keras_vit.evaluation.complexity import Complexity, measure

_PREDICT = (
    "attention_maps", "attention_rollout", "list_image_files", "load_images", "predict_images", "save_attention_overlay",
    "swin_attention",
)


def __getattr__(name):
    if name in _PREDICT:
        return getattr(importlib.import_module("keras_vit.evaluation.predict"), name)
    raise AttributeError(f"module 'keras_vit.evaluation' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


__all__ = [
    "ClassificationReport",
    "Complexity",
    "evaluate_classifier",
    "measure",
    "plot_confusion_matrix",
    *_PREDICT,
]
