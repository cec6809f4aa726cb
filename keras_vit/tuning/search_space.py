"""The search space of an augmentation-and-regularization search.

A `SearchSpace` holds one entry per knob. Each entry is
- a fixed value (`learning_rate=1e-3`),
- a list of choices (`weight_decay=[0.1, 0.03]`),
- a range: `Range(low, high, log=False, step=None)` or a tuple `(low, high)` /
  `(low, high, "log")`,
- or None: not set (the knob then follows a named setting, or is off).

The default, `SearchSpace()` (also `augreg_grid()`), is AugReg's grid: the 7
named augmentation settings x 2 regularizations x 2 weight decays = 28 points,
at AugReg's peak learning rate. `continuous_space()` searches the same knobs
as numbers (RandAugment magnitude, MixUp alpha, dropout, stochastic depth,
weight decay and learning rate), for the random, Bayesian and Hyperband tuners.

The named knobs (`augmentation`, `regularization`) stay in the trial records, so
results read "medium2, reg, wd 0.1" instead of a bag of numbers;
`resolve(values)` turns a trial's values into the `Augmentation`, dropout and
stochastic depth that the trial trains with.
"""

import dataclasses
import difflib
import math

from keras_vit.data.augment import Augmentation
from keras_vit.training.recipes import AUGREG_AUGMENTATIONS, AUGREG_REGULARIZATION, AUGREG_WEIGHT_DECAYS

# AugReg's peak learning rate (Adam, cosine, REFERENCE.md).
AUGREG_LEARNING_RATE = 1e-3

# Knob -> (kind, lower bound, upper bound, whether the upper bound is excluded, what it means).
_KNOBS = {
    "augmentation": ("name", None, None, False, "AugReg augmentation setting"),
    "randaugment_layers": ("int", 0, 10, False, "RandAugment ops per image"),
    "randaugment_magnitude": ("number", 0, 120, False, "RandAugment magnitude on AugReg's scale (10 = full)"),
    "mixup_alpha": ("float", 0, 10, False, "MixUp Beta(alpha, alpha)"),
    "cutmix_alpha": ("float", 0, 1, False, "CutMix Beta(alpha, alpha), 0 = off"),
    "regularization": ("name", None, None, False, "AugReg regularization: noreg or reg"),
    "dropout_rate": ("float", 0, 1, True, "dropout"),
    "drop_path_rate": ("float", 0, 1, True, "stochastic depth of the last block"),
    "weight_decay": ("float", 0, 10, False, "decoupled AdamW weight decay"),
    "learning_rate": ("float", 0, 1, False, "peak learning rate"),
}
KNOBS = tuple(_KNOBS)
_NAMES = {"augmentation": tuple(AUGREG_AUGMENTATIONS), "regularization": tuple(AUGREG_REGULARIZATION)}
# Knobs that a named setting already decides.
_DECIDED_BY = {
    "augmentation": ("randaugment_layers", "randaugment_magnitude", "mixup_alpha"),
    "regularization": ("dropout_rate", "drop_path_rate"),
}


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric range to search: `low` to `high`, evenly or on a log scale, optionally in steps."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


@dataclasses.dataclass
class SearchSpace:
    """One entry per knob: a fixed value, a list of choices, a `Range`/tuple, or None (not set).

    The default is AugReg's 28-point grid. See the module docstring.
    """

    augmentation: object = dataclasses.field(default_factory=lambda: list(AUGREG_AUGMENTATIONS))
    randaugment_layers: object = None
    randaugment_magnitude: object = None
    mixup_alpha: object = None
    cutmix_alpha: object = 0.0
    regularization: object = dataclasses.field(default_factory=lambda: list(AUGREG_REGULARIZATION))
    dropout_rate: object = None
    drop_path_rate: object = None
    weight_decay: object = dataclasses.field(default_factory=lambda: list(AUGREG_WEIGHT_DECAYS))
    learning_rate: object = AUGREG_LEARNING_RATE

    def __post_init__(self):
        for knob in KNOBS:
            object.__setattr__(self, knob, _normalize(knob, getattr(self, knob)))

    # ---- what the space holds -------------------------------------------------------------

    def entries(self):
        """`{knob: entry}` for the knobs that are set (entries normalized: value, list or Range)."""
        return {knob: getattr(self, knob) for knob in KNOBS if getattr(self, knob) is not None}

    def searched(self):
        """The knobs with more than one possible value."""
        return [knob for knob, entry in self.entries().items() if _varies(entry)]

    def grid_size(self):
        """Points of the full grid (product of the choices); ValueError if a knob is a range."""
        ranges = [knob for knob, entry in self.entries().items() if isinstance(entry, Range)]
        if ranges:
            details = ", ".join(f"{knob}={_describe(getattr(self, knob))}" for knob in ranges)
            raise ValueError(
                f"A grid search enumerates choices, but {details} is a range. Give it a list of values "
                f"(e.g. {ranges[0]}=[{_example_choices(getattr(self, ranges[0]))}]) or use --tuner random, "
                "bayesian or hyperband."
            )
        return math.prod(len(entry) if isinstance(entry, list) else 1 for entry in self.entries().values())

    def describe(self):
        """One line: `augmentation in [none, ...] x regularization in [...] x weight_decay=0.1 ...`."""
        return ", ".join(f"{knob}={_describe(entry)}" for knob, entry in self.entries().items())

    # ---- checks ----------------------------------------------------------------------------

    def validate(self, tuner=None):
        """Raises ValueError for an empty or contradictory space (or ranges in a grid); returns self."""
        for knob, entry in self.entries().items():
            _check_entry(knob, entry)
        for named, decided in _DECIDED_BY.items():
            clashes = [knob for knob in decided if getattr(self, knob) is not None]
            if getattr(self, named) is not None and clashes:
                settings = ", ".join(f"{knob}={_describe(getattr(self, knob))}" for knob in clashes)
                raise ValueError(
                    f"Contradictory search space: {named}={_describe(getattr(self, named))} names settings that "
                    f"already fix {', '.join(decided)}, but {settings} is given too. Either search the named "
                    f"settings (leave {', '.join(clashes)} unset) or the numbers (set {named}=None, on the command "
                    f"line --search {named}=unset)."
                )
        layers = self.randaugment_layers
        if layers == 0 and self.randaugment_magnitude is not None and _varies(self.randaugment_magnitude):
            raise ValueError(
                f"Contradictory search space: randaugment_layers=0 turns RandAugment off, so searching "
                f"randaugment_magnitude={_describe(self.randaugment_magnitude)} changes nothing. Set "
                "randaugment_layers to 1 or more (AugReg: 2) or fix the magnitude."
            )
        if not self.searched():
            raise ValueError(
                f"Empty search space: every knob has a single value ({self.describe()}), so there is nothing to "
                "search. Give at least one knob a list of choices or a range, e.g. "
                "--search weight_decay=0.1,0.03 or --search learning_rate=1e-4:1e-2:log "
                "(or train that one setting with keras-vit train)."
            )
        if tuner == "grid":
            self.grid_size()
        return self

    # ---- KerasTuner ------------------------------------------------------------------------

    def declare(self, hp):
        """Registers every set knob on a `keras_tuner.HyperParameters` and returns `{knob: value}`."""
        values = {}
        for knob, entry in self.entries().items():
            if isinstance(entry, list):
                values[knob] = hp.Choice(knob, entry, ordered=False if _KNOBS[knob][0] == "name" else None)
            elif isinstance(entry, Range):
                is_int = _KNOBS[knob][0] == "int" or (
                    _KNOBS[knob][0] == "number" and _is_int(entry.low) and _is_int(entry.high)
                    and (entry.step is None or _is_int(entry.step))
                )
                sampling = "log" if entry.log else "linear"
                if is_int:
                    values[knob] = hp.Int(knob, int(entry.low), int(entry.high), step=int(entry.step or 1),
                                          sampling=sampling)
                else:
                    values[knob] = hp.Float(knob, float(entry.low), float(entry.high), step=entry.step,
                                            sampling=sampling)
            else:
                values[knob] = hp.Fixed(knob, entry)
        return values

    def resolve(self, values):
        """A trial's `{knob: value}` (names allowed) -> `TrialSettings` it trains with."""
        return resolve(values)


@dataclasses.dataclass(frozen=True)
class TrialSettings:
    """What one trial trains with, named settings expanded."""

    augmentation: Augmentation
    dropout_rate: float
    drop_path_rate: float
    weight_decay: float
    learning_rate: float
    augmentation_name: str | None = None
    regularization_name: str | None = None

    def as_dict(self):
        """Flat record: augmentation/regularization names and every number."""
        return {
            "augmentation": self.augmentation_name,
            "regularization": self.regularization_name,
            **dataclasses.asdict(self.augmentation),
            "dropout_rate": self.dropout_rate,
            "drop_path_rate": self.drop_path_rate,
            "weight_decay": self.weight_decay,
            "learning_rate": self.learning_rate,
        }

    def recipe_name(self):
        """The `keras-vit train --recipe` name of an AugReg grid point, else None."""
        if (
            self.augmentation_name is None
            or self.regularization_name is None
            or self.weight_decay not in AUGREG_WEIGHT_DECAYS
            or self.augmentation.cutmix_alpha
        ):
            return None
        suffix = "-reg" if self.regularization_name == "reg" else ""
        return f"augreg-{self.augmentation_name}{suffix}-wd{self.weight_decay:g}"


def resolve(values):
    """`{knob: value}` of a trial (the names of `SearchSpace`; unknown keys such as
    `tuner/epochs` are ignored) -> `TrialSettings`."""
    name = values.get("augmentation")
    if name is not None:
        base = AUGREG_AUGMENTATIONS[name]
    else:
        base = Augmentation(
            int(values.get("randaugment_layers") or 0),
            float(values.get("randaugment_magnitude") or 0),
            float(values.get("mixup_alpha") or 0),
        )
    augmentation = dataclasses.replace(base, cutmix_alpha=float(values.get("cutmix_alpha") or 0.0))
    regularization = values.get("regularization")
    if regularization is not None:
        dropout, drop_path = AUGREG_REGULARIZATION[regularization]
    else:
        dropout, drop_path = values.get("dropout_rate") or 0.0, values.get("drop_path_rate") or 0.0
    return TrialSettings(
        augmentation=augmentation,
        dropout_rate=float(dropout),
        drop_path_rate=float(drop_path),
        weight_decay=float(values.get("weight_decay", AUGREG_WEIGHT_DECAYS[0])),
        learning_rate=float(values.get("learning_rate", AUGREG_LEARNING_RATE)),
        augmentation_name=name,
        regularization_name=regularization,
    )


def augreg_grid():
    """AugReg's 28-point grid: 7 augmentations x {noreg, reg} x weight decay {0.1, 0.03}, lr 1e-3."""
    return SearchSpace()


def continuous_space():
    """The AugReg knobs as numbers, for random, Bayesian and Hyperband search.

    RandAugment 2 ops at magnitude 0-20 (AugReg's span), MixUp alpha 0-0.8, dropout and
    stochastic depth 0-0.2, weight decay 0.01-0.3 and learning rate 3e-4 to 3e-3 (both log).
    """
    return SearchSpace(
        augmentation=None,
        randaugment_layers=2,
        randaugment_magnitude=Range(0, 20),
        mixup_alpha=Range(0.0, 0.8),
        regularization=None,
        dropout_rate=Range(0.0, 0.2),
        drop_path_rate=Range(0.0, 0.2),
        weight_decay=Range(0.01, 0.3, log=True),
        learning_rate=Range(3e-4, 3e-3, log=True),
    )


SPACES = {"augreg": augreg_grid, "continuous": continuous_space}


def get_space(name):
    """A named preset: "augreg" (the 28-point grid) or "continuous"."""
    if isinstance(name, SearchSpace):
        return name
    if name not in SPACES:
        raise ValueError(f"Unknown search space {name!r}. Presets: {', '.join(SPACES)}.")
    return SPACES[name]()


def parse_overrides(specs, base=None):
    """Applies `KNOB=SPEC` strings (the CLI's `--search`) to `base` (default: the AugReg grid).

    SPEC is a value (`0.1`, `medium2`), comma-separated choices (`0.1,0.03`), a range
    `LOW:HIGH` or `LOW:HIGH:log` (or `LOW:HIGH:STEP`), or `unset`. Setting a number that a
    named setting decides (e.g. `mixup_alpha`) without naming that knob unsets the name.
    """
    space = get_space("augreg") if base is None else base
    changes = {}
    for spec in specs:
        knob, sep, text = str(spec).partition("=")
        knob = knob.strip().replace("-", "_")
        if not sep or not text.strip():
            raise ValueError(f"--search expects KNOB=SPEC, got {spec!r}. Knobs: {', '.join(KNOBS)}.")
        _check_knob_name(knob)
        changes[knob] = _parse_spec(knob, text.strip())
    for named, decided in _DECIDED_BY.items():
        if named not in changes and any(knob in changes for knob in decided):
            changes[named] = None
    return dataclasses.replace(space, **changes)


# ---- helpers ---------------------------------------------------------------------------------


def _check_knob_name(knob):
    if knob not in _KNOBS:
        close = difflib.get_close_matches(knob, KNOBS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown search knob {knob!r}.{hint} Knobs: {', '.join(KNOBS)}.")


def _parse_spec(knob, text):
    if text == "unset":
        return None
    kind = _KNOBS[knob][0]
    if ":" in text and kind != "name":
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"A range is LOW:HIGH[:log|:STEP], got {knob}={text!r}.")
        low, high = (_number(knob, part) for part in parts[:2])
        if len(parts) == 3:
            if parts[2] == "log":
                return Range(low, high, log=True)
            return Range(low, high, step=_number(knob, parts[2]))
        return Range(low, high)
    if "," in text:
        return [_value(knob, part.strip()) for part in text.split(",") if part.strip()]
    return _value(knob, text)


def _value(knob, text):
    return text if _KNOBS[knob][0] == "name" else _number(knob, text)


def _number(knob, text):
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{knob} takes numbers, got {text!r}.") from None
    kind = _KNOBS[knob][0]
    if kind == "int" or (kind == "number" and number.is_integer() and not any(c in text for c in ".eE")):
        return int(number) if number.is_integer() else number  # a fraction for an int knob fails validation
    return number


def _normalize(knob, entry):
    """tuple -> Range, other sequences -> list; values keep their type."""
    if isinstance(entry, tuple):
        if len(entry) == 3 and entry[2] in ("log", True):
            return Range(entry[0], entry[1], log=True)
        if len(entry) == 2:
            return Range(entry[0], entry[1])
        raise ValueError(
            f"{knob}={entry!r}: a tuple is a range (low, high) or (low, high, 'log'); use a list for choices."
        )
    if isinstance(entry, (list, set, frozenset)):
        return list(entry)
    return entry


def _varies(entry):
    if isinstance(entry, list):
        return len(set(entry)) > 1
    if isinstance(entry, Range):
        return entry.high > entry.low
    return False


def _check_entry(knob, entry):
    kind, low, high, open_high, meaning = _KNOBS[knob]
    if isinstance(entry, list):
        if not entry:
            raise ValueError(
                f"Empty search space: {knob}=[] has no choices. Give at least one value ({meaning}) or leave "
                f"{knob} unset."
            )
        if len(set(entry)) != len(entry):
            raise ValueError(f"{knob}={entry} lists a value twice; list each choice once.")
        values = entry
    elif isinstance(entry, Range):
        if kind == "name":
            raise ValueError(f"{knob} is a name ({meaning}); give one or a list of {list(_NAMES[knob])}, not a range.")
        if not entry.low <= entry.high:
            raise ValueError(
                f"Empty search space: {knob} range has low={entry.low} > high={entry.high}. "
                f"Swap them: Range({entry.high}, {entry.low})."
            )
        if entry.log and entry.low <= 0:
            raise ValueError(
                f"{knob} range ({entry.low}, {entry.high}) is on a log scale, which needs low > 0, got low={entry.low}. "
                "Start above 0 (e.g. 1e-4) or drop the log scale."
            )
        if entry.step is not None and entry.step <= 0:
            raise ValueError(f"{knob} range step must be > 0, got step={entry.step}.")
        values = [entry.low, entry.high]
    else:
        values = [entry]
    for value in values:
        if kind == "name":
            if value not in _NAMES[knob]:
                close = difflib.get_close_matches(str(value), _NAMES[knob], n=2)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"Unknown {knob} {value!r}.{hint} AugReg's are {', '.join(_NAMES[knob])}.")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{knob} takes numbers ({meaning}), got {value!r}.")
        if kind == "int" and not _is_int(value):
            raise ValueError(f"{knob} takes whole numbers ({meaning}), got {value!r}.")
        if knob == "learning_rate" and value <= 0:
            raise ValueError(f"learning_rate must be > 0, got {value}.")
        if value < low or value > high or (open_high and value >= high):
            bound = f"[{low}, {high})" if open_high else f"[{low}, {high}]"
            raise ValueError(f"{knob} must be in {bound} ({meaning}), got {value}.")


def _is_int(value):
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _describe(entry):
    if isinstance(entry, list):
        return "[" + ", ".join(f"{value:g}" if isinstance(value, float) else str(value) for value in entry) + "]"
    if isinstance(entry, Range):
        extra = ", log" if entry.log else (f", step {entry.step:g}" if entry.step else "")
        return f"range({entry.low:g}, {entry.high:g}{extra})"
    return f"{entry:g}" if isinstance(entry, float) else str(entry)


def _example_choices(entry):
    return ", ".join(f"{value:g}" for value in (entry.low, (entry.low + entry.high) / 2, entry.high))
