"""Tuners and the end-to-end search behind `keras-vit tune`.

`make_tuner(name, hypermodel, ...)` returns one of KerasTuner's own tuners
(GridSearch, RandomSearch, BayesianOptimization, Hyperband) with three
additions:

- a journal: every attempt at a trial appends `start`/`end` lines (tuner id,
  process id, time) to `trial_<id>/attempts.jsonl`, so a search can show that
  no finished trial ran twice;
- worker heartbeats: in KerasTuner's chief/worker mode a worker pings the chief
  (a `GetTrial` call) every few seconds while it trains;
- a chief that notices a silent worker: a trial whose worker stopped pinging
  for `heartbeat_timeout` seconds is ended as INVALID, so KerasTuner retries it
  on another worker (`max_retries_per_trial`) or marks it FAILED, and the chief
  no longer waits for that worker to finish the search.

`tune(...)` runs a search and writes the results: `best_hyperparameters.json`,
`best_model.keras`, `trials.csv`, `trials.json`, `augreg.png`; the KerasTuner
project (oracle state, one folder per trial) lives in `output_dir/search`.
Running the same call again continues an interrupted search (finished trials
are kept; the trial that was running is run again).
"""

import csv
import dataclasses
import difflib
import json
import os
import sys
import threading
import time
import warnings

import keras_tuner as kt

from keras_vit.tuning.hypermodel import AugRegHyperModel
from keras_vit.tuning.search_space import KNOBS, get_space, resolve

TUNERS = ("grid", "random", "bayesian", "hyperband")
OBJECTIVE = "val_accuracy"
PROJECT_NAME = "search"
ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
_HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round", "tuner/trial_id")


# ---- roles -----------------------------------------------------------------------------------


def role():
    """The process's part in the search, from KerasTuner's environment variables: chief, worker or local."""
    from keras_tuner.src.distribute import utils

    if not utils.has_chief_oracle():
        return "local"
    return "chief" if utils.is_chief_oracle() else "worker"


# ---- tuners ----------------------------------------------------------------------------------


class _SearchMixin:
    """Journal, worker heartbeats and a chief that requeues the trials of silent workers."""

    heartbeat_interval = 2.0
    heartbeat_timeout = 60.0

    def run_trial(self, trial, *args, **kwargs):
        self._journal(trial.trial_id, "start")
        stop = threading.Event()
        beat = None
        if role() == "worker":
            beat = threading.Thread(target=self._heartbeat, args=(trial.trial_id, stop), daemon=True)
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

    def _heartbeat(self, trial_id, stop):
        while not stop.wait(self.heartbeat_interval):
            try:
                self.oracle.get_trial(trial_id)
            except Exception:  # the chief may be restarting; the next beat retries
                pass

    def _journal(self, trial_id, event, **extra):
        record = {"event": event, "tuner_id": self.tuner_id, "pid": os.getpid(), "time": time.time(), **extra}
        with open(os.path.join(self.get_trial_dir(trial_id), "attempts.jsonl"), "a") as file:
            file.write(json.dumps(record) + "\n")

    def search(self, *fit_args, **fit_kwargs):
        if role() != "chief":
            return super().search(*fit_args, **fit_kwargs)
        if "verbose" in fit_kwargs:
            self.oracle.verbose = fit_kwargs["verbose"]
        self.save()
        _serve_oracle(self.oracle, self.heartbeat_timeout)


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
    max_retries_per_trial=1,
    max_consecutive_failed_trials=3,
    heartbeat_timeout=60.0,
    heartbeat_interval=None,
    hyperband_factor=3,
):
    """One of KerasTuner's tuners over `hypermodel` (an `AugRegHyperModel`), objective `val_accuracy`.

    Args:
        name: "grid" (every point of the search space's choices), "random",
            "bayesian" (Gaussian process) or "hyperband".
        max_trials: at most this many trials. Grid: default the whole grid.
            Random and Bayesian: default 10. Hyperband: default no cap (its
            brackets decide; `hypermodel.epochs` is its `max_epochs`).
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
    elif name == "grid":
        # A cap, even the whole grid, also keeps KerasTuner's trial ids short ("07", not "0007").
        tuner = cls(max_trials=max_trials or space.grid_size(), **common)
    else:
        tuner = cls(max_trials=max_trials or 10, **common)
    tuner.heartbeat_timeout = float(heartbeat_timeout)
    tuner.heartbeat_interval = heartbeat_interval or min(2.0, tuner.heartbeat_timeout / 5)
    return tuner


# ---- the chief -------------------------------------------------------------------------------


def _serve_oracle(oracle, heartbeat_timeout):
    """KerasTuner's chief server (oracle_chief.start_server) plus a watchdog for silent workers.

    Runs until a worker was told the search is over and no trial and no worker is left."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    class Servicer(oracle_chief.OracleServicer):
        def __init__(self, oracle):
            super().__init__(oracle)
            self.last_seen = {}

        def CreateTrial(self, request, context):
            response = super().CreateTrial(request, context)
            self.last_seen[response.trial.trial_id] = time.time()
            return response

        def UpdateTrial(self, request, context):
            self.last_seen[request.trial_id] = time.time()
            return super().UpdateTrial(request, context)

        def GetTrial(self, request, context):
            self.last_seen[request.trial_id] = time.time()
            return super().GetTrial(request, context)

    servicer = Servicer(oracle)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ[ENV_ORACLE_IP]}:{os.environ[ENV_ORACLE_PORT]}"
    if not server.add_insecure_port(address):
        raise ValueError(f"The chief cannot listen on {address}: is the port taken? Pick another --oracle-address.")
    server.start()
    print(f"Chief oracle listening on {address}", flush=True)
    try:
        while True:
            time.sleep(0.5)
            _requeue_silent_trials(oracle, servicer.last_seen, heartbeat_timeout)
            if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
                break
    finally:
        server.stop(grace=2)


def _requeue_silent_trials(oracle, last_seen, timeout):
    from keras_tuner.src.engine import oracle as oracle_module
    from keras_tuner.src.engine import trial as trial_module

    now = time.time()
    silent = [
        (tuner_id, trial) for tuner_id, trial in list(oracle.ongoing_trials.items())
        if now - last_seen.setdefault(trial.trial_id, now) > timeout
    ]
    for tuner_id, trial in silent:
        message = (f"Worker {tuner_id!r} sent no heartbeat for {now - last_seen[trial.trial_id]:.0f} s "
                   f"(timeout {timeout:g} s) while running trial {trial.trial_id}; giving the trial back.")
        print(message, file=sys.stderr, flush=True)

        def end(oracle, trial=trial, tuner_id=tuner_id, message=message):
            if oracle.ongoing_trials.get(tuner_id) is not trial:
                return  # the worker reported in the meantime
            trial.status = trial_module.TrialStatus.INVALID
            trial.message = message
            oracle.tuner_ids.discard(tuner_id)
            oracle.end_trial(trial)

        try:
            oracle_module.synchronized(end)(oracle)
        except RuntimeError as error:  # too many consecutive failures: KerasTuner stops the search
            print(f"Stopping the search: {error}", file=sys.stderr, flush=True)
            oracle.ongoing_trials.clear()
            oracle.tuner_ids.clear()
        last_seen.pop(trial.trial_id, None)


# ---- tune ------------------------------------------------------------------------------------


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


# Settings that must stay the same when an interrupted search is continued.
_RUN_KEYS = ("model", "dataset", "tuner", "max_trials", "epochs_per_trial", "batch_size", "image_size",
             "steps_per_epoch", "seed", "search_space")


def tune(
    model="vit_pico8",
    dataset="shapes",
    *,
    tuner="grid",
    search_space="augreg",
    max_trials=None,
    complete_grid=False,
    epochs_per_trial=2,
    output_dir="runs/tune",
    data_dir=None,
    image_size=None,
    batch_size=64,
    steps_per_epoch=None,
    seed=0,
    overwrite=False,
    distribution_strategy=None,
    max_retries_per_trial=1,
    heartbeat_timeout=60.0,
    heartbeat_interval=None,
    model_kwargs=None,
    verbose=1,
):
    """Searches augmentation and regularization for `model` on `dataset` and writes the results.

    Args:
        model, dataset, data_dir, image_size, batch_size, steps_per_epoch, seed,
            model_kwargs: as `AugRegHyperModel`.
        tuner: "grid", "random", "bayesian" or "hyperband".
        search_space: a `SearchSpace` or a preset name ("augreg": AugReg's
            28-point grid; "continuous": the same knobs as ranges).
        max_trials, complete_grid, distribution_strategy, max_retries_per_trial,
            heartbeat_timeout, heartbeat_interval: as `make_tuner`.
        epochs_per_trial: epochs of each trial (Hyperband: the most a trial gets).
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
    space = get_space(search_space).validate(tuner=tuner)
    hypermodel = AugRegHyperModel(
        model, dataset, search_space=space, data_dir=data_dir, image_size=image_size, batch_size=batch_size,
        epochs=epochs_per_trial, steps_per_epoch=steps_per_epoch, seed=seed, model_kwargs=model_kwargs,
        verbose=2 if verbose >= 2 else 0,
    )
    current = role()
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
        _write_json(os.path.join(output_dir, "tune_config.json"), run)
    if verbose and current != "worker":
        search.search_space_summary()
    start = time.time()
    search.search(verbose=1 if verbose else 0)
    seconds = time.time() - start
    if current == "worker":
        return TuneResult(role=current, output_dir=output_dir, tuner=search, seconds=seconds)
    trials = trial_records(search)
    best = _write_results(search, trials, output_dir, model, dataset, verbose)
    return TuneResult(
        role=current, output_dir=output_dir, best_hyperparameters=best and best["hyperparameters"],
        best_score=best and best[OBJECTIVE], trials=trials, tuner=search, seconds=seconds,
    )


def _check_same_search(output_dir, run, overwrite):
    path = os.path.join(output_dir, "tune_config.json")
    if overwrite or not os.path.exists(path):
        return
    with open(path) as file:
        saved = json.load(file)
    # max_trials may grow or shrink: KerasTuner's oracle takes the new cap.
    changed = {key: (saved.get(key), value) for key, value in run.items()
               if saved.get(key) != value and key != "max_trials"}
    if changed:
        details = "; ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ValueError(
            f"{output_dir!r} holds a search with other settings ({details}). Run the same command to continue "
            "it, pass another --output-dir, or --overwrite to start over."
        )


def trial_records(search):
    """One dict per trial of `search` (a tuner on the chief or a local run), in trial order."""
    records = []
    for trial_id, trial in sorted(search.oracle.trials.items()):
        values = dict(trial.hyperparameters.values)
        settings = resolve(values)
        attempts = _attempts(search, trial_id)
        record = {
            "trial_id": trial_id,
            "status": trial.status,
            OBJECTIVE: trial.score,
            "best_epoch": trial.best_step,
            **settings.as_dict(),
            "recipe": settings.recipe_name(),
            "epochs": values.get("tuner/epochs"),
            "searched": {key: values[key] for key in values if key in KNOBS},
            "attempts": len([event for event in attempts if event["event"] == "start"]),
            "workers": sorted({event["tuner_id"] for event in attempts if event["event"] == "start"}),
        }
        if trial.message:
            record["message"] = trial.message.strip().splitlines()[-1][:300]
        records.append(record)
    return records


def _attempts(search, trial_id):
    path = os.path.join(search.project_dir, f"trial_{trial_id}", "attempts.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def _write_results(search, trials, output_dir, model, dataset, verbose):
    """Writes trials.csv/json, best_hyperparameters.json, best_model.keras and augreg.png; prints the table."""
    os.makedirs(output_dir, exist_ok=True)
    _write_json(os.path.join(output_dir, "trials.json"), trials)
    columns = ["trial_id", "status", OBJECTIVE, "best_epoch", "augmentation", "randaugment_layers",
               "randaugment_magnitude", "mixup_alpha", "cutmix_alpha", "random_erasing", "regularization",
               "dropout_rate", "drop_path_rate", "weight_decay", "learning_rate", "recipe", "epochs", "attempts",
               "workers"]
    with open(os.path.join(output_dir, "trials.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for record in trials:
            writer.writerow({**record, "workers": " ".join(record["workers"])})
    done = [record for record in trials if record["status"] == "COMPLETED" and record[OBJECTIVE] is not None]
    best = None
    if done:
        best_trial = search.oracle.get_best_trials(1)[0]
        record = next(record for record in trials if record["trial_id"] == best_trial.trial_id)
        settings = resolve(best_trial.hyperparameters.values)
        best = {
            "trial_id": best_trial.trial_id,
            OBJECTIVE: best_trial.score,
            "hyperparameters": {key: value for key, value in best_trial.hyperparameters.values.items()
                                if key in KNOBS or key in _HYPERBAND_KEYS},
            "settings": settings.as_dict(),
            "recipe": settings.recipe_name(),
            "train_command": _train_command(model, dataset, settings),
        }
        _write_json(os.path.join(output_dir, "best_hyperparameters.json"), best)
        try:
            with warnings.catch_warnings():
                # The trial checkpoint holds the optimizer state that a fresh model has not built yet.
                warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
                best_model = search.get_best_models(1)[0]
            # Building it (so the file loads without warnings) needs the strategy the model was built
            # under, which KerasTuner has left by now: under a strategy the optimizer stays unbuilt.
            unbuilt = best_model.optimizer is not None and not best_model.optimizer.built
            if unbuilt and getattr(search, "distribution_strategy", None) is None:
                best_model.optimizer.build(best_model.trainable_variables)
            best_model.save(os.path.join(output_dir, "best_model.keras"))
        except (OSError, FileNotFoundError, ValueError) as error:
            print(f"Could not load the best trial's weights ({error}); best_model.keras not written. On several "
                  "machines, give every process the same --output-dir on shared storage.", file=sys.stderr)
        record["best"] = True
    plot_trials(trials, os.path.join(output_dir, "augreg.png"), title=f"{model} on {dataset}")
    if verbose:
        print_summary(trials, best)
    return best


def _train_command(model, dataset, settings):
    if settings.recipe_name() and settings.learning_rate == 1e-3:
        return f"keras-vit train --model {model} --dataset {dataset} --recipe {settings.recipe_name()}"
    return None


def _write_json(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as file:
        json.dump(value, file, indent=2, default=str)
    os.replace(tmp, path)


def _label(record):
    """Regularization and weight decay of a trial, as the legend of the plot shows them."""
    if record["regularization"] is not None:
        reg = record["regularization"]
    else:
        reg = f"dropout {record['dropout_rate']:.2g} / drop path {record['drop_path_rate']:.2g}"
    return f"{reg}, wd {record['weight_decay']:g}"


def print_summary(trials, best):
    """A rich table of the trials (best first) and the best hyperparameters."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Trials (best first)")
    for column in ("trial", "status", OBJECTIVE, "augmentation", "RandAug", "mixup", "regularization", "wd", "lr",
                   "attempts"):
        table.add_column(column, justify="right" if column not in ("augmentation", "regularization") else "left")
    order = sorted(trials, key=lambda r: (r[OBJECTIVE] is None, -(r[OBJECTIVE] or 0.0)))
    for record in order:
        table.add_row(
            record["trial_id"] + (" *" if record.get("best") else ""),
            record["status"],
            "-" if record[OBJECTIVE] is None else f"{record[OBJECTIVE]:.4f}",
            record["augmentation"] or "-",
            f"{record['randaugment_layers']}x{record['randaugment_magnitude']:g}" if record["randaugment_layers"] else "-",
            f"{record['mixup_alpha']:.2g}",
            record["regularization"] or f"{record['dropout_rate']:.2g}/{record['drop_path_rate']:.2g}",
            f"{record['weight_decay']:.3g}",
            f"{record['learning_rate']:.2g}",
            str(record["attempts"]),
        )
    console = Console()
    console.width = max(console.width, 120)  # not cut to 80 columns when piped
    console.print(table)
    if best:
        console.print(f"Best: trial {best['trial_id']}, {OBJECTIVE} {best[OBJECTIVE]:.4f}")
        print(json.dumps(best["hyperparameters"], indent=1))


def plot_trials(trials, path, title=""):
    """PNG of each trial's validation accuracy, in the spirit of AugReg's figures.

    Named augmentation settings: one line per regularization and weight decay
    across the settings from none to strong2. Otherwise: validation accuracy
    against each searched number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_vit.training.recipes import AUGREG_AUGMENTATIONS

    done = [record for record in trials if record["status"] == "COMPLETED" and record[OBJECTIVE] is not None]
    if done and all(record["augmentation"] for record in done):
        names = list(AUGREG_AUGMENTATIONS)  # all seven on the axis, as in AugReg's figures
        figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(names) + 3), 4.5))
        groups = sorted({_label(record) for record in done})
        for index, group in enumerate(groups):
            best = {}
            for record in done:
                if _label(record) == group:
                    name = record["augmentation"]
                    best[name] = max(best.get(name, 0.0), record[OBJECTIVE])
            xs = [names.index(name) for name in names if name in best]
            axis.plot(xs, [best[names[x]] for x in xs], marker="os^D"[index % 4],
                      linestyle="-" if "noreg" in group or "dropout 0 " in group else "--", label=group)
        axis.set_xticks(range(len(names)), names)
        axis.set_xlabel("augmentation (RandAugment layers x magnitude, MixUp alpha)")
        axis.legend(title="regularization, weight decay", fontsize=8)
    else:
        knobs = [knob for knob in ("randaugment_magnitude", "mixup_alpha", "dropout_rate", "drop_path_rate",
                                   "weight_decay", "learning_rate")
                 if len({record[knob] for record in done}) > 1] or ["weight_decay"]
        figure, axes = plt.subplots(1, len(knobs), figsize=(3.2 * len(knobs) + 1, 3.6), squeeze=False)
        for axis, knob in zip(axes[0], knobs):
            axis.scatter([record[knob] for record in done], [record[OBJECTIVE] for record in done])
            axis.set_xlabel(knob)
            if knob in ("weight_decay", "learning_rate"):
                axis.set_xscale("log")
        axis = axes[0][0]
    figure.axes[0].set_ylabel("validation accuracy")
    for axis in figure.axes:
        axis.grid(alpha=0.3)
    figure.suptitle(f"{title}: {len(done)} trials" if title else f"{len(done)} trials")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
