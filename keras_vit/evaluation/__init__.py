"""Evaluating models: their cost (parameters, multiply-adds, attention memory) per image,
classification metrics on a dataset, predictions and attention maps on image files, and
detection post-processing, COCO mAP and drawings.

The prediction and detection functions load on first use, since they pull in TensorFlow's
image ops or pycocotools (`keras-vit info` imports `measure` alone).
"""

import importlib

from keras_vit.evaluation.classification import ClassificationReport, evaluate_classifier, plot_confusion_matrix
from keras_vit.evaluation.complexity import Complexity, measure

_PREDICT = (
    "attention_maps", "attention_rollout", "list_image_files", "load_images", "predict_images", "save_attention_overlay",
    "swin_attention",
)
_DETECTION = (
    "CocoEvaluationCallback", "DetectionEvaluator", "detection_records", "draw_detections", "evaluate_detector",
    "plot_validation_predictions", "post_process_detections", "post_process_open_vocabulary", "save_prediction_grid",
    "write_detections_json",
)
_COCO_METRICS = ("CocoGroundTruth", "coco_evaluate", "ground_truth_from_batch")
_DETECT = ("detect_images", "load_detection_images")


def __getattr__(name):
    if name in _PREDICT:
        return getattr(importlib.import_module("keras_vit.evaluation.predict"), name)
    if name in _DETECTION:
        return getattr(importlib.import_module("keras_vit.evaluation.detection"), name)
    if name in _DETECT:
        return getattr(importlib.import_module("keras_vit.evaluation.detect"), name)
    if name in _COCO_METRICS:
        return getattr(importlib.import_module("keras_vit.evaluation.coco_metrics"), name)
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
    *_DETECTION,
    *_COCO_METRICS,
    *_DETECT,
]
