"""`keras-vit train | evaluate | detect` for a detector, in-process (the trainer's fit runs on every
backend in tests/applications/detr; this is the plumbing, so it runs once)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import cli
from keras_vit.data.shapes_detection import render_detection_example
from keras_vit.training import load_backbone_weights, train, train_detector

pytestmark = pytest.mark.backend_agnostic


@pytest.fixture(scope="module")
def backbone_classifier(tmp_path_factory):
    """A resnet_pico classifier saved as .keras: the backbone checkpoint the detector run starts from."""
    path = str(tmp_path_factory.mktemp("backbone") / "resnet_pico.keras")
    keras_vit.create_model("resnet_pico", classes=6).save(path)
    return path


@pytest.fixture(scope="module")
def detector_run(shapes_detection_data_dir, backbone_classifier, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("detect") / "run")
    code = cli.main([
        "train", "--model", "detr_pico", "--dataset", "shapes_detection/small", "--data-dir", shapes_detection_data_dir,
        "--epochs", "2", "--steps-per-epoch", "2", "--validation-steps", "1", "--batch-size", "4",
        "--backbone-weights", backbone_classifier, "--output-dir", output_dir,
    ])
    assert code in (0, None)
    return output_dir


def test_train_writes_the_artifacts_with_map_per_epoch(detector_run):
    for name in ("model.keras", "history.json", "summary.json", "curves.png", "predictions.png"):
        assert os.path.getsize(os.path.join(detector_run, name)) > 0, name
    history = json.loads(open(os.path.join(detector_run, "history.json")).read())
    assert len(history["loss"]) == len(history["val_AP"]) == 2 and all(0 <= ap <= 1 for ap in history["val_AP50"])
    summary = json.loads(open(os.path.join(detector_run, "summary.json")).read())
    assert summary["task"] == "detection" and summary["classes"][:2] == ["circle", "square"]
    # detr_pico's backbone trains from scratch (BatchNorm learns), so it trains at the transformer's rate.
    assert summary["backbone_learning_rate"] == summary["learning_rate"] == 1e-4
    assert summary["backbone_weights"].endswith("resnet_pico.keras")
    assert not os.path.exists(os.path.join(detector_run, "checkpoint"))


def test_backbone_weights_come_from_a_classifier_of_the_backbone_architecture(backbone_classifier, tmp_path):
    classifier = {variable.path: variable.numpy() for variable in keras.saving.load_model(backbone_classifier).weights}
    detector = keras_vit.create_model("detr_pico", classes=6)
    loaded = load_backbone_weights(detector, "resnet_pico", backbone_classifier)
    assert loaded.startswith(f"{len(detector.backbone.weights)} weights") and "new head" in loaded
    for variable in detector.backbone.weights:
        np.testing.assert_array_equal(variable.numpy(), classifier[variable.path])
    other = str(tmp_path / "vit.keras")
    keras_vit.create_model("vit_pico8", classes=6).save(other)
    with pytest.raises(ValueError, match="does not fit model"):
        load_backbone_weights(detector, "resnet_pico", other)
    with pytest.raises(ValueError, match="as a registry name"):
        load_backbone_weights(detector, detector.backbone, backbone_classifier)


def test_evaluate_prints_and_writes_coco_map(detector_run, shapes_detection_data_dir, capsys):
    code = cli.main(["evaluate", "--model", detector_run, "--dataset", "shapes_detection/small",
                     "--data-dir", shapes_detection_data_dir, "--batch-size", "16"])
    assert code in (0, None)
    assert "COCO mAP" in capsys.readouterr().out
    report = json.loads(open(os.path.join(detector_run, "evaluation_small_validation.json")).read())
    assert set(report) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}


def test_detect_draws_each_image_and_writes_json(detector_run, tmp_path):
    paths = []
    for index in range(2):
        path = tmp_path / f"scene{index}.png"
        path.write_bytes(tf.io.encode_png(render_detection_example(index, "test")["image"]).numpy())
        paths.append(str(path))
    output = tmp_path / "out"
    code = cli.main(["detect", *paths, "--model", detector_run, "--threshold", "0", "--output-dir", str(output)])
    assert code in (0, None)
    records = json.loads((output / "detections.json").read_text())
    assert [record["image"] for record in records] == paths
    assert all(len(record["detections"]) == 20 for record in records)  # threshold 0: every query
    box = np.array(records[0]["detections"][0]["box"])
    assert box.shape == (4,) and box[2] >= box[0] and box[3] >= box[1]
    assert sorted(os.listdir(output)) == ["00000_scene0.png", "00001_scene1.png", "detections.json"]


def test_detect_refuses_a_classifier_and_train_refuses_classification_options(shapes_detection_data_dir, tmp_path):
    with pytest.raises(ValueError, match="classification options"):
        train("detr_pico", "shapes_detection/small", data_dir=shapes_detection_data_dir, recipe="baseline")
    with pytest.raises(ValueError, match="max_objects=30 exceeds the model's 20 queries"):
        train_detector("detr_pico", "shapes_detection/small", data_dir=shapes_detection_data_dir, max_objects=30)
    with pytest.raises(ValueError, match="is a classification model"):
        train_detector("vit_pico8", "shapes_detection/small", data_dir=shapes_detection_data_dir)
    with pytest.raises(ValueError, match=r"\['backbone_weights', 'max_objects'\] are not options of classification training"):
        train("vit_pico8", "shapes", backbone_weights="run", max_objects=5)
    with pytest.raises(ValueError, match="backbone_weights '/no/such/run': no such file"):
        train_detector("detr_pico", "shapes_detection/small", data_dir=shapes_detection_data_dir, backbone_weights="/no/such/run")


def test_info_measures_a_detector(capsys):
    assert cli.main(["info", "detr_pico"]) in (0, None)
    out = capsys.readouterr().out
    assert "input               128x128x3" in out and "attention layers    6" in out
