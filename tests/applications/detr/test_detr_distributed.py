"""DETRLoss across devices, in a fresh process: under tf.distribute the box count is the global one
(each replica's L1 + GIoU share sums to the single-device loss), and DETR fits under JAX data
parallelism over 2 host devices."""

import json
import os
import subprocess
import sys

import keras
import pytest

from tests.conftest import FAST_COMPILE_XLA_FLAGS

SCRIPT = """
import json, sys
import numpy as np
backend, out = sys.argv[1:3]
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_vit.applications.detr.loss import DETRLoss

rng = np.random.default_rng(0)
def problem(count, targets=4, queries=6, classes=3):
    valid = np.zeros((1, targets), "float32"); valid[0, :count] = 1
    boxes = np.concatenate([rng.uniform(0.3, 0.7, (1, targets, 2)), rng.uniform(0.1, 0.3, (1, targets, 2))], -1)
    y = {"boxes": boxes.astype("float32"), "labels": rng.integers(0, classes, (1, targets)).astype("int32"), "valid": valid}
    pred = {"logits": rng.normal(size=(1, queries, classes + 1)).astype("float32"),
            "pred_boxes": np.concatenate([rng.uniform(0.3, 0.7, (1, queries, 2)), rng.uniform(0.1, 0.3, (1, queries, 2))], -1).astype("float32")}
    return y, pred
result = {}
if backend == "tensorflow":
    parts = [problem(4), problem(1)]  # replicas with 4 and 1 objects: the global mean is 2.5
    loss = DETRLoss(class_weight=0.0)  # L1 + GIoU: normalized by the global box count only
    whole = {k: np.concatenate([parts[0][0][k], parts[1][0][k]]) for k in parts[0][0]}
    whole_pred = {k: np.concatenate([parts[0][1][k], parts[1][1][k]]) for k in parts[0][1]}
    single = float(loss(whole, whole_pred))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    def value(context):
        y, pred = parts[context.replica_id_in_sync_group]
        return loss(y, pred)
    per_replica = strategy.run(lambda: value(tf.distribute.get_replica_context()))
    # Keras divides each replica's loss by the replica count and sums the gradients.
    result["replicated"] = float(strategy.reduce("SUM", per_replica, axis=None)) / 2
    result["single"] = single
else:
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    import keras_vit
    backbone = keras_vit.model_info("resnet50").builder(depths=(1, 1), widths=(8, 16), filters=(32, 64), include_top=False,
        pooling=None, include_preprocessing=False, input_shape=(None, None, 3))
    model = keras_vit.applications.DETR(backbone, num_queries=5, hidden_dim=16, num_heads=2, encoder_layers=1, decoder_layers=2, ffn_dim=32, classes=3)
    model.compile(optimizer="adam", loss=DETRLoss())
    y, _ = problem(2, targets=3)
    ys = {k: np.repeat(v, 4, axis=0) for k, v in y.items()}
    x = {"images": rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32"), "pixel_mask": np.ones((4, 32, 32), "float32")}
    history = model.fit(x, ys, batch_size=4, epochs=2, verbose=0)
    result["losses"] = history.history["loss"]
json.dump(result, open(out, "w"))
"""


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() == "torch", reason="PyTorch trains on one device (no distribution to test)")
def test_detr_loss_across_devices(tmp_path):
    backend = keras.backend.backend()
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": f"{FAST_COMPILE_XLA_FLAGS} --xla_force_host_platform_device_count=2"}
    out = str(tmp_path / "result.json")
    process = subprocess.run([sys.executable, "-c", SCRIPT, backend, out], env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(open(out).read())
    if backend == "tensorflow":
        assert abs(result["replicated"] - result["single"]) < 1e-5 * result["single"], result
    else:
        assert len(result["losses"]) == 2 and all(value == value for value in result["losses"])
