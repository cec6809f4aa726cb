"""DETRLoss against transformers' DETR loss (its HungarianMatcher uses scipy), and in model.fit."""

import types

import numpy as np
import pytest

from keras_vit.applications.detr.loss import DETRLoss
from tests.conftest import to_numpy


def _random_problem(seed, batch=3, layers=3, queries=7, classes=4, max_objects=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(layers, batch, queries, classes + 1)).astype("float32")
    centers = rng.uniform(0.2, 0.8, size=(layers, batch, queries, 2))
    sizes = rng.uniform(0.05, 0.4, size=(layers, batch, queries, 2))
    pred_boxes = np.concatenate([centers, sizes], -1).astype("float32")
    counts = [max_objects, 0, 2][:batch]  # a full image, an empty one, a partial one
    boxes = np.zeros((batch, max_objects, 4), "float32")
    labels = np.zeros((batch, max_objects), "int32")
    valid = np.zeros((batch, max_objects), "float32")
    for image, count in enumerate(counts):
        boxes[image, :count, :2] = rng.uniform(0.2, 0.8, size=(count, 2))
        boxes[image, :count, 2:] = rng.uniform(0.05, 0.4, size=(count, 2))
        labels[image, :count] = rng.integers(0, classes, size=count)
        valid[image, :count] = 1
    y_true = {"boxes": boxes, "labels": labels, "valid": valid}
    y_pred = {"logits": logits[-1], "pred_boxes": pred_boxes[-1], "aux_logits": np.swapaxes(logits[:-1], 0, 1), "aux_boxes": np.swapaxes(pred_boxes[:-1], 0, 1)}
    return y_true, y_pred, logits, pred_boxes, counts


def _transformers_loss(y_true, logits, pred_boxes, counts, classes, auxiliary):
    import torch
    from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

    config = types.SimpleNamespace(
        class_cost=1, bbox_cost=5, giou_cost=2, num_labels=classes, eos_coefficient=0.1, auxiliary_loss=auxiliary,
        decoder_layers=logits.shape[0], bbox_loss_coefficient=5, giou_loss_coefficient=2,
    )
    labels = [
        {"class_labels": torch.tensor(y_true["labels"][i, :n], dtype=torch.long), "boxes": torch.tensor(y_true["boxes"][i, :n])}
        for i, n in enumerate(counts)
    ]
    loss, _, _ = ForObjectDetectionLoss(
        torch.tensor(logits[-1]), labels, "cpu", torch.tensor(pred_boxes[-1]), config,
        outputs_class=torch.tensor(logits), outputs_coord=torch.tensor(pred_boxes),
    )
    return float(loss)


@pytest.mark.parametrize("auxiliary", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_transformers_detr_loss(seed, auxiliary):
    y_true, y_pred, logits, pred_boxes, counts = _random_problem(seed)
    if not auxiliary:
        y_pred = {key: y_pred[key] for key in ("logits", "pred_boxes")}
    ours = float(to_numpy(DETRLoss()(y_true, y_pred)))
    expected = _transformers_loss(y_true, logits, pred_boxes, counts, classes=4, auxiliary=auxiliary)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_images_without_objects_learn_no_object_only():
    y_true, y_pred, *_ = _random_problem(0, batch=2)
    for key in y_true:
        y_true[key] = np.zeros_like(y_true[key])
    loss = DETRLoss()
    no_object_ce = -np.log(np.exp(y_pred["logits"][..., -1]) / np.exp(y_pred["logits"]).sum(-1))
    aux_ce = -np.log(np.exp(y_pred["aux_logits"][..., -1]) / np.exp(y_pred["aux_logits"]).sum(-1))
    expected = no_object_ce.mean() + aux_ce.mean(axis=(0, 2, 3)).sum() if aux_ce.ndim == 4 else None
    expected = no_object_ce.mean() + sum(aux_ce[:, layer].mean() for layer in range(aux_ce.shape[1]))
    np.testing.assert_allclose(float(to_numpy(loss(y_true, y_pred))), expected, rtol=1e-5)


def test_more_targets_than_queries_is_a_value_error():
    y_true, y_pred, *_ = _random_problem(0, queries=3, max_objects=5)
    with pytest.raises(ValueError, match="5 objects per image but the model has 3 queries"):
        DETRLoss()(y_true, y_pred)


def test_config_round_trip():
    loss = DETRLoss(no_object_weight=0.2, giou_cost=3.0)
    again = DETRLoss.from_config(loss.get_config())
    assert again.no_object_weight == 0.2 and again.giou_cost == 3.0
