import pytest
import json
import os

from keras_vit import cli
from tests.tuning.conftest import TINY

pytestmark = pytest.mark.backend_agnostic


def test_tune_grid_from_the_command_line(tmp_path, shapes_data_dir, capsys):
    out = tmp_path / "grid"
    code = cli.main(["tune", *TINY, "--data-dir", shapes_data_dir, "--tuner", "grid", "--search", "augmentation=none,strong1",
                     "--search", "regularization=noreg", "--search", "weight_decay=0.1", "--complete-grid",
                     "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "Search: Running Trial #2" in printed and "Trials (best first)" in printed
    assert "2 trials in" in printed and "best_model.keras" in printed
    trials = json.loads((out / "trials.json").read_text())
    assert sorted(t["augmentation"] for t in trials) == ["none", "strong1"]
    assert {t["recipe"] for t in trials} == {"augreg-none-wd0.1", "augreg-strong1-wd0.1"}
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["recipe"] in {"augreg-none-wd0.1", "augreg-strong1-wd0.1"}
    assert best["train_command"].endswith(f"--recipe {best['recipe']}")
    assert os.path.getsize(out / "augreg.png") > 1000


def test_tune_errors_name_the_values_and_the_fix(tmp_path, capsys):
    assert cli.main(["tune", "--tuner", "hyperbnd", "--output-dir", str(tmp_path)]) == 2
    assert "Unknown tuner 'hyperbnd'. Did you mean hyperband?" in capsys.readouterr().err
    assert cli.main(["tune", "--tuner", "grid", "--max-trials", "5", "--complete-grid", "--output-dir", str(tmp_path)]) == 2
    assert "max_trials=5 is smaller than the complete grid of 28 points" in capsys.readouterr().err
    assert cli.main(["tune", "--search", "augmentation=", "--output-dir", str(tmp_path)]) == 2
    assert "--search expects KNOB=SPEC" in capsys.readouterr().err
    assert cli.main(["tune", "--worker", "w0", "--output-dir", str(tmp_path)]) == 2
    assert "--oracle-address HOST:PORT" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_tune_trials_run_under_a_strategy(tmp_path, shapes_data_dir, capsys):
    import keras

    out = tmp_path / "search"
    argv = ["tune", *TINY, "--data-dir", shapes_data_dir, "--tuner", "grid", "--search", "augmentation=light2",
            "--search", "regularization=noreg", "--search", "weight_decay=0.1,0.03", "--max-trials", "1", "--strategy", "mirrored",
            "--output-dir", str(out)]
    code = cli.main(argv)
    captured = capsys.readouterr()
    if keras.backend.backend() == "tensorflow":
        assert code == 0, captured.err
        assert len(json.loads((out / "trials.json").read_text())) == 1
    else:  # tf.distribute strategies need the TensorFlow backend; JAX has data/model, PyTorch one device
        assert code == 2 and "strategy='mirrored' is not available on the" in captured.err
        assert not out.exists()


def test_tune_and_the_command_line_share_their_defaults(tmp_path):
    import inspect

    from keras_vit import tuning

    args = cli.build_parser().parse_args(["tune"])
    params = inspect.signature(tuning.tune).parameters
    for option, parameter in [("model", "model"), ("dataset", "dataset"), ("tuner", "tuner"), ("space", "search_space"),
                              ("max_trials", "max_trials"), ("epochs_per_trial", "epochs_per_trial"),
                              ("image_size", "image_size"), ("batch_size", "batch_size"), ("seed", "seed"),
                              ("max_retries", "max_retries_per_trial"), ("heartbeat_timeout", "heartbeat_timeout")]:
        assert getattr(args, option) == params[parameter].default, option
    assert (args.tuner, args.epochs_per_trial, args.image_size) == ("random", 2, 32)
    # No --max-trials: 6 trials for random and Bayesian, the whole grid, Hyperband's brackets.
    grid = tuning.augreg_grid()
    assert [tuning.default_max_trials(name, grid) for name in tuning.TUNERS] == [28, 6, 6, None]
    hypermodel = tuning.AugRegHyperModel(search_space=grid)
    assert tuning.make_tuner("random", hypermodel, directory=str(tmp_path)).oracle.max_trials == 6
