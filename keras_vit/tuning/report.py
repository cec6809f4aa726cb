"""The results of a search: trial records, the files a search writes, the printed table and the plot.

- `trial_records(search)`: one dict per trial (status, `val_accuracy`, the
  settings its values expand to, attempts and workers from the journal);
- `write_results(...)`: `trials.csv`, `trials.json`, `best_hyperparameters.json`,
  `best_model.keras` and `augreg.png` in the output folder, and the table;
- `print_summary(trials, best)`: the table of trials, best first;
- `plot_trials(trials, path)`: `augreg.png`, in the spirit of AugReg's figures.
"""

import csv
import json
import os
import sys
import warnings

from keras_vit.tuning.search_space import AUGREG_LEARNING_RATE, KNOBS, resolve
from keras_vit.tuning.tuners import OBJECTIVE, read_attempts

_HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round", "tuner/trial_id")
# The columns of trials.csv, in order.
CSV_COLUMNS = ("trial_id", "status", OBJECTIVE, "best_epoch", "augmentation", "randaugment_layers",
               "randaugment_magnitude", "mixup_alpha", "cutmix_alpha", "random_erasing", "regularization",
               "dropout_rate", "drop_path_rate", "weight_decay", "learning_rate", "recipe", "epochs", "attempts",
               "workers")


def trial_records(search):
    """One dict per trial of `search` (a tuner on the chief or a local run), in trial order."""
    records = []
    for trial_id, trial in sorted(search.oracle.trials.items()):
        values = dict(trial.hyperparameters.values)
        settings = resolve(values)
        attempts = read_attempts(search, trial_id)
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


def write_results(search, trials, output_dir, model, dataset, verbose):
    """Writes trials.csv/json, best_hyperparameters.json, best_model.keras and augreg.png; prints the table."""
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, "trials.json"), trials)
    with open(os.path.join(output_dir, "trials.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
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
        write_json(os.path.join(output_dir, "best_hyperparameters.json"), best)
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
    if settings.recipe_name() and settings.learning_rate == AUGREG_LEARNING_RATE:
        return f"keras-vit train --model {model} --dataset {dataset} --recipe {settings.recipe_name()}"
    return None


def write_json(path, value):
    """Writes `value` as JSON to `path` atomically (a temporary file, then a rename)."""
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
