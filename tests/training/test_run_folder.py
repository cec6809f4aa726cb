"""The run folder never loses or half-writes a result: refusals, locks, all-or-nothing artifacts,
atomic and checked state files (issue 13, items 1-5, 9, 11, 13, 14)."""

import errno
import json
import os

import keras
import numpy as np
import pytest

from keras_vit import cli
from keras_vit.data import load_epochs
from keras_vit.training import TrainingCheckpoint, restore_checkpoint, train
from keras_vit.training import run_folder as run_folder_module
from keras_vit.training.run_folder import RunFolder, write_json_atomically
from keras_vit.training.train import _keep_training_weights
from tests.conftest import to_numpy

TINY = dict(dataset="shapes/small", image_size=32, batch_size=8, epochs=1, steps_per_epoch=1, verbose=0)


def _train(shapes_data_dir, output_dir, **options):
    return train("vit_pico8", data_dir=shapes_data_dir, output_dir=str(output_dir), **{**TINY, **options})


def _tiny_model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.backend_agnostic
def test_finished_run_is_refused_naming_what_differs_and_overwrite_replaces_it(tmp_path, shapes_data_dir):
    out = tmp_path / "run"
    _train(shapes_data_dir, out, batch_size=8)
    finished = (out / "summary.json").read_text()
    with pytest.raises(ValueError, match=r"holds a finished run with other settings \(batch_size 8 -> 4, learning_rate [0-9.]+ -> [0-9.]+, seed 0 -> 5\).*--overwrite"):
        _train(shapes_data_dir, out, batch_size=4, seed=5)
    assert (out / "summary.json").read_text() == finished
    with pytest.raises(ValueError, match="holds a finished run with the same settings"):
        _train(shapes_data_dir, out, batch_size=8)
    _train(shapes_data_dir, out, batch_size=4, seed=5, overwrite=True)
    assert json.loads((out / "summary.json").read_text())["batch_size"] == 4
    assert sorted(os.listdir(out)) == ["curves.png", "history.json", "model.keras", "summary.json"]


@pytest.mark.backend_agnostic
def test_cli_refuses_a_finished_run_with_exit_2(tmp_path, shapes_data_dir, capsys):
    argv = ["train", "--data-dir", shapes_data_dir, "--dataset", "shapes/small", "--image-size", "32", "--batch-size", "8",
            "--epochs", "1", "--steps-per-epoch", "1", "--output-dir", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    assert cli.main(argv + ["--seed", "3"]) == 2
    assert "holds a finished run with other settings (seed 0 -> 3)" in capsys.readouterr().err
    assert cli.main(argv + ["--seed", "3", "--overwrite"]) == 0


@pytest.mark.backend_agnostic
def test_artifacts_are_staged_inside_the_run_folder(tmp_path, monkeypatch):
    """A run folder that is a mount point: a rename from outside it fails with EXDEV."""
    out = tmp_path / "mount"
    real_replace = os.replace

    def replace(source, target):
        if os.path.dirname(os.path.dirname(os.path.abspath(source))) != os.path.abspath(out):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(source, target)

    monkeypatch.setattr(run_folder_module.os, "replace", replace)
    with RunFolder(out) as folder:
        folder.write_artifacts({name: lambda path: open(path, "w").close() for name in run_folder_module.ARTIFACTS})
    assert sorted(os.listdir(out)) == sorted(run_folder_module.ARTIFACTS)


@pytest.mark.backend_agnostic
def test_artifacts_appear_all_or_none(tmp_path):
    out = tmp_path / "run"

    def broken(path):
        raise OSError("disk full")

    with RunFolder(out) as folder:
        with pytest.raises(OSError, match="disk full"):
            folder.write_artifacts({"model.keras": lambda path: open(path, "w").close(), "history.json": broken,
                                    "summary.json": lambda path: open(path, "w").close()})
    assert os.listdir(out) == []


@pytest.mark.backend_agnostic
def test_a_folder_in_place_of_an_artifact_is_refused_before_training(tmp_path, shapes_data_dir):
    out = tmp_path / "run"
    (out / "model.keras").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"model.keras in .* is a folder, where the run will write a file"):
        _train(shapes_data_dir, out)
    assert os.listdir(out) == ["model.keras"]


@pytest.mark.backend_agnostic
def test_a_second_writer_is_refused_and_the_lock_goes_with_the_run(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out):
        with pytest.raises(ValueError, match=rf"Another process \(pid {os.getpid()}\) is training into"):
            with RunFolder(out):
                pass
    assert os.listdir(out) == []
    with RunFolder(out):  # released: the next run may take it
        pass


@pytest.mark.backend_agnostic
def test_output_dir_that_is_a_file_or_not_writable(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        with RunFolder(tmp_path / "file"):
            pass

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(run_folder_module.os, "makedirs", refuse)
    with pytest.raises(ValueError, match="is not writable \\(Permission denied\\)"):
        with RunFolder(tmp_path / "locked"):
            pass


@pytest.mark.backend_agnostic
def test_state_files_are_written_atomically(tmp_path):
    path = tmp_path / "run.json"
    write_json_atomically(str(path), {"epochs": 3})
    with pytest.raises(TypeError):
        write_json_atomically(str(path), {"epochs": object()})  # fails halfway through the dump
    assert json.loads(path.read_text()) == {"epochs": 3}
    assert os.listdir(tmp_path) == ["run.json"]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("run_json", [None, "", "{not json"])
def test_a_checkpoint_without_a_readable_run_record_is_refused(tmp_path, shapes_data_dir, run_json):
    checkpoint = tmp_path / "run" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "checkpoint.json").write_text(json.dumps({"epoch": 1, "step": 0}))
    if run_json is not None:
        (checkpoint / "run.json").write_text(run_json)
    message = "no run record" if run_json is None else "run record of the checkpoint .*run.json' cannot be read"
    with pytest.raises(ValueError, match=f"{message}.*--overwrite"):
        _train(shapes_data_dir, tmp_path / "run")
    assert (checkpoint / "checkpoint.json").exists()
    _train(shapes_data_dir, tmp_path / "run", overwrite=True)  # discards it and starts over
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["resumed_from"] is None


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "state,message",
    [
        ("{", "checkpoint.json' cannot be read"),
        (json.dumps({"epoch": "1", "step": 0, "optimizer_steps": 4, "weights": "checkpoint-4.weights.h5", "history": []}),
         "'epoch' must be an int >= 0, got '1'"),
        (json.dumps({"epoch": 1, "step": 0, "optimizer_steps": 4, "weights": "../../../x.weights.h5", "history": []}),
         "'weights' must name a file checkpoint-<steps>.weights.h5 in the same folder"),
        (json.dumps({"epoch": 1, "step": 0, "optimizer_steps": 4, "weights": "checkpoint-9.weights.h5", "history": []}),
         "checkpoint-9.weights.h5' named by .* is missing"),
    ],
)
def test_damaged_checkpoint_records_name_the_file_and_the_way_out(tmp_path, state, message):
    (tmp_path / "checkpoint.json").write_text(state)
    (tmp_path.parent / "x.weights.h5").write_text("outside")
    with pytest.raises(ValueError, match=f"{message}.*delete that folder"):
        restore_checkpoint(_tiny_model(), str(tmp_path))


@pytest.mark.backend_agnostic
def test_truncated_checkpoint_weights_name_the_file(tmp_path):
    model = _tiny_model()
    model.fit(np.ones((8, 4)), np.zeros(8), epochs=1, verbose=0, callbacks=[TrainingCheckpoint(str(tmp_path))])
    weights = tmp_path / json.loads((tmp_path / "checkpoint.json").read_text())["weights"]
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"weights file .*checkpoint-1.weights.h5' cannot be read.*delete that folder"):
        restore_checkpoint(_tiny_model(), str(tmp_path))


@pytest.mark.backend_agnostic
def test_each_epoch_is_rebuilt_alike_and_epochs_differ(shapes_data_dir):
    epoch_data, _ = load_epochs("shapes/small", data_dir=shapes_data_dir, image_size=16, batch_size=32, seed=1)

    def first_labels(dataset):
        return next(iter(dataset))[1].numpy()

    epoch_1 = epoch_data(1)
    np.testing.assert_array_equal(first_labels(epoch_1), first_labels(epoch_data(1)))
    np.testing.assert_array_equal(first_labels(epoch_1), first_labels(epoch_1))  # iterating again: the same epoch
    assert not np.array_equal(first_labels(epoch_data(0)), first_labels(epoch_1))


# Every leg: the resumed optimizer state and data position are backend-specific (test_resume kills a real
# process once, in the torch leg).
def test_a_run_resumed_mid_epoch_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, shapes_data_dir, monkeypatch):
    """Interrupted in epoch 2 after its first step checkpoint: the resumed run trains on the batches epoch 2 had
    left (not epoch 1's order again), so its weights equal those of a run that was never interrupted."""
    options = dict(epochs=2, steps_per_epoch=2, checkpoint_every=1)
    straight = _train(shapes_data_dir, tmp_path / "straight", **options).model.get_weights()

    original_save = TrainingCheckpoint.save

    def save_then_die(self, epoch, step):
        original_save(self, epoch, step)
        if (epoch, step) == (1, 1):
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainingCheckpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _train(shapes_data_dir, tmp_path / "resumed", **options)
    monkeypatch.setattr(TrainingCheckpoint, "save", original_save)
    result = _train(shapes_data_dir, tmp_path / "resumed", **options)
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["resumed_from"] == {"epoch": 1, "step": 1} and summary["optimizer_steps"] == 4
    for resumed, expected in zip(result.model.get_weights(), straight):
        np.testing.assert_allclose(resumed, expected, rtol=1e-5, atol=1e-6)


def test_the_moving_average_replaces_the_weights_only_after_the_last_epoch():
    model = _tiny_model()
    model.compile(optimizer=keras.optimizers.AdamW(0.1, use_ema=True, ema_momentum=0.5), loss="mse")
    x, y = np.ones((8, 4), "float32"), np.full((8, 2), 3.0, "float32")
    with _keep_training_weights(model.optimizer):
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    raw = [to_numpy(weight).copy() for weight in model.trainable_weights]
    averages = [to_numpy(model.optimizer._model_variables_moving_average[i]) for i in range(len(raw))]
    assert not np.allclose(raw[0], averages[0])  # the weights stayed the trained ones
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    averages = [to_numpy(average) for average in model.optimizer._model_variables_moving_average]
    for weight, average in zip(model.trainable_weights, averages):
        np.testing.assert_allclose(to_numpy(weight), average)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--checkpoint-every", "0"], "checkpoint_every must be positive, got 0"),
        (["train", "--steps-per-epoch", "0"], "steps_per_epoch must be positive, got 0"),
        (["info", "vit_pico8", "--image-size", "0"], "--image-size must be positive, got 0"),
        (["tune", "--max-trials", "0"], "max_trials (--max-trials) must be a positive int"),
    ],
)
def test_cli_zero_counts_are_refused(tmp_path, capsys, argv, message):
    assert cli.main(argv + (["--output-dir", str(tmp_path / "out")] if argv[0] != "info" else [])) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.backend_agnostic
def test_ctrl_c_prints_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_train", interrupted)
    assert cli.main(["train"]) == 130
    error = capsys.readouterr().err.strip()
    assert error == "keras-vit train: interrupted. Checkpoints written so far are kept: the same command resumes."


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("content", ["", "[1, 2]"])
def test_a_damaged_search_record_names_the_file(tmp_path, content):
    from keras_vit.tuning.workflow import _check_same_search

    (tmp_path / "tune_config.json").write_text(content)
    with pytest.raises(ValueError, match=r"tune_config.json.*--overwrite"):
        _check_same_search(str(tmp_path), {"model": "vit_pico8"}, overwrite=False)
    _check_same_search(str(tmp_path), {"model": "vit_pico8"}, overwrite=True)  # the way out


@pytest.mark.backend_agnostic
def test_the_tuning_chief_warns_when_it_listens_on_every_interface():
    from keras_vit.tuning.distributed import all_interfaces_warning

    assert "listens on all interfaces (0.0.0.0) without authentication" in all_interfaces_warning("0.0.0.0")
    assert all_interfaces_warning("[::]") and all_interfaces_warning("::")
    assert all_interfaces_warning("10.0.0.5") is None and all_interfaces_warning("127.0.0.1") is None
