"""Reads checkpoints written by `transformers`' `save_pretrained`; dispatches on `model_type`."""

import json
import os

from keras_vit.convert.registry import transformers_converter
from keras_vit.convert.weight_map import WeightMap, read_safetensors

# Top-level names of a bare backbone (`ViTModel`, `SwinModel`, ...), whose keys lack the
# classifier's base-model prefix (which is the model type for the supported families).
_BARE_BACKBONE_PREFIXES = ("embeddings.", "encoder.", "layers.", "layernorm.", "pooler.")


def read_transformers_directory(path):
    """`(config dict, tensors dict)` of a `save_pretrained` directory, keys in the classifier layout."""
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a directory written by transformers' save_pretrained.")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{path!r} has no config.json; is it a transformers save_pretrained directory?")
    config = read_config(config_path)
    shards = sorted(name for name in os.listdir(path) if name.endswith(".safetensors"))
    if not shards:
        raise ValueError(
            f"{path!r} has no .safetensors file. keras-vit never unpickles .bin files: "
            "re-save the model with save_pretrained(..., safe_serialization=True)."
        )
    tensors = {}
    for shard in shards:
        tensors.update(read_safetensors(os.path.join(path, shard)))
    model_type = config.get("model_type")
    tensors = {(f"{model_type}.{key}" if key.startswith(_BARE_BACKBONE_PREFIXES) else key): value
               for key, value in tensors.items()}
    return config, tensors


def read_config(config_path):
    """A transformers config.json as a dict; ValueError naming the file when it is not
    valid JSON, not a JSON object, or has no `model_type`."""
    try:
        with open(config_path, encoding="utf-8") as file:
            config = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{config_path!r} is not valid JSON ({error}). Re-save the checkpoint with transformers' save_pretrained."
        ) from error
    if not isinstance(config, dict):
        raise ValueError(
            f"{config_path!r} holds a JSON {type(config).__name__}, not the object of a transformers config. "
            "Re-save the checkpoint with transformers' save_pretrained."
        )
    if not isinstance(config.get("model_type"), str):
        raise ValueError(
            f"{config_path!r} has no 'model_type' string, so the architecture is unknown. Add it "
            "(e.g. \"model_type\": \"vit\") or re-save the checkpoint with transformers' save_pretrained."
        )
    return config


def check_config_keys(converter, config, path):
    """ValueError naming config.json and every key `converter` needs that it lacks (or sets to null)."""
    missing = [key for key in converter.required_keys if config.get(key) is None]
    if missing:
        raise ValueError(
            f"{os.path.join(path, 'config.json')!r} lacks {', '.join(repr(key) for key in missing)}, which a "
            f"{converter.model_type!r} config needs to describe the architecture. Add the missing key(s) or "
            "re-save the checkpoint with transformers' save_pretrained."
        )


def _read(path):
    """`(converter, config, tensors)` of a directory, renamed to the converter's layout."""
    config, tensors = read_transformers_directory(path)
    converter = transformers_converter(config["model_type"], path)
    if converter.rename is not None:
        tensors = converter.rename(tensors)
    return converter, config, tensors


def load_transformers_checkpoint(path, allow_resize=False, **kwargs):
    """Builds the keras-vit model of a transformers checkpoint and loads every weight.

    Args:
        path: a directory written by `save_pretrained` (config.json + *.safetensors).
        allow_resize: let Swin relative position tables be interpolated when
            `window_size` is overridden (otherwise a ValueError).
        **kwargs: overrides of the architecture read from config.json, e.g.
            `input_shape=(384, 384, 3)` (position embeddings are interpolated),
            `include_top=False`, `classifier_activation="softmax"`,
            `include_preprocessing=True` (default False: inputs normalized as the
            checkpoint's image processor does), `dropout_rate`, `drop_path_rate`.

    Returns a `keras.Model` whose outputs equal the transformers model's
    (logits by default). Raises ValueError on an unsupported model type, on a
    config.json that is not valid JSON or lacks a key the architecture needs,
    and on any missing, unused or mis-shaped tensor.
    """
    converter, config, tensors = _read(path)
    check_config_keys(converter, config, path)
    options = converter.builder_arguments(config, tensors)
    options["include_preprocessing"] = False
    options.update(kwargs)
    options.setdefault("name", converter.model_type)
    model = converter.builder(**options)
    _load(model, path, converter, config, tensors, options.get("include_top", True), allow_resize)
    return model


def load_into(model, path, include_top=True, allow_resize=False, family=None):
    """Loads a transformers directory into an existing keras-vit model of `family`."""
    converter, config, tensors = _read(path)
    if family is not None and converter.family != family:
        raise ValueError(
            f"{path!r} holds a {converter.model_type!r} model ({converter.family} family); it cannot fill "
            f"{model.name!r}, a {family} model. Build a {converter.family} model, or use "
            "keras_vit.convert.load_transformers_checkpoint(path), which builds the right one."
        )
    _load(model, path, converter, config, tensors, include_top, allow_resize)


def _load(model, path, converter, config, tensors, include_top, allow_resize):
    weight_map = WeightMap(model, tensors, checkpoint_name=path)
    converter.map_weights(weight_map, config.get("model_type"), include_top, allow_resize)
    weight_map.assign()
