"""Converters register themselves here, keyed by checkpoint kind; `convert/` dispatches.

A model family registers, from its own folder:

- a `TransformersConverter` per transformers `model_type` it reads (`"vit"`,
  `"swin"`, ...): how to turn config.json into builder arguments and how to map
  the tensors onto the built model;
- a `TimmConverter`: the timm and keras-vit model names it builds, how to
  recognise its state dicts, and how to map them.

This module imports no family: `import keras_vit` imports the families, which
register their converters.
"""

import dataclasses
from typing import Callable, Mapping, Optional

_TRANSFORMERS = {}
_TIMM = {}


@dataclasses.dataclass(frozen=True)
class TransformersConverter:
    """Reads `save_pretrained` directories of one transformers `model_type`.

    Attributes:
        model_type: config.json's `model_type`.
        family: the keras-vit family whose models it fills.
        builder: the family's generic builder.
        builder_arguments: `(config, tensors) -> dict` of builder arguments.
        map_weights: `(weight_map, model_type, include_top, allow_resize)`: plans
            every variable of the model (see `WeightMap`).
        rename: optional `tensors -> tensors` for older layouts of the same model type.
        required_keys: config.json keys `builder_arguments` cannot do without; a
            config lacking any is a ValueError naming the file and them all.
    """

    model_type: str
    family: str
    builder: Callable
    builder_arguments: Callable
    map_weights: Callable
    rename: Optional[Callable] = None
    required_keys: tuple = ()


@dataclasses.dataclass(frozen=True)
class TimmConverter:
    """Reads timm state dicts (`.safetensors`) of one family, or the state dicts of the family's
    reference code when timm has no such model (DETR: facebookresearch/detr's layout).

    Attributes:
        family: the keras-vit family.
        model_names: timm names and keras-vit registry names it accepts -> registry name.
        create: `(registry_name, **kwargs) -> keras.Model`.
        recognizes: `tensors -> bool`, true for this family's state dicts.
        map_weights: `(weight_map, tensors, include_top, allow_resize)`.
        builder_arguments: optional `tensors -> dict` of arguments read from the
            tensors (e.g. a pre-logits width); the head size is read generically.
        check: optional `(tensors, path)` that raises ValueError on a variant this
            family cannot represent.
        classifier: the models have a classification head (`include_top`,
            `classes` read from `head.weight`, `classifier_activation`).
    """

    family: str
    model_names: Mapping
    create: Callable
    recognizes: Callable
    map_weights: Callable
    builder_arguments: Optional[Callable] = None
    check: Optional[Callable] = None
    classifier: bool = True


def register_converter(converter):
    """Registers a `TransformersConverter` or `TimmConverter`."""
    if isinstance(converter, TransformersConverter):
        table, key = _TRANSFORMERS, converter.model_type
    elif isinstance(converter, TimmConverter):
        table, key = _TIMM, converter.family
    else:
        raise TypeError(f"register_converter takes a TransformersConverter or TimmConverter, got {converter!r}.")
    if key in table:
        raise ValueError(f"A converter for {key!r} is already registered.")
    table[key] = converter
    return converter


def transformers_converter(model_type, path=None):
    """The converter of a transformers `model_type`; ValueError listing the supported ones."""
    if model_type not in _TRANSFORMERS:
        where = f"{path!r} holds a {model_type!r} model: " if path else ""
        raise ValueError(
            f"{where}keras-vit has no converter for transformers model_type {model_type!r}. "
            f"Supported model types: {', '.join(sorted(_TRANSFORMERS))}."
        )
    return _TRANSFORMERS[model_type]


def timm_converter(family=None, tensors=None, path=None):
    """The timm converter of `family`, or the one that recognizes `tensors`."""
    if family is not None:
        if family not in _TIMM:
            raise ValueError(
                f"keras-vit has no timm converter for the {family!r} family; timm checkpoints load into "
                f"the {', '.join(sorted(_TIMM))} families."
            )
        return _TIMM[family]
    for converter in _TIMM.values():
        if converter.recognizes(tensors):
            return converter
    raise ValueError(
        f"{path!r} is not a timm state dict of a supported family ({', '.join(sorted(_TIMM))}): "
        "none recognizes its tensor names."
    )


def timm_converter_for_name(model_name):
    """`(converter, registry name)` for a timm or keras-vit model name (a ".tag" suffix is ignored)."""
    base = model_name.split(".")[0]
    for converter in _TIMM.values():
        if base in converter.model_names:
            return converter, converter.model_names[base]
    known = sorted(name for converter in _TIMM.values() for name in converter.model_names)
    raise ValueError(
        f"Unknown model name {model_name!r} for a timm checkpoint: no timm converter knows it. Known names: "
        f"{', '.join(known[:12])}, ... ({len(known)} in all)."
    )


def supported_checkpoints():
    """`{"transformers": model types, "timm": families}` that can be loaded."""
    return {"transformers": sorted(_TRANSFORMERS), "timm": sorted(_TIMM)}
