"""Model registry: short names (`vit_b16`) to application constructors."""

import difflib
import fnmatch

_MODELS = {}


def register_model(name, constructor, **defaults):
    """Registers `constructor` under `name`; `defaults` are passed on every call."""
    if name in _MODELS:
        raise ValueError(f"A model named {name!r} is already registered.")
    _MODELS[name] = (constructor, defaults)


def list_models(pattern="*"):
    """Sorted registry names matching a shell-style `pattern` (e.g. "vit_*16")."""
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def get_constructor(name):
    """The constructor registered as `name`; ValueError with close matches otherwise."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model name {name!r}.{hint} "
            f"Call keras_vit.list_models() to see all {len(_MODELS)} names."
        )
    return _MODELS[name][0]


def create_model(name, **kwargs):
    """Builds the model registered as `name`.

    Args:
        name: a registry name such as "vit_b16" or "vit_r50_b16".
        **kwargs: constructor arguments (`classes`, `input_shape`, `weights`,
            `include_top`, `drop_path_rate`, ...).

    Returns a `keras.Model`.
    """
    constructor = get_constructor(name)
    return constructor(**{**_MODELS[name][1], **kwargs})
