"""KerasTuner search over augmentation and regularization (AugReg's grid and beyond).

`tune(...)` is the whole workflow behind `keras-vit tune`; `AugRegHyperModel`,
`SearchSpace` and `make_tuner` are its parts, for use with KerasTuner directly.
"""

from keras_vit.tuning.hypermodel import AugRegHyperModel
from keras_vit.tuning.search import TUNERS, TuneResult, make_tuner, plot_trials, role, trial_records, tune
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

__all__ = [
    "AugRegHyperModel",
    "KNOBS",
    "Range",
    "SearchSpace",
    "TUNERS",
    "TrialSettings",
    "TuneResult",
    "augreg_grid",
    "continuous_space",
    "get_space",
    "make_tuner",
    "parse_overrides",
    "plot_trials",
    "resolve",
    "role",
    "trial_records",
    "tune",
]
