import json

import pytest

from keras_vit import cli
from keras_vit.training import train


@pytest.mark.slow
def test_mixed_bfloat16_training(tmp_path, shapes_data_dir):
    result = train("vit_pico8", "shapes/small", data_dir=shapes_data_dir, image_size=32, batch_size=16, epochs=1,
                   steps_per_epoch=2, precision="mixed_bfloat16", output_dir=str(tmp_path / "run"), verbose=0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["precision"] == "mixed_bfloat16"
    assert result.model.layers[-2].compute_dtype == "bfloat16" and result.model.layers[-2].variable_dtype == "float32"
    assert all(variable.dtype == "float32" for variable in result.model.trainable_weights)
    assert result.history["loss"][0] == pytest.approx(result.history["loss"][0])  # finite, not NaN


@pytest.mark.slow
def test_cli_nan_loss_exits_naming_the_step(tmp_path, shapes_data_dir, capsys):
    code = cli.main(["train", "--data-dir", shapes_data_dir, "--dataset", "shapes/small", "--image-size", "32",
                     "--batch-size", "16", "--epochs", "2", "--steps-per-epoch", "3", "--learning-rate", "1e30",
                     "--warmup-epochs", "0", "--output-dir", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 3, error
    assert "training stopped: The training loss became nan at epoch 1, step" in error
    assert not (tmp_path / "run" / "model.keras").exists()


def test_cli_unknown_recipe(tmp_path, capsys):
    assert cli.main(["train", "--recipe", "augreg-strong3", "--output-dir", str(tmp_path / "run")]) == 2
    assert "Unknown recipe 'augreg-strong3'. Did you mean augreg-strong" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
