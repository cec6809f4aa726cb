"""`keras-vit train | detect` for OWL-ViT, in-process: training on the small shapes data with held-out
categories, detection by text and by an example image from a trained run and from a transformers
checkpoint with its tokenizer (the model's numerics run on every backend in tests/applications)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_vit import cli
from keras_vit.data import SHAPES_CATEGORIES, train_clip_tokenizer
from keras_vit.data.shapes_detection import render_detection_example
from keras_vit.training import train

pytestmark = pytest.mark.backend_agnostic


@pytest.fixture(scope="module")
def owl_run(shapes_detection_data_dir, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("owl") / "run")
    code = cli.main([
        "train", "--model", "owlvit_pico", "--dataset", "shapes_detection/small", "--data-dir", shapes_detection_data_dir,
        "--epochs", "1", "--steps-per-epoch", "2", "--validation-steps", "1", "--batch-size", "4",
        "--pretrain-epochs", "1", "--unseen", "red triangle, blue ring", "--output-dir", output_dir,
    ])
    assert code in (0, None)
    return output_dir


@pytest.fixture
def scene_paths(tmp_path):
    paths = []
    for index in range(2):
        path = tmp_path / f"scene{index}.png"
        path.write_bytes(tf.io.encode_png(render_detection_example(index, "test")["image"]).numpy())
        paths.append(str(path))
    return paths


def test_train_writes_the_artifacts_with_seen_and_unseen_ap(owl_run, capsys):
    for name in ("model.keras", "history.json", "summary.json", "curves.png", "predictions.png"):
        assert os.path.getsize(os.path.join(owl_run, name)) > 0, name
    history = json.loads(open(os.path.join(owl_run, "history.json")).read())
    assert len(history["loss"]) == 1 and len(history["pretrain_loss"]) == 1
    assert all(0 <= history[key][0] <= 1 for key in ("val_AP", "val_seen_AP", "val_unseen_AP"))
    summary = json.loads(open(os.path.join(owl_run, "summary.json")).read())
    assert summary["unseen"] == ["red triangle", "blue ring"] and len(summary["categories"]) == 48
    assert len(summary["seen"]) == 46 and not set(summary["seen"]) & set(summary["unseen"])
    assert not os.path.exists(os.path.join(owl_run, "checkpoint"))


def test_evaluate_reports_seen_and_held_out_ap(owl_run, shapes_detection_data_dir, capsys):
    code = cli.main(["evaluate", "--model", owl_run, "--dataset", "shapes_detection/small", "--data-dir", shapes_detection_data_dir,
                     "--batch-size", "16"])
    assert code in (0, None)
    assert "unseen_AP" in capsys.readouterr().out
    report = json.loads(open(os.path.join(owl_run, "evaluation_small_validation.json")).read())
    assert all(0 <= report[key] <= 1 for key in ("AP", "seen_AP", "unseen_AP"))


def test_detect_with_text_queries_from_a_trained_run(owl_run, scene_paths, tmp_path):
    output = tmp_path / "out"
    code = cli.main(["detect", *scene_paths, "--model", owl_run, "--queries", "red triangle, green circle",
                     "--threshold", "0", "--output-dir", str(output)])
    assert code in (0, None)
    records = json.loads((output / "detections.json").read_text())
    assert [record["image"] for record in records] == scene_paths
    assert all(len(record["detections"]) == 64 for record in records)  # threshold 0: every token of the 8x8 grid
    assert {item["class"] for record in records for item in record["detections"]} <= {"red triangle", "green circle"}
    assert sorted(os.listdir(output)) == ["00000_scene0.png", "00001_scene1.png", "detections.json"]


@pytest.fixture(scope="module")
def transformers_checkpoint(tmp_path_factory):
    """A random-weight OwlViTForObjectDetection with a tokenizer trained on the shapes captions, saved together."""
    torch = pytest.importorskip("torch")
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    tokenizer = train_clip_tokenizer(SHAPES_CATEGORIES)
    text = dict(vocab_size=tokenizer.vocabulary_size, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                num_attention_heads=2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=16)
    torch.manual_seed(0)
    model = OwlViTForObjectDetection(OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
    path = tmp_path_factory.mktemp("owlvit") / "checkpoint"
    model.save_pretrained(path)
    tokenizer.save(path)
    return str(path)


def test_detect_from_a_transformers_checkpoint_by_text_and_by_image(transformers_checkpoint, scene_paths, tmp_path):
    output = tmp_path / "text"
    code = cli.main(["detect", *scene_paths, "--model", "owlvit_b32", "--weights", transformers_checkpoint,
                     "--queries", "red circle,blue star", "--threshold", "0", "--output-dir", str(output)])
    assert code in (0, None)
    records = json.loads((output / "detections.json").read_text())
    assert len(records[0]["detections"]) == 16  # a 4x4 grid at 64 px
    box = np.array(records[0]["detections"][0]["box"])
    assert box[2] >= box[0] and box[3] >= box[1] and box.max() <= 130  # pixels of the 128 px scene (not clipped)
    output = tmp_path / "image"
    code = cli.main(["detect", scene_paths[0], "--model", "owlvit_b32", "--weights", transformers_checkpoint,
                     "--query-image", scene_paths[1], "--threshold", "0", "--output-dir", str(output)])
    assert code in (0, None)
    records = json.loads((output / "detections.json").read_text())
    assert {item["class"] for item in records[0]["detections"]} == {"scene1.png"}
    assert 1 <= len(records[0]["detections"]) <= 16  # non-maximum suppression at IoU 0.3


def test_bad_detect_arguments_are_value_errors(transformers_checkpoint, owl_run, scene_paths, capsys):
    cases = [
        (["--model", "owlvit_b32", "--queries", "a"], "needs --weights"),
        (["--model", "owlv2_b16", "--weights", transformers_checkpoint, "--queries", "a"], "holds OWL-ViT checkpoint"),
        (["--model", "owlvit_b32", "--weights", transformers_checkpoint], "Pass --queries"),
        (["--model", "owlvit_b32", "--weights", transformers_checkpoint, "--queries", "red circle,,"], "empty query"),
        (["--model", "vit_pico8", "--queries", "red circle"], "need an open-vocabulary detector"),
    ]
    for arguments, message in cases:
        assert cli.main(["detect", *scene_paths, *arguments]) == 2
        assert message in capsys.readouterr().err, message


def test_train_refuses_other_datasets_and_unknown_unseen(shapes_detection_data_dir):
    with pytest.raises(ValueError, match="open-vocabulary training reads 'shapes_detection'"):
        train("owlvit_pico", "coco/2017", data_dir=shapes_detection_data_dir)
    with pytest.raises(ValueError, match="pink circle"):
        train("owlvit_pico", "shapes_detection/small", data_dir=shapes_detection_data_dir, unseen=("pink circle",), epochs=1)


def test_info_measures_the_image_side_and_names_the_text_tower(capsys):
    assert cli.main(["info", "owlvit_pico"]) in (0, None)
    out = capsys.readouterr().out
    assert "input               128x128x3" in out and "parameters          3,438,023" in out
    assert "text tower          3,267,328 parameters, 16 tokens" in out and "2 heads x 65x65" in out
