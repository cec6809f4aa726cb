"""KerasTuner search over augmentation and regularization (AugReg's grid and beyond).

`tune(...)` is the whole workflow behind `keras-vit tune`; `AugRegHyperModel`,
`SearchSpace` and `make_tuner` are its parts, for use with KerasTuner directly.

Modules, one job each:

- `search_space`: the knobs and their values (`SearchSpace`, `Range`, presets, `--search` parsing);
- `hypermodel`: `AugRegHyperModel`, which builds and trains one trial;
- `tuners`: `make_tuner` over KerasTuner's own tuners, the trial journal and KerasTuner fixes;
- `distributed`: chief/worker role, worker heartbeats, the chief's watchdog for silent workers;
- `report`: trial records, trials.csv/json, best_hyperparameters.json, the table and `augreg.png`;
- `workflow`: `tune()` and `TuneResult`;
- `defaults`: the defaults shared by `tune()` and `keras-vit tune`.
"""

from keras_vit.tuning.defaults import (
    DEFAULT_EPOCHS_PER_TRIAL,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MAX_TRIALS,
    DEFAULT_TUNER,
    default_max_trials,
)
from keras_vit.tuning.distributed import role
from keras_vit.tuning.hypermodel import AugRegHyperModel
from keras_vit.tuning.report import plot_trials, trial_records
from keras_vit.tuning.search_space import (
    KNOBS,
    Range,
    SearchSpace,
    TrialSettings,
    augreg_grid,
    continuous_space,
    get_space,
    parse_overrides,
    resolve,
)
from keras_vit.tuning.tuners import TUNERS, make_tuner
from keras_vit.tuning.workflow import TuneResult, tune

__all__ = [
    "AugRegHyperModel",
    "DEFAULT_EPOCHS_PER_TRIAL",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MAX_TRIALS",
    "DEFAULT_TUNER",
    "KNOBS",
    "Range",
    "SearchSpace",
    "TUNERS",
    "TrialSettings",
    "TuneResult",
    "augreg_grid",
    "continuous_space",
    "default_max_trials",
    "get_space",
    "make_tuner",
    "parse_overrides",
    "plot_trials",
    "resolve",
    "role",
    "trial_records",
    "tune",
]
