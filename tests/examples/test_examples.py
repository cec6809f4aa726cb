"""The scripts in examples/ run as a user would run them (TensorFlow, CPU dry runs of the TPU/GPU scripts)."""

import os
import subprocess
import sys

import keras
import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                       reason="the example scripts use tf.distribute; scripts/test.sh's TensorFlow leg runs them"),
]


def _run(script, *args, timeout=300):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("script,recipe", [("train_multi_gpu.py", "swin"), ("train_tpu_augreg.py", "augreg-strong2-reg")])
def test_example_trains_and_saves(tmp_path, shapes_data_dir, script, recipe):
    out = str(tmp_path / "run")
    directory = ["--output-dir", out] if script == "train_multi_gpu.py" else ["--model-dir", out]
    result = _run(script, "--strategy", "cpu", "--dataset", "shapes/small", "--data-dir", shapes_data_dir,
                  "--model", "vit_pico8", "--recipe", recipe, "--image-size", "32", "--per-replica-batch", "16",
                  "--epochs", "2", "--steps-per-epoch", "2", *directory)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(os.path.join(out, "model.keras"))
    assert keras.saving.load_model(os.path.join(out, "model.keras")).output_shape == (None, 6)


def test_tpu_example_without_a_tpu_fails_clearly(tmp_path, shapes_data_dir):
    result = _run("train_tpu_augreg.py", "--data-dir", shapes_data_dir, "--dataset", "shapes/small",
                  "--model-dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "TPU" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "run").exists()
