"""`train()` under a distribution: 2 logical CPUs (TensorFlow) or 2 host devices (JAX), in a fresh process."""

import json
import os
import subprocess
import sys

import keras
import pytest

from tests.conftest import FAST_COMPILE_XLA_FLAGS

SCRIPT = """
import json, os, sys
backend, data_dir, out = sys.argv[1:4]
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = "mirrored"
else:
    strategy = "auto"
from keras_vit.training import train
common = dict(data_dir=data_dir, image_size=32, epochs=1, steps_per_epoch=2, strategy=strategy, verbose=0)
try:
    train("vit_pico8", "shapes/small", batch_size=15, output_dir=out + "/odd", **common)
    error = None
except ValueError as caught:
    error = str(caught)
train("vit_pico8", "shapes/small", batch_size=16, output_dir=out + "/run", **common)
json.dump({"error": error}, open(out + "/result.json", "w"))
"""


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() == "torch", reason="PyTorch trains on one device (no distribution to test)")
def test_train_splits_the_global_batch_over_two_devices(tmp_path, shapes_data_dir):
    backend = keras.backend.backend()
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": f"{FAST_COMPILE_XLA_FLAGS} --xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, backend, shapes_data_dir, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    error = json.loads((tmp_path / "result.json").read_text())["error"]
    assert "Global batch size 15 does not split evenly over 2 replicas" in error and "14 or 16" in error
    assert not (tmp_path / "odd").exists()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["optimizer_steps"] == 2 and summary["batch_size"] == 16
