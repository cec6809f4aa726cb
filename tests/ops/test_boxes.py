"""keras_vit.ops box helpers against hand-computed cases and a NumPy reference (DETR's box_ops)."""

import keras
import numpy as np
import pytest

from keras_vit.ops import box_area, box_iou, center_to_corners, corners_to_center, generalized_box_iou
from tests.conftest import to_numpy


def _random_xyxy(rng, shape):
    corner = rng.uniform(0, 1, shape + (2,))
    size = rng.uniform(0.01, 0.5, shape + (2,))
    return np.concatenate([corner, corner + size], axis=-1).astype("float32")


def _reference_giou(boxes1, boxes2):
    """Pairwise (iou, union, giou) of (N, 4) x (M, 4) xyxy boxes, loops, float64."""
    iou, union, giou = (np.zeros((len(boxes1), len(boxes2))) for _ in range(3))
    for i, (a0, a1, a2, a3) in enumerate(boxes1.astype(np.float64)):
        for j, (b0, b1, b2, b3) in enumerate(boxes2.astype(np.float64)):
            inter = max(min(a2, b2) - max(a0, b0), 0) * max(min(a3, b3) - max(a1, b1), 0)
            union[i, j] = (a2 - a0) * (a3 - a1) + (b2 - b0) * (b3 - b1) - inter
            iou[i, j] = inter / union[i, j]
            hull = (max(a2, b2) - min(a0, b0)) * (max(a3, b3) - min(a1, b1))
            giou[i, j] = iou[i, j] - (hull - union[i, j]) / hull
    return iou, union, giou


def test_format_conversions_by_hand_and_round_trip():
    center = np.array([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.2, 0.2]], "float32")
    corners = np.array([[0.4, 0.3, 0.6, 0.7], [0.0, 0.8, 0.2, 1.0]], "float32")
    np.testing.assert_allclose(to_numpy(center_to_corners(center)), corners, atol=1e-6)
    np.testing.assert_allclose(to_numpy(corners_to_center(corners)), center, atol=1e-6)
    boxes = np.random.default_rng(0).uniform(0, 1, (2, 3, 5, 4)).astype("float32")
    np.testing.assert_allclose(to_numpy(corners_to_center(center_to_corners(boxes))), boxes, atol=1e-6)
    assert keras.backend.standardize_dtype(center_to_corners(np.array([[2, 2, 2, 2]])).dtype) == "float32"


def test_area_iou_and_giou_by_hand():
    a = np.array([[0, 0, 2, 2]], "float32")
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [3, 0, 4, 1], [0.5, 0.5, 1.5, 1.5]], "float32")
    np.testing.assert_allclose(to_numpy(box_area(b)), [4, 4, 1, 1])
    iou, union = (to_numpy(x) for x in box_iou(a, b))
    np.testing.assert_allclose(iou, [[1 / 7, 1, 0, 1 / 4]], rtol=1e-6)
    np.testing.assert_allclose(union, [[7, 4, 5, 4]], rtol=1e-6)
    giou = to_numpy(generalized_box_iou(a, b))
    # Overlap: hull 3x3 = 9; identical: 1; disjoint: hull 4x2 = 8, 0 - (8 - 5) / 8; inside: iou.
    np.testing.assert_allclose(giou, [[1 / 7 - 2 / 9, 1, -3 / 8, 1 / 4]], rtol=1e-6)


@pytest.mark.parametrize("lead", [(), (2, 3)])
def test_pairwise_iou_and_giou_match_numpy(lead):
    rng = np.random.default_rng(1)
    boxes1, boxes2 = _random_xyxy(rng, lead + (5,)), _random_xyxy(rng, lead + (7,))
    iou, union = (to_numpy(x) for x in box_iou(boxes1, boxes2))
    giou = to_numpy(generalized_box_iou(boxes1, boxes2))
    assert iou.shape == union.shape == giou.shape == lead + (5, 7)
    flat1, flat2 = boxes1.reshape(-1, 5, 4), boxes2.reshape(-1, 7, 4)
    for k, (x, y) in enumerate(zip(flat1, flat2)):
        ref_iou, ref_union, ref_giou = _reference_giou(x, y)
        np.testing.assert_allclose(iou.reshape(-1, 5, 7)[k], ref_iou, atol=1e-6)
        np.testing.assert_allclose(union.reshape(-1, 5, 7)[k], ref_union, rtol=1e-5)
        np.testing.assert_allclose(giou.reshape(-1, 5, 7)[k], ref_giou, atol=1e-6)
    assert (giou <= iou + 1e-7).all() and (giou >= -1).all()
    assert (giou[iou == 0] < 0).all()  # disjoint boxes: the hull penalty makes giou negative


def test_giou_of_a_box_with_itself_is_one():
    boxes = _random_xyxy(np.random.default_rng(2), (6,))
    np.testing.assert_allclose(np.diag(to_numpy(generalized_box_iou(boxes, boxes))), np.ones(6), rtol=1e-6)


def test_inside_a_compiled_function():
    """The DETR loss calls these in its compiled train step (jax.jit, tf.function with XLA)."""
    rng = np.random.default_rng(3)
    center1, center2 = (corners_to_center(_random_xyxy(rng, (2, n))) for n in (4, 3))

    def giou(center1, center2):
        return generalized_box_iou(center_to_corners(center1), center_to_corners(center2))

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        compiled = jax.jit(giou)
    elif backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(giou, jit_compile=True)
    else:
        compiled = giou
    np.testing.assert_allclose(to_numpy(compiled(center1, center2)), to_numpy(giou(center1, center2)), atol=1e-6)
