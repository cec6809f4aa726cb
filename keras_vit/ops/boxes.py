"""Box formats and pairwise IoU / generalized IoU, in `keras.ops` (as DETR's `util/box_ops.py`).

The format conversions are Keras core's `keras.utils.bounding_boxes.convert_format`. The IoU
functions are our own: Keras' `compute_iou` adds an epsilon to the union, returns no union and
takes only rank 2 or 3, while DETR's generalized IoU needs the exact IoU and the union.
"""

import keras
from keras import ops


def _float_tensor(boxes):
    boxes = ops.convert_to_tensor(boxes)
    if "float" not in keras.backend.standardize_dtype(boxes.dtype):
        boxes = ops.cast(boxes, keras.config.floatx())
    return boxes


def center_to_corners(boxes):
    """`(..., 4)` boxes `(cx, cy, w, h)` -> `(..., 4)` boxes `(x1, y1, x2, y2)`."""
    boxes = _float_tensor(boxes)
    return keras.utils.bounding_boxes.convert_format(boxes, "center_xywh", "xyxy", dtype=boxes.dtype)


def corners_to_center(boxes):
    """`(..., 4)` boxes `(x1, y1, x2, y2)` -> `(..., 4)` boxes `(cx, cy, w, h)`."""
    boxes = _float_tensor(boxes)
    return keras.utils.bounding_boxes.convert_format(boxes, "xyxy", "center_xywh", dtype=boxes.dtype)


def box_area(boxes):
    """`(..., 4)` boxes `(x1, y1, x2, y2)` -> `(...)` areas."""
    boxes = _float_tensor(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1, boxes2):
    """Pairwise IoU of `(..., N, 4)` and `(..., M, 4)` `xyxy` boxes (leading dims broadcast).

    Returns `(iou, union)`, each `(..., N, M)`. Like DETR, there is no epsilon: two empty boxes
    give `0 / 0`.
    """
    boxes1, boxes2 = _float_tensor(boxes1), _float_tensor(boxes2)
    area1 = box_area(boxes1)[..., :, None]
    area2 = box_area(boxes2)[..., None, :]
    top_left = ops.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = ops.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    size = ops.maximum(bottom_right - top_left, 0.0)
    intersection = size[..., 0] * size[..., 1]
    union = area1 + area2 - intersection
    return intersection / union, union


def generalized_box_iou(boxes1, boxes2):
    """Pairwise generalized IoU (Rezatofighi et al., 2019) of `(..., N, 4)` and `(..., M, 4)`
    `xyxy` boxes -> `(..., N, M)`, in [-1, 1]. Boxes must have `x2 >= x1` and `y2 >= y1`."""
    boxes1, boxes2 = _float_tensor(boxes1), _float_tensor(boxes2)
    iou, union = box_iou(boxes1, boxes2)
    top_left = ops.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = ops.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    size = ops.maximum(bottom_right - top_left, 0.0)
    enclosing = size[..., 0] * size[..., 1]
    return iou - (enclosing - union) / enclosing
