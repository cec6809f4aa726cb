"""`keras-vit train | generate | probe | info` for iGPT, in-process (the trainer's fit runs on every
backend in tests/training/test_generation.py; this is the plumbing, so it runs once)."""

import json

import pytest
from PIL import Image

from keras_vit import cli

pytestmark = pytest.mark.backend_agnostic


@pytest.fixture(scope="module")
def generator_run(shapes_data_dir, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("igpt") / "run")
    code = cli.main([
        "train", "--model", "igpt_pico", "--dataset", "shapes/small", "--data-dir", shapes_data_dir,
        "--image-size", "8", "--palette-size", "8", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
        "--samples", "2", "--output-dir", output_dir,
    ])
    assert code in (0, None)
    return output_dir


def test_generate_writes_sample_and_completion_grids(generator_run, shapes_data_dir, tmp_path, capsys):
    code = cli.main(["generate", "--model", generator_run, "--samples", "3", "--complete", "2", "--data-dir", shapes_data_dir,
                     "--top-k", "4", "--output-dir", str(tmp_path)])
    assert code in (0, None)
    out = capsys.readouterr().out
    assert "3 samples of 64 pixels" in out and "2 completions" in out
    samples = Image.open(tmp_path / "samples.png")
    completions = Image.open(tmp_path / "completions.png")
    # 8x8 images enlarged 4x with 2-pixel gaps: one row of 3; four rows (halves, 2 samples, originals) of 2
    assert samples.size == (3 * 34 + 2, 34 + 2) and completions.size == (2 * 34 + 2, 4 * 34 + 2)


def test_probe_prints_and_writes_per_layer_accuracy(generator_run, shapes_data_dir, tmp_path, capsys):
    output = str(tmp_path / "probe.json")
    code = cli.main(["probe", "--model", generator_run, "--data-dir", shapes_data_dir, "--layers", "0", "-1",
                     "--train-examples", "120", "--test-examples", "60", "--output", output])
    assert code in (0, None)
    assert "raw pixels" in capsys.readouterr().out
    report = json.load(open(output))
    assert set(report["layers"]) == {"0", "3"} and report["train_examples"] == 120 and report["test_examples"] == 60
    assert all(0.0 <= value <= 1.0 for value in [report["pixels"], *report["layers"].values()])


def test_generate_refuses_a_classifier(tmp_path, capsys):
    import keras_vit
    from keras_vit.applications.saving import ClassifierMetadata, save_classifier

    path = str(tmp_path / "classifier.keras")
    save_classifier(keras_vit.create_model("vit_pico8", classes=2, input_shape=(16, 16, 3)), path,
                    ClassifierMetadata(class_names=["a", "b"], image_size=16))
    assert cli.main(["generate", "--model", path]) == 2
    assert "classification model; keras-vit generate and probe need a generative model" in capsys.readouterr().err


def test_info_prints_dense_and_blockwise_attention_memory(capsys):
    cli.main(["info", "igpt_l", "--image-size", "128"])
    out = capsys.readouterr().out
    assert "16,384 tokens" in out and "768.0 GiB" in out and "4.00 MiB" in out
