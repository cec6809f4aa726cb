"""`tune(...)`: the end-to-end search behind `keras-vit tune`.

It builds an `AugRegHyperModel` (`hypermodel.py`) over a `SearchSpace`
(`search_space.py`), runs one of the tuners of `tuners.py` (in chief/worker
mode too: `distributed.py`) and writes the results (`report.py`):
`best_hyperparameters.json`, `best_model.keras`, `trials.csv`, `trials.json`,
`augreg.png`; the KerasTuner project (oracle state, one folder per trial) lives
in `output_dir/search`. Running the same call again continues an interrupted
search (finished trials are kept; the trial that was running is run again).
Its defaults, shared with `keras-vit tune`, are in `defaults.py`.
"""

import dataclasses
import os
import time

from keras_vit.training.run_folder import read_json
from keras_vit.tuning.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATASET,
    DEFAULT_EPOCHS_PER_TRIAL,
    DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_SEARCH_SPACE,
    DEFAULT_TUNER,
    default_max_trials,
)
from keras_vit.tuning.distributed import role
from keras_vit.tuning.hypermodel import AugRegHyperModel
from keras_vit.tuning.report import trial_records, write_json, write_results
from keras_vit.tuning.search_space import get_space
from keras_vit.tuning.tuners import OBJECTIVE, check_tuner_name, make_tuner


@dataclasses.dataclass
class TuneResult:
    """What `tune` produced. On a worker only `role` and `output_dir` are set."""

    role: str
    output_dir: str
    best_hyperparameters: dict | None = None
    best_score: float | None = None
    trials: list | None = None
    tuner: object = None
    seconds: float = 0.0


def tune(
    model=DEFAULT_MODEL,
    dataset=DEFAULT_DATASET,
    *,
    tuner=DEFAULT_TUNER,
    search_space=DEFAULT_SEARCH_SPACE,
    max_trials=None,
    complete_grid=False,
    epochs_per_trial=DEFAULT_EPOCHS_PER_TRIAL,
    output_dir="runs/tune",
    data_dir=None,
    image_size=DEFAULT_IMAGE_SIZE,
    batch_size=DEFAULT_BATCH_SIZE,
    steps_per_epoch=None,
    seed=0,
    overwrite=False,
    distribution_strategy=None,
    max_retries_per_trial=DEFAULT_MAX_RETRIES,
    heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT,
    heartbeat_interval=None,
    model_kwargs=None,
    verbose=1,
):
    """Searches augmentation and regularization for `model` on `dataset` and writes the results.

    The defaults are those of `keras-vit tune` (`keras_vit.tuning.defaults`): a
    random search over AugReg's grid on `shapes`, 6 trials of 2 epochs at 32 px.

    Args:
        model, dataset, data_dir, batch_size, steps_per_epoch, seed,
            model_kwargs: as `AugRegHyperModel`.
        tuner: "grid", "random", "bayesian" or "hyperband" (default "random").
        search_space: a `SearchSpace` or a preset name ("augreg": AugReg's
            28-point grid; "continuous": the same knobs as ranges).
        max_trials: at most this many trials (default: grid: every point;
            random and Bayesian: 6; Hyperband: no cap).
        complete_grid, distribution_strategy, max_retries_per_trial,
            heartbeat_timeout, heartbeat_interval: as `make_tuner`.
        epochs_per_trial: epochs of each trial (Hyperband: the most a trial gets).
        image_size: square input side (default 32, which keeps the default
            search to a few minutes; None: the model's own size).
        output_dir: results go here; the KerasTuner project is `output_dir/search`.
        overwrite: start afresh instead of continuing a search found in `output_dir`.
        verbose: 0 silent, 1 progress per trial, 2 also one line per epoch.

    In KerasTuner's chief/worker mode (environment variables `KERASTUNER_TUNER_ID`,
    `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`; `keras-vit tune --chief/--worker`)
    the chief runs the oracle and writes the results when the workers are done; a
    worker runs trials and writes only its trials' folders.

    Returns a `TuneResult`.
    """
    check_tuner_name(tuner)
    if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1):
        raise ValueError(f"max_trials (--max-trials) must be a positive int or None (the tuner's default), got {max_trials!r}.")
    space = get_space(search_space).validate(tuner=tuner)
    if max_trials is None:
        max_trials = default_max_trials(tuner, space)
    hypermodel = AugRegHyperModel(
        model, dataset, search_space=space, data_dir=data_dir, image_size=image_size, batch_size=batch_size,
        epochs=epochs_per_trial, steps_per_epoch=steps_per_epoch, seed=seed, model_kwargs=model_kwargs,
        verbose=2 if verbose >= 2 else 0,
    )
    current = role()
    # Settings that must stay the same when an interrupted search is continued (except max_trials).
    run = {
        "model": model, "dataset": dataset, "tuner": tuner, "max_trials": max_trials,
        "epochs_per_trial": epochs_per_trial, "batch_size": batch_size, "image_size": hypermodel.image_size,
        "steps_per_epoch": steps_per_epoch, "seed": seed, "search_space": space.describe(),
    }
    if current != "worker":
        _check_same_search(output_dir, run, overwrite)
    search = make_tuner(
        tuner, hypermodel, max_trials=max_trials, complete_grid=complete_grid, directory=output_dir,
        overwrite=overwrite and current != "worker", seed=seed, distribution_strategy=distribution_strategy,
        max_retries_per_trial=max_retries_per_trial, heartbeat_timeout=heartbeat_timeout,
        heartbeat_interval=heartbeat_interval,
    )
    if current != "worker":
        os.makedirs(output_dir, exist_ok=True)
        write_json(os.path.join(output_dir, "tune_config.json"), run)
    if verbose and current != "worker":
        search.search_space_summary()
    start = time.time()
    search.search(verbose=1 if verbose else 0)
    seconds = time.time() - start
    if current == "worker":
        return TuneResult(role=current, output_dir=output_dir, tuner=search, seconds=seconds)
    trials = trial_records(search)
    best = write_results(search, trials, output_dir, model, dataset, verbose)
    return TuneResult(
        role=current, output_dir=output_dir, best_hyperparameters=best and best["hyperparameters"],
        best_score=best and best[OBJECTIVE], trials=trials, tuner=search, seconds=seconds,
    )


def _check_same_search(output_dir, run, overwrite):
    path = os.path.join(output_dir, "tune_config.json")
    if overwrite or not os.path.exists(path):
        return
    saved = read_json(
        path, "The search record",
        "Pass --overwrite (overwrite=True) to start the search over, or another --output-dir.",
    )
    if not isinstance(saved, dict):
        raise ValueError(f"The search record {path!r} is not a JSON object. Pass --overwrite to start the search over.")
    # max_trials may grow or shrink: KerasTuner's oracle takes the new cap.
    changed = {key: (saved.get(key), value) for key, value in run.items()
               if saved.get(key) != value and key != "max_trials"}
    if changed:
        details = "; ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ValueError(
            f"{output_dir!r} holds a search with other settings ({details}). Run the same command to continue "
            "it, pass another --output-dir, or --overwrite to start over."
        )
