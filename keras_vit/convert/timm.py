"""Reads timm-format state dicts (`.safetensors`), and other reference-code state dicts a family
registers the same way (DETR's original repository); dispatches on the model name or the family."""

from keras_vit.convert.registry import timm_converter, timm_converter_for_name
from keras_vit.convert.weight_map import WeightMap, read_safetensors


def load_timm_checkpoint(model_name, path, allow_resize=False, **kwargs):
    """Builds keras-vit's `model_name` and loads a timm state dict into it.

    Args:
        model_name: a keras-vit registry name ("vit_b16") or the timm name
            ("vit_base_patch16_224", with or without a ".tag" suffix).
        path: a `.safetensors` file as published for timm's models.
        allow_resize: let Swin relative position tables be interpolated when the
            model's `window_size` differs from the checkpoint's (otherwise a ValueError).
        **kwargs: constructor arguments (`input_shape`, `include_top`,
            `classes` if the checkpoint's head is not 1000-way, ...). The head
            size (and a ViT's pre-logits layer) are read from the checkpoint when not given.

    Returns the `keras.Model`; ValueError on any missing, unused or mis-shaped tensor.
    """
    converter, name = timm_converter_for_name(model_name)
    tensors = read_safetensors(path)
    if converter.classifier:
        head = next((key for key in ("head.weight", "head.fc.weight", "head.projection.weight") if key in tensors), None)
        if head:
            kwargs.setdefault("classes", tensors[head].shape[0])
        else:
            kwargs.setdefault("include_top", False)
        kwargs.setdefault("classifier_activation", None)
    for key, value in (converter.builder_arguments(tensors) if converter.builder_arguments else {}).items():
        kwargs.setdefault(key, value)
    if converter.check is not None:
        converter.check(tensors, path)
    model = converter.create(name, **kwargs)
    _load(model, path, converter, tensors, kwargs.get("include_top", True), allow_resize)
    return model


def load_into(model, path, include_top=True, allow_resize=False, family=None):
    """Loads a timm state dict into an existing keras-vit model of `family`
    (None: the family whose converter recognizes the tensor names)."""
    tensors = read_safetensors(path)
    converter = timm_converter(family, tensors, path)
    _load(model, path, converter, tensors, include_top, allow_resize)


def _load(model, path, converter, tensors, include_top, allow_resize):
    if converter.check is not None:
        converter.check(tensors, path)
    weight_map = WeightMap(model, tensors, checkpoint_name=path)
    converter.map_weights(weight_map, tensors, include_top, allow_resize)
    weight_map.assign()
