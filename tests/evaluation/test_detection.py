"""Detection evaluation: post-processing (against transformers), COCO mAP (against pycocotools and
hand-computed cases), the mAP callback during fit (every backend), drawings and the detections JSON."""

import contextlib
import copy
import csv
import io
import json
import os
import types

import keras
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_vit.evaluation import (
    CocoEvaluationCallback,
    CocoGroundTruth,
    DetectionEvaluator,
    coco_evaluate,
    detection_records,
    draw_detections,
    evaluate_detector,
    plot_validation_predictions,
    post_process_detections,
    post_process_open_vocabulary,
    save_prediction_grid,
    write_detections_json,
)
from keras_vit.evaluation import detection as detection_module
from keras_vit.evaluation.coco_metrics import METRIC_NAMES, ground_truth_from_batch, to_coco_results

agnostic = pytest.mark.backend_agnostic
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THIRD = 51 / 101  # COCO's 101-point AP when recall stops at 0.5 with precision 1


def _random_outputs(batch=2, queries=10, classes=5, seed=0):
    rng = np.random.RandomState(seed)
    logits = (3 * rng.randn(batch, queries, classes + 1)).astype("float32")
    boxes = (0.1 + 0.8 * rng.rand(batch, queries, 4)).astype("float32")
    boxes[..., 2:] *= 0.3
    return {"logits": logits, "pred_boxes": boxes}


def _one_hot_logits(labels, classes, confidence=20.0):
    """Logits `(n, classes + 1)` whose softmax puts ~all mass on `labels` (`classes` = no-object)."""
    return (confidence * np.eye(classes + 1, dtype="float32")[np.asarray(labels)]).astype("float32")


def _detections(boxes, scores, labels):
    return {"boxes": np.asarray(boxes, "float32").reshape(-1, 4), "scores": np.asarray(scores, "float32"),
            "labels": np.asarray(labels, "int64")}


# ---------------------------------------------------------------------------------------------- post-processing


@agnostic
def test_post_process_matches_transformers():
    import torch
    from transformers import DetrImageProcessor

    outputs = _random_outputs()
    sizes = np.array([[480, 640], [300, 200]])
    processor = DetrImageProcessor()
    for threshold in (0.0, 0.6):
        expected = processor.post_process_object_detection(
            types.SimpleNamespace(logits=torch.tensor(outputs["logits"]), pred_boxes=torch.tensor(outputs["pred_boxes"])),
            threshold=threshold, target_sizes=torch.tensor(sizes),
        )
        actual = post_process_detections(outputs, sizes, threshold=threshold)
        assert len(actual) == 2
        for mine, theirs in zip(actual, expected):
            assert mine["boxes"].dtype == np.float32 and mine["labels"].dtype == np.int64
            np.testing.assert_array_equal(mine["labels"], theirs["labels"].numpy())
            np.testing.assert_allclose(mine["scores"], theirs["scores"].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(mine["boxes"], theirs["boxes"].numpy(), rtol=1e-6, atol=1e-3)
        kept = sum(len(r["scores"]) for r in actual)
        assert kept == 20 if threshold == 0 else 0 < kept < 20


@agnostic
def test_post_process_top_k_keeps_the_best_scores_first():
    outputs = _random_outputs(batch=1, queries=12)
    every = post_process_detections(outputs, [[100, 100]])[0]
    best = post_process_detections(outputs, [[100, 100]], top_k=3)[0]
    order = np.argsort(-every["scores"])[:3]
    np.testing.assert_array_equal(best["scores"], every["scores"][order])
    np.testing.assert_array_equal(best["boxes"], every["boxes"][order])


def test_post_process_takes_backend_tensors():
    outputs = _random_outputs()
    tensors = {key: keras.ops.convert_to_tensor(value) for key, value in outputs.items()}
    sizes = keras.ops.convert_to_tensor(np.array([[40, 60], [50, 50]], "int32"))
    for mine, reference in zip(post_process_detections(tensors, sizes), post_process_detections(outputs, [[40, 60], [50, 50]])):
        np.testing.assert_array_equal(mine["boxes"], reference["boxes"])


@agnostic
def test_post_process_rejects_bad_inputs_and_options():
    outputs, sizes = _random_outputs(), np.array([[10, 10], [20, 20]])
    for bad_outputs, bad_sizes, message in [
        ({"logits": outputs["logits"]}, sizes, "'logits' and 'pred_boxes'"),
        ({**outputs, "pred_boxes": outputs["pred_boxes"][..., :3]}, sizes, r"got shapes \(2, 10, 6\) and \(2, 10, 3\)"),
        ({**outputs, "logits": outputs["logits"][0]}, sizes, "got shapes"),
        (outputs, sizes[:1], r"one row per image of the batch of 2; got shape \(1, 2\)"),
        (outputs, np.zeros((2, 2)), "positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            post_process_detections(bad_outputs, bad_sizes)
    for options in ({"threshold": 1.5}, {"threshold": -0.1}, {"top_k": 0}, {"top_k": 2.5}):
        with pytest.raises(ValueError, match=f"{next(iter(options))} must be"):
            post_process_detections(outputs, sizes, **options)


# ---------------------------------------------------------------------------------------------- COCO mAP

# Two images: image 1 (200 x 100) with two objects of class 0 and one of class 1, image 2 (50 x 80) empty.
TRUTH = {1: ([[10, 10, 60, 50], [100, 20, 180, 90], [30, 60, 90, 95]], [0, 0, 1]), 2: ([], [])}
SIZES = {1: (100, 200), 2: (50, 80)}


def _truth():
    truth = CocoGroundTruth(num_classes=2)
    for image_id, (boxes, labels) in TRUTH.items():
        truth.add_image(image_id, SIZES[image_id], boxes, labels)
    return truth


def _perfect():
    return {i: _detections(b, np.linspace(0.9, 0.5, len(b)), l) for i, (b, l) in TRUTH.items()}


@agnostic
def test_perfect_predictions_score_one():
    metrics = coco_evaluate(_perfect(), _truth())
    assert set(metrics) == set(METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "APm", "AR100"):
        assert metrics[name] == pytest.approx(1.0), name
    assert metrics["APs"] == -1.0  # no object is smaller than 32 x 32 px: COCO's "no such objects"


@agnostic
def test_half_the_boxes_wrong_hand_computed():
    # One class, two objects; the right box found once, a second detection far from the other object.
    truth = CocoGroundTruth()
    truth.add_image(7, (100, 100), [[0, 0, 20, 20], [50, 50, 90, 90]], [0, 0])
    right, wrong = [0, 0, 20, 20], [60, 0, 80, 20]
    # Right first: precision 1 up to recall 0.5, then nothing: AP = 51 / 101 at every IoU threshold.
    metrics = coco_evaluate({7: _detections([right, wrong], [0.9, 0.8], [0, 0])}, truth)
    assert metrics["AP"] == pytest.approx(THIRD) and metrics["AP50"] == pytest.approx(THIRD)
    assert metrics["AR100"] == pytest.approx(0.5)
    # Wrong first: precision 0.5 up to recall 0.5.
    metrics = coco_evaluate({7: _detections([right, wrong], [0.8, 0.9], [0, 0])}, truth)
    assert metrics["AP"] == pytest.approx(0.5 * THIRD)


@agnostic
def test_detections_on_an_image_without_objects_are_false_positives():
    truth = CocoGroundTruth()
    truth.add_image(1, (100, 100), [[10, 10, 50, 50]], [0])
    truth.add_image(2, (100, 100))
    predictions = {1: _detections([[10, 10, 50, 50]], [0.5], [0]), 2: _detections([[0, 0, 30, 30]], [0.9], [0])}
    # The false positive ranks first: precision 1/2 at recall 1 -> AP 0.5.
    assert coco_evaluate(predictions, truth)["AP"] == pytest.approx(0.5)
    assert coco_evaluate({1: predictions[1], 2: _detections([], [], [])}, truth)["AP"] == pytest.approx(1.0)


@agnostic
def test_no_predictions_at_all_score_zero():
    empty = {i: _detections([], [], []) for i in TRUTH}
    for predictions in (empty, {}):
        metrics = coco_evaluate(predictions, _truth())
        assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0


def _instances(annotations, categories=(1, 3)):
    return {
        "images": [{"id": 11, "height": 100, "width": 200, "file_name": "a.jpg"},
                   {"id": 12, "height": 120, "width": 90, "file_name": "b.jpg"}],
        "annotations": annotations,
        "categories": [{"id": i, "name": f"c{i}"} for i in categories],
    }


def _annotation(index, image_id, category, bbox, crowd=0, area=None):
    return {"id": index, "image_id": image_id, "category_id": category, "bbox": bbox,
            "area": bbox[2] * bbox[3] if area is None else area, "iscrowd": crowd}


@agnostic
def test_crowd_regions_from_a_coco_file_are_ignored(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_instances([
        _annotation(1, 11, 1, [10, 10, 40, 40]),
        _annotation(2, 11, 1, [100, 10, 90, 80], crowd=1),
    ])))
    found = _detections([[10, 10, 50, 50]], [0.6], [1])
    # The crowd is not an object to find: the one real object found -> AP 1 (a plain object: about 0.5).
    assert coco_evaluate({11: found}, str(path))["AP"] == pytest.approx(1.0)
    inside_crowd = _detections([[10, 10, 50, 50], [110, 20, 150, 60]], [0.6, 0.9], [1, 1])
    assert coco_evaluate({11: inside_crowd}, path)["AP"] == pytest.approx(1.0)  # not a false positive
    data = json.loads(path.read_text())
    data["annotations"][1]["iscrowd"] = 0
    assert coco_evaluate({11: found}, data)["AP"] == pytest.approx(THIRD)


@agnostic
def test_results_equal_pycocotools_run_directly(tmp_path):
    annotations = [
        _annotation(1, 11, 1, [10, 10, 40, 40]), _annotation(2, 11, 3, [100, 10, 90, 80], area=5000.0),
        _annotation(3, 12, 1, [5, 5, 20, 30]), _annotation(4, 12, 1, [40, 50, 45, 60]),
        _annotation(5, 12, 3, [0, 0, 90, 120], crowd=1),
    ]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_instances(annotations)))
    rng = np.random.RandomState(3)
    predictions, expected_results = {}, []
    for image_id, (height, width) in ((11, (100, 200)), (12, (120, 90))):
        x1, y1 = rng.rand(6) * width * 0.6, rng.rand(6) * height * 0.6
        w, h = 5 + rng.rand(6) * width * 0.4, 5 + rng.rand(6) * height * 0.4
        scores, labels = rng.rand(6), rng.randint(0, 2, 6)
        predictions[image_id] = _detections(np.stack([x1, y1, x1 + w, y1 + h], 1), scores, labels)
        boxes = predictions[image_id]["boxes"].astype(float)
        expected_results += [
            {"image_id": image_id, "category_id": [1, 3][label], "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "score": float(s)}
            for b, s, label in zip(boxes, predictions[image_id]["scores"], labels)
        ]
    predictions[11] = {**predictions[11], "boxes": np.concatenate([predictions[11]["boxes"], [[10, 10, 50, 50]]]),
                       "scores": np.append(predictions[11]["scores"], 0.95), "labels": np.append(predictions[11]["labels"], 0)}
    expected_results.insert(6, {"image_id": 11, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 40.0], "score": 0.95})

    results = to_coco_results(predictions, label_to_category=[1, 3])
    assert len(results) == len(expected_results)
    for mine, theirs in zip(results, expected_results):
        assert mine.keys() == theirs.keys() and mine["image_id"] == theirs["image_id"]
        assert mine["category_id"] == theirs["category_id"]
        np.testing.assert_allclose(mine["bbox"], theirs["bbox"], rtol=1e-6)
        assert mine["score"] == pytest.approx(theirs["score"], rel=1e-6)

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(path))
        direct = COCOeval(truth, truth.loadRes(copy.deepcopy(expected_results)), "bbox")
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    ours = coco_evaluate(predictions, path, label_to_category={0: 1, 1: 3})
    np.testing.assert_allclose([ours[name] for name in METRIC_NAMES], direct.stats, atol=1e-12)
    assert 0.0 < ours["AP"] < 1.0


@agnostic
def test_coco_file_problems_are_value_errors(tmp_path):
    empty = tmp_path / "image_info.json"
    empty.write_text(json.dumps(_instances([])))
    with pytest.raises(ValueError, match=r"image_info\.json.*no annotations.*instances_val2017"):
        coco_evaluate({}, empty)
    with pytest.raises(ValueError, match="does not exist"):
        coco_evaluate({}, tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="cannot be read"):
        coco_evaluate({}, broken)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_instances([_annotation(1, 11, 1, [1, 1, 5, 5])])))
    with pytest.raises(ValueError, match=r"images \[99\]"):
        coco_evaluate({99: _detections([], [], [])}, good)
    with pytest.raises(ValueError, match="Label 2 has no COCO category id"):
        coco_evaluate({11: _detections([[0, 0, 1, 1]], [0.5], [2])}, good, label_to_category=[1, 3])
    # A file without "area" and "iscrowd" (other tools omit them): box areas, no crowds.
    minimal = tmp_path / "minimal.json"
    minimal.write_text(json.dumps(_instances([{"id": 1, "image_id": 11, "category_id": 1, "bbox": [10, 10, 40, 40]}])))
    found = {11: _detections([[10, 10, 50, 50]], [0.7], [1])}
    assert coco_evaluate(found, minimal, image_ids=[11])["AP"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- batches


def _batch(image_ids, classes=2, max_objects=3, seed=0):
    """A detection batch `(x, y)` and the outputs a perfect 4-query detector gives on it."""
    rng = np.random.RandomState(seed)
    batch = len(image_ids)
    counts = rng.randint(0, max_objects + 1, batch)
    counts[0] = max(counts[0], 1)
    centers = 0.3 + 0.4 * rng.rand(batch, max_objects, 2)
    sizes = 0.1 + 0.4 * rng.rand(batch, max_objects, 2)
    valid = (np.arange(max_objects)[None] < counts[:, None]).astype("float32")
    y = {
        "boxes": (np.concatenate([centers, sizes], -1) * valid[..., None]).astype("float32"),
        "labels": (rng.randint(0, classes, (batch, max_objects)) * valid).astype("int32"),
        "valid": valid,
        "image_id": np.asarray(image_ids, "int64"),
        "image_size": rng.randint(40, 120, (batch, 2)).astype("int32"),
    }
    queries = max_objects + 1
    labels = np.where(valid > 0, y["labels"], classes)
    logits = np.stack([_one_hot_logits(np.append(row, classes), classes) for row in labels])
    boxes = np.concatenate([y["boxes"], np.full((batch, 1, 4), 0.5, "float32")], axis=1)
    assert logits.shape == (batch, queries, classes + 1)
    x = {"images": np.zeros((batch, 16, 16, 3), "float32"), "pixel_mask": np.ones((batch, 16, 16), "float32")}
    return x, y, {"logits": logits, "pred_boxes": boxes}


@agnostic
def test_evaluator_over_batches_perfect_and_degraded():
    evaluator = DetectionEvaluator(num_classes=2)
    batches = [_batch([1, 2, 3], seed=1), _batch([4, 5], seed=2)]
    y = batches[0][1]
    truths = ground_truth_from_batch(y)  # pixel xyxy in the original image
    height, width = y["image_size"][0]
    cx, cy, w, h = y["boxes"][0, 0]
    np.testing.assert_allclose(truths[0]["boxes"][0], [(cx - w / 2) * width, (cy - h / 2) * height,
                                                       (cx + w / 2) * width, (cy + h / 2) * height], rtol=1e-5)
    assert [len(t["labels"]) for t in truths] == list(y["valid"].sum(axis=1).astype(int))
    for _, y, outputs in batches:
        evaluator.update(y, outputs)
    assert evaluator.result()["AP"] == pytest.approx(1.0)
    evaluator.reset()
    for _, y, outputs in batches:
        shifted = {**outputs, "pred_boxes": np.clip(outputs["pred_boxes"] + 0.3, 0, 1)}
        evaluator.update(y, shifted)
    assert evaluator.result()["AP"] < 0.5
    with pytest.raises(ValueError, match="seen twice"):
        evaluator.update(batches[0][1], batches[0][2])


@agnostic
def test_open_vocabulary_post_process_scores_every_token_and_query():
    minimum = float(np.finfo("float32").min)  # a padded query
    logits = np.array([[[2.0, 0.0, minimum], [-1.0, 3.0, minimum], [-5.0, -4.0, minimum]]], "float32")
    boxes = np.array([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.5, 0.5], [0.9, 0.9, 0.1, 0.1]]], "float32")
    (found,) = post_process_open_vocabulary({"logits": logits, "pred_boxes": boxes}, [[100, 200]], threshold=0.4)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    # (token, query) pairs above 0.4, best first: (1, 1), (0, 0), (0, 1); a token may carry several queries.
    np.testing.assert_allclose(found["scores"], sigmoid(np.array([3.0, 2.0, 0.0])), rtol=1e-6)
    np.testing.assert_array_equal(found["labels"], [1, 0, 1])
    np.testing.assert_allclose(found["boxes"][0], [0.0, 0.0, 100.0, 50.0], atol=1e-4)  # (x1, y1, x2, y2) in pixels
    np.testing.assert_allclose(found["boxes"][1], found["boxes"][2])
    (everything,) = post_process_open_vocabulary({"logits": logits, "pred_boxes": boxes}, [[100, 200]], top_k=4)
    assert len(everything["scores"]) == 4 and 2 not in everything["labels"]  # padded queries score 0


@agnostic
def test_label_groups_give_the_metrics_of_each_group():
    y = {"boxes": np.array([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]], "float32"),
         "labels": np.array([[0, 1]]), "valid": np.ones((1, 2), "float32"),
         "image_id": np.array([1]), "image_size": np.array([[100, 100]])}
    logits = np.full((1, 2, 2), -10.0, "float32")
    logits[0, 0, 0] = 5.0  # token 0 finds the label-0 object where it is
    logits[0, 1, 1] = 5.0  # token 1 calls label 1 at a box far from the label-1 object
    boxes = np.array([[[0.3, 0.3, 0.2, 0.2], [0.1, 0.9, 0.1, 0.1]]], "float32")
    evaluator = DetectionEvaluator(num_classes=2, post_process=post_process_open_vocabulary,
                                   label_groups={"seen": [0], "unseen": [1]})
    evaluator.update(y, {"logits": logits, "pred_boxes": boxes})
    metrics = evaluator.result()
    assert metrics["seen_AP"] == pytest.approx(1.0) and metrics["unseen_AP"] == pytest.approx(0.0)
    assert metrics["AP"] == pytest.approx(0.5)


@agnostic
def test_evaluator_with_a_coco_file_evaluates_only_the_images_seen(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_instances([_annotation(1, 11, 1, [20, 10, 100, 50]), _annotation(2, 12, 3, [5, 5, 10, 10])])))
    y = {"image_id": np.array([11]), "image_size": np.array([[100, 200]])}
    outputs = {"logits": _one_hot_logits([0, 2], 2)[None], "pred_boxes": np.array([[[0.35, 0.35, 0.5, 0.5], [0.5] * 4]], "float32")}
    evaluator = DetectionEvaluator(path, label_to_category=[1, 3])
    evaluator.update(y, outputs)
    assert evaluator.result()["AP"] == pytest.approx(1.0)  # image 12, never seen, is not counted as missed
    with pytest.raises(ValueError, match="label_to_category"):
        DetectionEvaluator(None, label_to_category=[1, 3])
    with pytest.raises(ValueError, match="empty"):
        DetectionEvaluator(path).result()


# ---------------------------------------------------------------------------------------------- callback


CLASSES, MAX_OBJECTS = 2, 3
QUERIES = MAX_OBJECTS + 1


class PerfectDetector(keras.Model):
    """Reads its answer from the image: row 0 holds the boxes, row 1 the logits / 20 (see `_dataset`)."""

    def __init__(self):
        super().__init__()
        self.unused = self.add_weight(shape=(), initializer="ones", name="unused")

    def call(self, inputs, training=False):
        images = inputs["images"]
        boxes = keras.ops.reshape(images[:, 0, : QUERIES * 4, 0] / 255.0, (-1, QUERIES, 4))
        logits = keras.ops.reshape(images[:, 1, : QUERIES * (CLASSES + 1), 0] / 255.0 * 20.0, (-1, QUERIES, CLASSES + 1))
        return {"logits": logits, "pred_boxes": boxes}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return keras.ops.square(self.unused - 1.0) + 0.0 * keras.ops.mean(y_pred["pred_boxes"])


def _dataset(count=6, batch_size=2):
    """`(x, y)` batches whose images carry the perfect answer for `PerfectDetector`."""
    import tensorflow as tf

    _, y, outputs = _batch(list(range(100, 100 + count)), CLASSES, MAX_OBJECTS, seed=4)
    images = np.zeros((count, 16, 16, 3), "float32")
    images[:, 0, : QUERIES * 4, 0] = outputs["pred_boxes"].reshape(count, -1) * 255.0
    images[:, 1, : QUERIES * (CLASSES + 1), 0] = outputs["logits"].reshape(count, -1) / 20.0 * 255.0
    x = {"images": images, "pixel_mask": np.ones((count, 16, 16), "float32")}
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def test_callback_writes_coco_metrics_into_the_history(tmp_path):
    dataset = _dataset()
    model = PerfectDetector()
    model.compile(optimizer="sgd")
    log = tmp_path / "log.csv"
    callbacks = [CocoEvaluationCallback(dataset, num_classes=CLASSES), keras.callbacks.CSVLogger(str(log))]
    history = model.fit(dataset, epochs=2, callbacks=callbacks, verbose=0, shuffle=False)
    assert history.history["val_AP"] == pytest.approx([1.0, 1.0])
    assert history.history["val_AP50"] == pytest.approx([1.0, 1.0])
    assert {f"val_{name}" for name in METRIC_NAMES} <= set(history.history)
    rows = list(csv.DictReader(log.open()))
    assert [float(row["val_AP"]) for row in rows] == pytest.approx([1.0, 1.0])
    assert evaluate_detector(model, dataset, num_classes=CLASSES)["AP"] == pytest.approx(1.0)


@agnostic
def test_callback_every_n_epochs_and_the_last():
    dataset = _dataset(count=2)
    model = PerfectDetector()
    model.compile(optimizer="sgd")
    history = model.fit(dataset, epochs=3, callbacks=[CocoEvaluationCallback(dataset, every=2, prefix="coco_")],
                        verbose=0, shuffle=False)
    assert history.history["coco_AP"] == pytest.approx([1.0, 1.0])  # epochs 2 and 3 (the last)
    with pytest.raises(ValueError, match="every"):
        CocoEvaluationCallback(dataset, every=0)


# ---------------------------------------------------------------------------------------------- files


def _image(height=60, width=90):
    return np.random.RandomState(0).rand(height, width, 3).astype("float32") * 255


@agnostic
def test_draw_detections_writes_a_png(tmp_path):
    path = tmp_path / "out" / "image.png"
    detections = _detections([[5, 5, 40, 30], [50, 10, 85, 55]], [0.9, 0.55], [0, 1])
    draw_detections(_image(), detections, ["circle", "square"], path,
                    ground_truth={"boxes": [[6, 6, 40, 30]], "labels": [0]}, title="test")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert os.listdir(path.parent) == ["image.png"]
    with pytest.raises(ValueError, match="no name"):
        draw_detections(_image(), _detections([[0, 0, 1, 1]], [0.5], [5]), ["circle"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="height, width, 3"):
        draw_detections(np.zeros((4, 4)), detections, None, tmp_path / "x.png")


@agnostic
def test_a_failed_drawing_leaves_the_old_file_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "image.png"
    path.write_bytes(b"old")

    def broken_savefig(figure, target):
        with open(target, "wb") as file:
            file.write(PNG_SIGNATURE)  # half a PNG, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(detection_module, "save_figure", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        draw_detections(_image(), _detections([], [], []), None, path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["image.png"]
    monkeypatch.undo()
    folder = tmp_path / "a_folder.png"
    folder.mkdir()
    with pytest.raises(OSError):  # an unwritable target: a folder of that name
        draw_detections(_image(), _detections([], [], []), None, folder)
    assert sorted(os.listdir(tmp_path)) == ["a_folder.png", "image.png"] and not os.listdir(folder)


@agnostic
def test_prediction_grid_of_validation_batches(tmp_path):
    images = [_image(), _image(40, 40), _image(80, 50)]
    detections = [_detections([[5, 5, 30, 30]], [0.8], [1])] * 3
    truths = [{"boxes": [[4, 4, 30, 30]], "labels": [1]}] * 3
    path = save_prediction_grid(images, detections, ["a", "b"], tmp_path / "grid.png", ground_truth=truths, columns=2)
    assert open(path, "rb").read(8) == PNG_SIGNATURE
    with pytest.raises(ValueError, match="one detections dict"):
        save_prediction_grid(images, detections[:2], ["a", "b"], tmp_path / "grid.png")

    model = PerfectDetector()
    out = plot_validation_predictions(model, _dataset(count=4), ["a", "b"], tmp_path / "val.png", count=3)
    assert open(out, "rb").read(8) == PNG_SIGNATURE


@agnostic
def test_detections_json(tmp_path):
    detections = post_process_detections(_random_outputs(batch=2, classes=2), [[100, 200], [50, 50]], threshold=0.2)
    records = detection_records(detections, ["cat", "dog"], ["a.jpg", "b.jpg"])
    path = write_detections_json(records, tmp_path / "sub" / "detections.json")
    loaded = json.loads(open(path).read())
    assert [record["image"] for record in loaded] == ["a.jpg", "b.jpg"]
    first = loaded[0]["detections"]
    assert len(first) == len(detections[0]["scores"]) > 0
    assert [d["score"] for d in first] == sorted((d["score"] for d in first), reverse=True)
    assert set(first[0]) == {"label", "class", "score", "box"} and first[0]["class"] in ("cat", "dog")
    # NumPy values are written; an unserializable record fails before anything is written.
    write_detections_json({"n": np.int64(3), "a": np.arange(2)}, path)
    assert json.loads(open(path).read()) == {"n": 3, "a": [0, 1]}
    with pytest.raises(TypeError):
        write_detections_json([object()], path)
    assert json.loads(open(path).read()) == {"n": 3, "a": [0, 1]}
    assert os.listdir(tmp_path / "sub") == ["detections.json"]
