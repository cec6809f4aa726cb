"""OWLViTLoss against a NumPy reference (scipy's matcher, float64), its gradients, and model.fit."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy.optimize import linear_sum_assignment

from keras_vit.applications.owl_vit.loss import OWLViTLoss
from tests.conftest import to_numpy

PAD = np.finfo("float32").min  # transformers' mask value for padded queries


def _random_problem(seed, batch=3, patches=10, queries=5, max_objects=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(batch, patches, queries)).astype("float32")
    centers = rng.uniform(0.2, 0.8, size=(batch, patches, 2))
    sizes = rng.uniform(0.05, 0.4, size=(batch, patches, 2))
    pred_boxes = np.concatenate([centers, sizes], -1).astype("float32")
    real_queries = [queries, 3, queries - 1][:batch]  # padded queries in the last two images
    counts = [max_objects, 0, 2][:batch]  # a full image, an empty one, a partial one
    query_valid = np.zeros((batch, queries), "float32")
    boxes = np.zeros((batch, max_objects, 4), "float32")
    labels = np.zeros((batch, max_objects), "int32")
    valid = np.zeros((batch, max_objects), "float32")
    for image, (count, real) in enumerate(zip(counts, real_queries)):
        query_valid[image, :real] = 1
        logits[image, :, real:] = PAD
        boxes[image, :count, :2] = rng.uniform(0.2, 0.8, size=(count, 2))
        boxes[image, :count, 2:] = rng.uniform(0.05, 0.4, size=(count, 2))
        labels[image, :count] = rng.integers(0, real, size=count)
        valid[image, :count] = 1
    y_true = {"boxes": boxes, "labels": labels, "valid": valid}
    return y_true, {"logits": logits, "pred_boxes": pred_boxes}, query_valid


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _corners(boxes):
    return np.concatenate([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)


def _giou(a, b):
    """Pairwise generalized IoU of (n, 4) and (m, 4) corner boxes."""
    area_a = np.prod(a[:, 2:] - a[:, :2], -1)[:, None]
    area_b = np.prod(b[:, 2:] - b[:, :2], -1)[None]
    inter = np.prod(np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None), -1)
    union = area_a + area_b - inter
    hull = np.prod(np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2]), -1)
    with np.errstate(invalid="ignore"):  # 0 / 0 for point-sized pairs
        return inter / union - (hull - union) / hull


def _reference(
    y_true, y_pred, query_valid, weights=(1.0, 1.0, 1.0), costs=(1.0, 1.0, 1.0), alpha=0.3, gamma=2.0, normalization="global", nan_cost=None
):
    """The loss in float64, image by image, with scipy's matcher over the real objects only."""
    per_image, counts = [], []
    for image in range(len(query_valid)):
        real = np.flatnonzero(query_valid[image])
        objects = [t for t in np.flatnonzero(y_true["valid"][image]) if y_true["labels"][image, t] in real]
        labels, boxes = y_true["labels"][image, objects], y_true["boxes"][image, objects].astype("float64")
        x = y_pred["logits"][image][:, real].astype("float64")  # (patches, real queries)
        pred = y_pred["pred_boxes"][image].astype("float64")
        column = {query: k for k, query in enumerate(real)}
        label_columns = np.array([column[label] for label in labels], "int64")
        p = 1 / (1 + np.exp(-x))
        positive = alpha * (1 - p) ** gamma * -_log_sigmoid(x)
        negative = (1 - alpha) * p**gamma * -_log_sigmoid(-x)
        cost = (
            costs[0] * (positive - negative)[:, label_columns]
            + costs[1] * np.abs(pred[:, None] - boxes[None]).sum(-1)
            + costs[2] * -_giou(_corners(pred), _corners(boxes))
        )
        if nan_cost is not None:
            cost = np.nan_to_num(cost, nan=nan_cost)
        patches, matched = linear_sum_assignment(cost)  # patches[k] takes object matched[k]
        targets = np.zeros_like(x)
        targets[patches, label_columns[matched]] = 1
        p_t = np.where(targets == 1, p, 1 - p)
        alpha_t = np.where(targets == 1, alpha, 1 - alpha)
        focal = -alpha_t * (1 - p_t) ** gamma * np.log(p_t)
        pred_corners, target_corners = _corners(pred[patches]), _corners(boxes[matched])
        l1 = np.abs(pred_corners - target_corners).sum()
        giou = np.diag(_giou(pred_corners, target_corners)) if len(objects) else np.zeros(0)
        per_image.append(weights[0] * focal.sum() + weights[1] * l1 + weights[2] * (1 - giou).sum())
        counts.append(len(objects))
    if normalization == "per_example":
        return np.mean(np.array(per_image) / np.maximum(counts, 1))
    return np.sum(per_image) / max(sum(counts), 1)


_JITTED = {}


def _value(loss, y_true, y_pred):
    if keras.backend.backend() == "jax":  # one compiled loss per config: eager JAX compiles op by op
        import jax

        key = repr(sorted(loss.get_config().items()))
        loss = _JITTED.setdefault(key, jax.jit(OWLViTLoss.from_config(loss.get_config()).__call__))
    return float(to_numpy(loss(y_true, y_pred)))


CUSTOM = dict(class_weight=2.0, l1_weight=5.0, giou_weight=2.0, class_cost=2.0, l1_cost=5.0, giou_cost=3.0, focal_alpha=0.25, focal_gamma=1.5)


@pytest.mark.parametrize("normalization", ["global", "per_example"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_numpy_reference(seed, normalization):
    y_true, y_pred, query_valid = _random_problem(seed)
    expected = _reference(y_true, y_pred, query_valid, normalization=normalization)
    np.testing.assert_allclose(_value(OWLViTLoss(normalization=normalization), y_true, y_pred), expected, rtol=1e-5)


def test_equals_numpy_reference_with_custom_weights_and_query_valid():
    y_true, y_pred, query_valid = _random_problem(3)
    # With query_valid given, the padded queries' logits are arbitrary (here 3.0).
    y_pred["logits"] = np.where(query_valid[:, None, :] > 0, y_pred["logits"], np.float32(3.0))
    expected = _reference(
        y_true, y_pred, query_valid, weights=(2.0, 5.0, 2.0), costs=(2.0, 5.0, 3.0), alpha=0.25, gamma=1.5
    )
    ours = _value(OWLViTLoss(**CUSTOM), {**y_true, "query_valid": query_valid}, y_pred)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


@pytest.mark.parametrize("pad_value", [PAD, -1e6])
def test_a_padded_query_column_changes_nothing(pad_value):
    y_true, y_pred, query_valid = _random_problem(4)
    loss = OWLViTLoss()
    before = _value(loss, y_true, y_pred)
    padded = np.full(y_pred["logits"].shape[:2] + (1,), pad_value, "float32")
    more = {**y_pred, "logits": np.concatenate([padded, y_pred["logits"]], -1)}  # a padded query in front
    shifted = {**y_true, "labels": y_true["labels"] + 1, "valid": y_true["valid"].copy()}
    shifted["labels"][1, 0], shifted["valid"][1, 0] = 0, 1  # an object of the padded query: padding too
    np.testing.assert_allclose(_value(loss, shifted, more), before, rtol=1e-6)
    # The same column marked padding by query_valid, whatever its logits.
    more["logits"][..., 0] = 5.0
    given = {**shifted, "query_valid": np.concatenate([np.zeros_like(query_valid[:, :1]), query_valid], -1)}
    np.testing.assert_allclose(_value(loss, given, more), before, rtol=1e-6)
    assert abs(_value(loss, shifted, more) - before) > 1e-2  # without query_valid the column is a real query


def test_objects_of_padded_or_negative_labels_are_padding():
    y_true, y_pred, _ = _random_problem(5)
    dropped = {key: value.copy() for key, value in y_true.items()}
    dropped["valid"][0, 3] = 0
    dropped["valid"][2, 1] = 0
    bad = {key: value.copy() for key, value in y_true.items()}
    bad["labels"][0, 3] = -1
    bad["labels"][2, 1] = 4  # image 2's last query is padded
    loss = OWLViTLoss()
    np.testing.assert_allclose(_value(loss, bad, y_pred), _value(loss, dropped, y_pred), rtol=1e-6)


def test_no_objects_anywhere_is_the_focal_loss_of_all_negatives():
    y_true, y_pred, query_valid = _random_problem(6)
    y_true["valid"][:] = 0
    x = y_pred["logits"].astype("float64")
    p = 1 / (1 + np.exp(-np.where(query_valid[:, None] > 0, x, 0.0)))
    expected = np.sum(0.7 * p**2 * -np.log(1 - p) * query_valid[:, None])
    np.testing.assert_allclose(_value(OWLViTLoss(), y_true, y_pred), expected, rtol=1e-5)
    no_slots = {key: value[:, :0] for key, value in y_true.items()}  # T = 0
    np.testing.assert_allclose(_value(OWLViTLoss(), no_slots, y_pred), expected, rtol=1e-5)


def test_a_nan_cost_is_never_preferred():
    # A point-sized object under a point-sized prediction: GIoU 0 / 0, a NaN cost for that pair.
    y_true, y_pred, query_valid = _random_problem(10)
    y_true["boxes"][2, 0] = [0.5, 0.5, 0.0, 0.0]
    y_pred["pred_boxes"][2, 3] = [0.5, 0.5, 0.0, 0.0]
    y_pred["logits"][2, 3, y_true["labels"][2, 0]] = 8.0  # the class cost alone would pick patch 3
    assert np.isnan(_giou(_corners(y_pred["pred_boxes"][2, 3:4]), _corners(y_true["boxes"][2, :1]))).all()
    expected = _reference(y_true, y_pred, query_valid, nan_cost=1e9)
    np.testing.assert_allclose(_value(OWLViTLoss(), y_true, y_pred), expected, rtol=1e-5)


def _gradients(loss, y_true, logits, boxes):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(jax.grad(lambda l, b: loss(y_true, {"logits": l, "pred_boxes": b}), argnums=(0, 1)))(logits, boxes)
    if backend == "tensorflow":
        import tensorflow as tf

        logits, boxes = tf.constant(logits), tf.constant(boxes)
        with tf.GradientTape() as tape:
            tape.watch([logits, boxes])
            value = loss(y_true, {"logits": logits, "pred_boxes": boxes})
        return tape.gradient(value, [logits, boxes])
    import torch

    logits, boxes = torch.tensor(logits, requires_grad=True), torch.tensor(boxes, requires_grad=True)
    loss(y_true, {"logits": logits, "pred_boxes": boxes}).backward()
    return logits.grad, boxes.grad


def test_gradients_are_finite_nonzero_and_zero_at_padded_queries():
    y_true, y_pred, query_valid = _random_problem(7)
    grad_logits, grad_boxes = (np.asarray(to_numpy(g)) for g in _gradients(OWLViTLoss(), y_true, y_pred["logits"], y_pred["pred_boxes"]))
    assert np.isfinite(grad_logits).all() and np.isfinite(grad_boxes).all()
    real = np.broadcast_to(query_valid[:, None, :] > 0, grad_logits.shape)
    assert np.all(grad_logits[~real] == 0) and np.all(grad_logits[real] != 0)
    # Boxes: only the matched patches of images with objects get a gradient.
    assert np.count_nonzero(np.abs(grad_boxes).sum(-1)) == int(y_true["valid"].sum())


class TinyDetector(keras.Model):
    """Patch features -> OWL-ViT-like outputs; compute_loss hands the whole dict to the loss."""

    def __init__(self, queries, **kwargs):
        super().__init__(**kwargs)
        self.class_head = keras.layers.Dense(queries)
        self.box_head = keras.layers.Dense(4)

    def call(self, inputs):
        logits = self.class_head(inputs["features"])
        logits = ops.where(inputs["query_mask"][:, None, :] > 0, logits, PAD)
        return {"logits": logits, "pred_boxes": ops.sigmoid(self.box_head(inputs["features"]))}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = self.loss(y, y_pred)
        return loss + ops.sum(self.losses) if self.losses else loss


def test_fit_lowers_the_loss():
    y_true, _, query_valid = _random_problem(8)
    y_true = {key: np.concatenate([value, value[:1]]) for key, value in y_true.items()}  # batch of 4
    query_mask = np.concatenate([query_valid, query_valid[:1]])
    x = {"features": np.random.default_rng(0).normal(size=(4, 10, 8)).astype("float32"), "query_mask": query_mask}
    model = TinyDetector(queries=5)
    # XLA on TensorFlow too (Keras' "auto" skips it on CPU): the matching runs in the compiled step.
    jit_compile = keras.backend.backend() != "torch"
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=OWLViTLoss(), jit_compile=jit_compile)
    history = model.fit(x, y_true, batch_size=4, epochs=12, verbose=0).history["loss"]
    assert np.isfinite(history).all() and history[-1] < 0.7 * history[0], history


def test_value_errors():
    y_true, y_pred, _ = _random_problem(9, patches=3, max_objects=4)
    with pytest.raises(ValueError, match="up to 4 objects per image but the model predicts 3 boxes"):
        OWLViTLoss()(y_true, y_pred)
    y_true, y_pred, _ = _random_problem(9)
    with pytest.raises(ValueError, match="batch sizes"):
        OWLViTLoss()(y_true, {**y_pred, "pred_boxes": y_pred["pred_boxes"][:2]})
    with pytest.raises(ValueError, match="batch sizes"):
        OWLViTLoss()({**y_true, "valid": y_true["valid"][:2]}, y_pred)
    with pytest.raises(ValueError, match="query_valid"):
        OWLViTLoss()({**y_true, "query_valid": np.ones((3, 4), "float32")}, y_pred)
    with pytest.raises(ValueError, match="lacks 'valid'"):
        OWLViTLoss()({"boxes": y_true["boxes"], "labels": y_true["labels"]}, y_pred)
    with pytest.raises(ValueError, match="normalization"):
        OWLViTLoss(normalization="local")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="only TensorFlow graphs have unknown dimensions")
def test_tensorflow_graph_with_unknown_batch_and_query_count():
    import tensorflow as tf

    y_true, y_pred, query_valid = _random_problem(11)
    loss = OWLViTLoss()
    true_spec = {"boxes": tf.TensorSpec((None, 4, 4)), "labels": tf.TensorSpec((None, 4), "int32"), "valid": tf.TensorSpec((None, 4))}
    pred_spec = {"logits": tf.TensorSpec((None, 10, None)), "pred_boxes": tf.TensorSpec((None, 10, 4))}
    graph = tf.function(lambda t, p: loss(t, p), input_signature=[true_spec, pred_spec])
    np.testing.assert_allclose(float(graph(y_true, y_pred)), _reference(y_true, y_pred, query_valid), rtol=1e-5)
    unknown_t = {key: tf.TensorSpec((None, None, *spec.shape[2:]), spec.dtype) for key, spec in true_spec.items()}
    with pytest.raises(ValueError, match="static patch and object counts"):
        tf.function(lambda t, p: loss(t, p), input_signature=[unknown_t, pred_spec]).get_concrete_function()


def test_config_round_trip():
    loss = OWLViTLoss(**CUSTOM, normalization="per_example")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, OWLViTLoss) and again.get_config() == loss.get_config()
    assert again.focal_alpha == 0.25 and again.normalization == "per_example" and again.giou_cost == 3.0
