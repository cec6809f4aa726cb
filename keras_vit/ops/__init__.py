"""Backend-neutral functions that several model families use: box formats, IoU / generalized IoU
and exact bipartite matching. Pure `keras.ops`: they run in compiled steps on every backend."""

from keras_vit.ops.boxes import box_area, box_iou, center_to_corners, corners_to_center, generalized_box_iou
from keras_vit.ops.matching import linear_sum_assignment
from keras_vit.ops.palette import dequantize, quantize

__all__ = [
    "box_area",
    "box_iou",
    "center_to_corners",
    "corners_to_center",
    "dequantize",
    "generalized_box_iou",
    "linear_sum_assignment",
    "quantize",
]
