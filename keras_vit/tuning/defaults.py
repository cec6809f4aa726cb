"""The defaults of a search, shared by `tune()`, `make_tuner` and `keras-vit tune`.

They live here, in one place, so that the Python workflow and the command line
cannot drift apart: `keras-vit tune` with no options runs the same search as
`tune()` with no arguments (a random search over AugReg's grid on `shapes`,
6 trials of 2 epochs at 32 px).
"""

DEFAULT_MODEL = "vit_pico8"
DEFAULT_DATASET = "shapes"
DEFAULT_TUNER = "random"
DEFAULT_SEARCH_SPACE = "augreg"
# Trial cap of the random and Bayesian tuners when none is given (see `default_max_trials`).
DEFAULT_MAX_TRIALS = 6
DEFAULT_EPOCHS_PER_TRIAL = 2
# Square input side of a search: 32 keeps the default search to a few minutes on a CPU; pass the
# model's own size (e.g. 224), or None for it, for real runs.
DEFAULT_IMAGE_SIZE = 32
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_RETRIES = 1
DEFAULT_HEARTBEAT_TIMEOUT = 60.0


def default_max_trials(tuner, space):
    """The trial cap of `tuner` over `space` (a `SearchSpace`) when none is given.

    Grid: every point of the grid. Random and Bayesian: `DEFAULT_MAX_TRIALS`.
    Hyperband: None (no cap; its brackets decide).
    """
    if tuner == "grid":
        return space.grid_size()
    if tuner in ("random", "bayesian"):
        return DEFAULT_MAX_TRIALS
    return None


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DATASET",
    "DEFAULT_EPOCHS_PER_TRIAL",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_TRIALS",
    "DEFAULT_MODEL",
    "DEFAULT_SEARCH_SPACE",
    "DEFAULT_TUNER",
    "default_max_trials",
]
