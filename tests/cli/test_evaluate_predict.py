"""`keras-vit evaluate` and `keras-vit predict` on a trained run folder (issue 14)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_vit import cli, create_model
from keras_vit.training import train

pytestmark = pytest.mark.backend_agnostic  # CLI plumbing; the functions run on every backend in tests/evaluation


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, shapes_data_dir):
    output_dir = tmp_path_factory.mktemp("evaluate") / "run"
    train("vit_pico8", "shapes/small", data_dir=shapes_data_dir, image_size=32, batch_size=8, epochs=1,
          steps_per_epoch=2, output_dir=str(output_dir), verbose=0)
    return str(output_dir)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    pixels = np.random.RandomState(0).randint(0, 255, (3, 40, 48, 3), dtype=np.uint8)
    for index, name in enumerate(["a.png", "b.png", "more/c.png"]):
        (folder / name).write_bytes(tf.io.encode_png(pixels[index]).numpy())
    (folder / "._a.png").write_bytes(b"\x00\x05")  # macOS metadata: skipped
    return folder


def test_evaluate_writes_the_report_and_the_confusion_matrix(run_folder, shapes_data_dir, capsys):
    code = cli.main(["evaluate", "--model", run_folder, "--dataset", "shapes/small", "--data-dir", shapes_data_dir])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(open(os.path.join(run_folder, "evaluation_small_validation.json")).read())
    assert report["num_examples"] == 120 and 0 <= report["accuracy"] <= report["top5_accuracy"] <= 1
    assert len(report["per_class_accuracy"]) == 6 and np.sum(report["confusion_matrix"]) == 120
    assert f"accuracy        {report['accuracy']:.4f}" in out
    assert os.path.getsize(os.path.join(run_folder, "evaluation_small_validation.png")) > 1000


def test_predict_prints_top_k_and_writes_attention_maps(run_folder, images, tmp_path, capsys):
    assert cli.main(["predict", str(images), "--model", run_folder, "--top-k", "2", "--json",
                     "--attention-map", str(tmp_path / "maps")]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [os.path.relpath(r["path"], images) for r in results] == ["a.png", "b.png", "more/c.png"]
    classes = json.loads(open(os.path.join(run_folder, "summary.json")).read())["classes"]
    for result in results:
        assert len(result["top"]) == 2 and result["top"][0]["probability"] >= result["top"][1]["probability"]
        assert {item["class"] for item in result["top"]} <= set(classes)
        assert os.path.getsize(result["attention_map"]) > 1000
    assert cli.main(["predict", str(images / "a.png"), "--model", os.path.join(run_folder, "model.keras")]) == 0
    assert capsys.readouterr().out.split()[0] == str(images / "a.png")


@pytest.mark.parametrize(
    "make,argv,message",
    [
        (lambda tmp: (tmp / "x.jpg").write_text("not an image"), ["predict", "{tmp}/x.jpg", "--model", "{run}"],
         "x.jpg"),
        (lambda tmp: (tmp / "empty").mkdir(), ["predict", "{tmp}/empty", "--model", "{run}"], "no images"),
        (lambda tmp: (tmp / "nomodel").mkdir(), ["predict", "{tmp}", "--model", "{tmp}/nomodel"],
         "is a folder without model.keras"),
        (lambda tmp: create_model("vit_pico8", input_shape=(32, 32, 3), classes=2).save(str(tmp / "plain.keras")),
         ["predict", "{tmp}", "--model", "{tmp}/plain.keras"], "holds no class names"),
        (lambda tmp: None, ["evaluate", "--model", "{run}", "--dataset", "{tmp}"], "class sub-folder"),
    ],
)
def test_bad_input_names_the_path_and_the_fix(run_folder, tmp_path, capsys, make, argv, message):
    make(tmp_path)
    argv = [arg.format(tmp=tmp_path, run=run_folder) for arg in argv]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
