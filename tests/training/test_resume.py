import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_vit.training import NonFiniteLossError, StopOnNonFiniteLoss, TrainingCheckpoint, restore_checkpoint, train
from tests.conftest import to_numpy


def _tiny_model():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    x = np.random.RandomState(0).randn(32, 4).astype("float32")
    y = np.arange(32) % 2
    model = _tiny_model()
    checkpoint = TrainingCheckpoint(str(tmp_path))
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[StopOnNonFiniteLoss(str(tmp_path)), checkpoint], verbose=0)
    good = [to_numpy(w).copy() for w in model.weights]
    x[20] = np.nan  # the third batch of the next epoch
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, step 3 \(optimizer step 7\).*1 epochs \+ 0 steps.*kept"):
        model.fit(x, y, batch_size=8, epochs=2, initial_epoch=1, shuffle=False,
                  callbacks=[StopOnNonFiniteLoss(str(tmp_path)), checkpoint], verbose=0)
    restored = _tiny_model()
    state = restore_checkpoint(restored, str(tmp_path))
    assert (state["epoch"], state["step"], state["optimizer_steps"]) == (1, 0, 4)
    for weight, expected in zip(restored.weights, good):
        np.testing.assert_array_equal(to_numpy(weight), expected)
    assert int(restored.optimizer.iterations) == 4  # the optimizer state came back too


def test_step_checkpoints_record_the_position_inside_the_epoch(tmp_path):
    x, y = np.ones((40, 4), "float32"), np.zeros(40, "int32")
    model = _tiny_model()
    checkpoint = TrainingCheckpoint(str(tmp_path), save_every_steps=3, steps_per_epoch=5)
    saved = []
    original = checkpoint.save
    checkpoint.save = lambda epoch, step: (saved.append((epoch, step)), original(epoch, step))
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[checkpoint], verbose=0)
    # steps 3 and 6 (= epoch 1, step 1) and 9 (epoch 1, step 4), plus each epoch end
    assert saved == [(0, 3), (1, 0), (1, 1), (1, 4), (2, 0)]
    assert len([name for name in os.listdir(tmp_path) if name.endswith(".weights.h5")]) == 1


def _train_command(data_dir, output_dir):
    return [sys.executable, "-m", "keras_vit.cli", "train", "--dataset", "shapes/small", "--data-dir", data_dir,
            "--image-size", "32", "--batch-size", "16", "--epochs", "3", "--steps-per-epoch", "8",
            "--checkpoint-every", "3", "--output-dir", output_dir]


@pytest.mark.slow
@pytest.mark.backend_agnostic  # the process kill and the command-line resume are backend-independent; every leg
# resumes mid-epoch in process and checks the weights equal an uninterrupted run's (test_run_folder)
def test_run_killed_mid_epoch_resumes_with_the_same_command(tmp_path, shapes_data_dir):
    """SIGKILL after the first step checkpoint; the same command finishes 3 epochs = 24 optimizer steps."""
    output_dir = str(tmp_path / "run")
    command = _train_command(shapes_data_dir, output_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    state_path = os.path.join(output_dir, "checkpoint", "checkpoint.json")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not os.path.exists(state_path) and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert os.path.exists(state_path), "no checkpoint was written"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not os.path.exists(os.path.join(output_dir, "model.keras"))
    with open(state_path) as file:
        killed_at = json.load(file)
    assert killed_at["optimizer_steps"] < 24

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert summary["resumed_from"] is not None and summary["resumed_from"]["epoch"] <= 2
    assert summary["optimizer_steps"] == 24  # an uninterrupted run's 3 x 8: no step repeated or lost
    assert len(history["loss"]) == len(history["val_accuracy"]) == 3
    assert not os.path.exists(os.path.join(output_dir, "checkpoint"))


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path, shapes_data_dir):
    output_dir = tmp_path / "run"
    (output_dir / "checkpoint").mkdir(parents=True)
    (output_dir / "checkpoint" / "run.json").write_text(json.dumps({"batch_size": 64}))
    with pytest.raises(ValueError, match="holds the checkpoint of an interrupted run with other settings.*batch_size 64 -> 16"):
        train("vit_pico8", "shapes/small", data_dir=shapes_data_dir, image_size=32, batch_size=16, epochs=1,
              output_dir=str(output_dir), verbose=0)
