"""KerasTuner's own tuners, with a journal, heartbeats and fixes for this search.

`make_tuner(name, hypermodel, ...)` returns one of KerasTuner's tuners
(GridSearch, RandomSearch, BayesianOptimization, Hyperband) with these
additions:

- a journal: every attempt at a trial appends `start`/`end` lines (tuner id,
  process id, time) to `trial_<id>/attempts.jsonl`, so a search can show that
  no finished trial ran twice;
- chief/worker mode (`keras_vit.tuning.distributed`): a worker sends
  heartbeats while it trains, and the chief requeues the trials of silent
  workers;
- `ResumableGridSearchOracle`: a grid search that can be continued after a
  reload (KerasTuner 1.4.8's GridSearchOracle cannot);
- no TensorBoard import when no TensorBoard callback is given.
"""

import difflib
import json
import os
import threading
import time

import keras_tuner as kt

from keras_vit.tuning.defaults import DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_MAX_RETRIES, default_max_trials
from keras_vit.tuning.distributed import role, send_heartbeats, serve_oracle

TUNERS = ("grid", "random", "bayesian", "hyperband")
OBJECTIVE = "val_accuracy"
PROJECT_NAME = "search"
# The journal of a trial's attempts, in its KerasTuner trial folder.
ATTEMPTS_FILE = "attempts.jsonl"


class _SearchMixin:
    """Journal, worker heartbeats and a chief that requeues the trials of silent workers."""

    heartbeat_interval = 2.0
    heartbeat_timeout = DEFAULT_HEARTBEAT_TIMEOUT

    def run_trial(self, trial, *args, **kwargs):
        self._journal(trial.trial_id, "start")
        stop = threading.Event()
        beat = None
        if role() == "worker":
            beat = threading.Thread(target=send_heartbeats, args=(self.oracle, trial.trial_id, stop,
                                                                  self.heartbeat_interval), daemon=True)
            beat.start()
        try:
            results = super().run_trial(trial, *args, **kwargs)
        except BaseException as error:
            self._journal(trial.trial_id, "error", error=repr(error)[:500])
            raise
        finally:
            stop.set()
        self._journal(trial.trial_id, "end")
        return results

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # KerasTuner imports tensorboard on the TensorFlow backend even without a TensorBoard
        # callback, and TensorFlow 2.21 no longer installs it.
        if any(callback.__class__.__name__ == "TensorBoard" for callback in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)

    def _journal(self, trial_id, event, **extra):
        record = {"event": event, "tuner_id": self.tuner_id, "pid": os.getpid(), "time": time.time(), **extra}
        with open(os.path.join(self.get_trial_dir(trial_id), ATTEMPTS_FILE), "a") as file:
            file.write(json.dumps(record) + "\n")

    def search(self, *fit_args, **fit_kwargs):
        if role() != "chief":
            return super().search(*fit_args, **fit_kwargs)
        if "verbose" in fit_kwargs:
            self.oracle.verbose = fit_kwargs["verbose"]
        self.save()
        serve_oracle(self.oracle, self.heartbeat_timeout)


def read_attempts(search, trial_id):
    """The journal of `trial_id` in `search` (a tuner): one dict per line, [] before its first attempt."""
    path = os.path.join(search.project_dir, f"trial_{trial_id}", ATTEMPTS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


class ResumableGridSearchOracle(kt.oracles.GridSearchOracle):
    """KerasTuner's GridSearchOracle that can continue a reloaded search.

    KerasTuner 1.4.8 does not save the grid's ordered trial list and "next to
    expand" queue with the oracle, so `create_trial` on a reloaded grid search
    fails with a KeyError on the first trial id. They follow from the trials,
    so they are rebuilt on reload.
    """

    def set_state(self, state):
        import functools

        from keras_tuner.src.tuners.gridsearch import LinkedList

        super().set_state(state)
        values = {trial_id: trial.hyperparameters.values for trial_id, trial in self.trials.items()}
        ordered = sorted(values, key=functools.cmp_to_key(lambda a, b: self._compare(values[a], values[b])))
        self._ordered_ids = LinkedList()
        for trial_id in ordered:
            self._ordered_ids.insert(trial_id)
        # Any trial may have an untried next combination; populate_space skips the tried ones.
        self._populate_next = list(ordered)


class GridSearchTuner(_SearchMixin, kt.Tuner):
    """KerasTuner's GridSearch (with `ResumableGridSearchOracle`), the journal and heartbeats."""

    def __init__(self, hypermodel=None, objective=None, max_trials=None, seed=None, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3, **kwargs):
        self.seed = seed
        oracle = ResumableGridSearchOracle(
            objective=objective, max_trials=max_trials, seed=seed, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle, hypermodel, **kwargs)


class RandomSearchTuner(_SearchMixin, kt.RandomSearch):
    """KerasTuner's RandomSearch with the journal and heartbeats."""


class BayesianOptimizationTuner(_SearchMixin, kt.BayesianOptimization):
    """KerasTuner's BayesianOptimization with the journal and heartbeats."""


class HyperbandTuner(_SearchMixin, kt.Hyperband):
    """KerasTuner's Hyperband with the journal and heartbeats."""


_TUNER_CLASSES = {
    "grid": GridSearchTuner,
    "random": RandomSearchTuner,
    "bayesian": BayesianOptimizationTuner,
    "hyperband": HyperbandTuner,
}


def check_tuner_name(name):
    if name not in TUNERS:
        close = difflib.get_close_matches(str(name), TUNERS, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown tuner {name!r}.{hint} Tuners: {', '.join(TUNERS)}.")


def make_tuner(
    name,
    hypermodel,
    *,
    max_trials=None,
    complete_grid=False,
    directory="runs/tune",
    project_name=PROJECT_NAME,
    overwrite=False,
    seed=0,
    distribution_strategy=None,
    max_retries_per_trial=DEFAULT_MAX_RETRIES,
    max_consecutive_failed_trials=3,
    heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT,
    heartbeat_interval=None,
    hyperband_factor=3,
):
    """One of KerasTuner's tuners over `hypermodel` (an `AugRegHyperModel`), objective `val_accuracy`.

    Args:
        name: "grid" (every point of the search space's choices), "random",
            "bayesian" (Gaussian process) or "hyperband".
        max_trials: at most this many trials (default: `default_max_trials`).
            Grid: the whole grid. Random and Bayesian: `DEFAULT_MAX_TRIALS`
            (6). Hyperband: no cap (its brackets decide; `hypermodel.epochs`
            is its `max_epochs`).
        complete_grid: with "grid", require every grid point: a `max_trials`
            below the grid size is a ValueError.
        directory, project_name: where KerasTuner keeps its state; a second
            call with the same values and `overwrite=False` continues the search.
        distribution_strategy: a `tf.distribute.Strategy` each trial builds and
            trains under (TensorFlow backend). For JAX, set a
            `keras.distribution` before the search instead.
        max_retries_per_trial: runs again a trial that crashed, or whose
            process or worker died, this many times before it is FAILED.
        heartbeat_timeout: chief/worker mode: seconds without a worker's
            heartbeat after which the chief gives its trial to another worker.
        heartbeat_interval: seconds between a worker's heartbeats (default:
            a fifth of the timeout, at most 2).
    """
    import keras

    check_tuner_name(name)
    space = hypermodel.search_space.validate(tuner=name)
    if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 1):
        raise ValueError(f"max_trials must be a positive int or None, got {max_trials!r}.")
    if name == "grid":
        size = space.grid_size()
        if complete_grid and max_trials is not None and max_trials < size:
            raise ValueError(
                f"max_trials={max_trials} is smaller than the complete grid of {size} points "
                f"({space.describe()}). Pass max_trials={size} (or leave it out) to run the whole grid, "
                "or drop complete_grid (--complete-grid) to run only the first points."
            )
    elif complete_grid:
        raise ValueError(f"complete_grid applies to the grid tuner, not {name!r}. Use --tuner grid or drop it.")
    if distribution_strategy is not None and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"distribution_strategy is a tf.distribute.Strategy, which needs the TensorFlow backend; this is "
            f"{keras.backend.backend()!r}. On JAX set keras.distribution.set_distribution(...) "
            "(keras_vit.training.distribute.configure_jax_distribution) before the search instead."
        )
    if max_trials is None:
        # Grid: a cap, even the whole grid, also keeps KerasTuner's trial ids short ("07", not "0007").
        max_trials = default_max_trials(name, space)
    common = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(OBJECTIVE, direction="max"),
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        seed=seed,
        distribution_strategy=distribution_strategy,
        max_retries_per_trial=max_retries_per_trial,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
    )
    cls = _TUNER_CLASSES[name]
    if name == "hyperband":
        tuner = cls(max_epochs=hypermodel.epochs, factor=hyperband_factor, **common)
        # KerasTuner's Hyperband has no trial cap of its own; the base oracle honours this one.
        tuner.oracle.max_trials = max_trials
    else:
        tuner = cls(max_trials=max_trials, **common)
    tuner.heartbeat_timeout = float(heartbeat_timeout)
    tuner.heartbeat_interval = heartbeat_interval or min(2.0, tuner.heartbeat_timeout / 5)
    return tuner
