"""The model registry: one `ModelSpec` per registry name (`vit_b16`, `swin_t`, ...).

A family registers each variant with `register_model(ModelSpec(...))`, which
returns the named keras.applications-style constructor (`ViTBase16`). Training,
tuning, the CLI and `keras-vit info` read the spec; none of them imports a family.
"""

import dataclasses
import difflib
import fnmatch
import inspect
import re
from typing import Callable, Mapping, Optional

TASKS = ("classification", "detection", "open_vocabulary_detection", "generation", "image_text")

_SPECS = {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the rest of keras-vit needs to know about one registered model.

    Attributes:
        name: registry name, e.g. "vit_b16".
        constructor_name: the named constructor's Python name, e.g. "ViTBase16".
        family: the folder under `keras_vit/applications/` it comes from.
        builder: the family's generic builder (`VisionTransformer`, ...).
        config: the variant's fixed architecture arguments of `builder`.
        description: one line, e.g. "ViT-B/16".
        task: one of `TASKS`.
        default_size: the input side the model was designed for.
        params: published parameter count with a 1000-class head (trainable
            weights; BatchNorm statistics are not parameters), or None.
        no_weight_decay: regexes searched in variable paths (and, without a model, names;
            TensorFlow names end in ":0", so no "$" anchors) that decoupled weight decay must
            skip besides biases and norm scales, like timm's `no_weight_decay()`.
        layout_map: `layout_map(device_mesh, model_axis)` -> `keras.distribution.LayoutMap`
            for model parallelism (as KerasHub's `get_layout_map`), or None.
    """

    name: str
    constructor_name: str
    family: str
    builder: Callable
    config: Mapping
    description: str
    task: str = "classification"
    default_size: int = 224
    params: Optional[int] = None
    no_weight_decay: tuple = ()
    layout_map: Optional[Callable] = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"ModelSpec {self.name!r}: task must be one of {TASKS}, got {self.task!r}.")

    @property
    def constructor(self):
        return _SPECS[self.name][1]

    def arguments(self):
        """The keyword arguments the model's constructor takes: the builder's (the variant's
        architecture is their default, which a caller may still override)."""
        return sorted(inspect.signature(self.builder).parameters)

    def skips_weight_decay(self, variable_path):
        return any(re.search(pattern, variable_path) for pattern in self.no_weight_decay)


_CONSTRUCTOR_DOC = """Builds {description}{params}.

    Takes the keras.applications arguments of `{builder}` (`include_top`,
    `weights`, `input_shape` (default {size}x{size}x3), `classes`,
    `classifier_activation`, `pooling`, `include_preprocessing`, `name`) and its
    regularization knobs; the architecture is fixed to `{name}`'s
    (`keras_vit.model_info("{name}")`).
    """


def register_model(spec):
    """Registers `spec` and returns its named constructor."""
    if spec.name in _SPECS:
        raise ValueError(f"A model named {spec.name!r} is already registered.")

    def constructor(**kwargs):
        kwargs.setdefault("name", spec.name)
        return spec.builder(**{**spec.config, "default_size": spec.default_size, **kwargs})

    constructor.__name__ = constructor.__qualname__ = spec.constructor_name
    constructor.__doc__ = _CONSTRUCTOR_DOC.format(
        description=spec.description,
        params=f" ({spec.params:,} params with a 1000-class head)" if spec.params else "",
        builder=spec.builder.__name__,
        size=spec.default_size,
        name=spec.name,
    )
    _SPECS[spec.name] = (spec, constructor)
    return constructor


def list_models(pattern="*", task=None):
    """Sorted registry names matching a shell-style `pattern` (e.g. "vit_*16"), optionally of one task."""
    return sorted(
        name for name, (spec, _) in _SPECS.items() if fnmatch.fnmatch(name, pattern) and task in (None, spec.task)
    )


def model_info(name):
    """The `ModelSpec` registered as `name`; ValueError with close matches otherwise."""
    if not isinstance(name, str):
        raise ValueError(
            f"A model name is a str such as 'vit_b16', got {name!r}. "
            f"Call keras_vit.list_models() (or `keras-vit info --list`) to see all {len(_SPECS)} names."
        )
    if name not in _SPECS:
        close = difflib.get_close_matches(name, _SPECS, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model name {name!r}.{hint} "
            f"Call keras_vit.list_models() (or `keras-vit info --list`) to see all {len(_SPECS)} names."
        )
    return _SPECS[name][0]


def get_constructor(name):
    """The named constructor registered as `name` (e.g. `ViTBase16` for "vit_b16")."""
    return _SPECS[model_info(name).name][1]


def create_model(name, **kwargs):
    """Builds the model registered as `name`.

    Args:
        name: a registry name such as "vit_b16" or "swin_t" (`list_models()`).
        **kwargs: constructor arguments (`classes`, `input_shape`, `weights`,
            `include_top`, `pooling`, `drop_path_rate`, ...). An argument the
            model does not take is a ValueError listing the ones it does.

    Returns a `keras.Model`.
    """
    spec = model_info(name)
    accepted = set(spec.arguments())
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"Model {name!r} does not take the argument(s) {', '.join(unknown)}. "
            f"It takes: {', '.join(sorted(accepted))}."
        )
    return get_constructor(name)(**kwargs)
