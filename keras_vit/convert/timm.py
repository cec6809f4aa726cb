"""Reads timm-format state dicts (`.safetensors`) of ViT, hybrid, Swin and Swin-V2 models."""

import dataclasses

from keras_vit.convert.swin_mapping import map_swin, timm_swin_names
from keras_vit.convert.vit_mapping import ViTNames, map_vit
from keras_vit.convert.weight_map import WeightMap, read_safetensors

# timm model names -> keras-vit registry names.
TIMM_NAMES = {
    "vit_tiny_patch16_224": "vit_ti16",
    "vit_small_patch16_224": "vit_s16",
    "vit_small_patch32_224": "vit_s32",
    "vit_base_patch16_224": "vit_b16",
    "vit_base_patch32_224": "vit_b32",
    "vit_base_patch8_224": "vit_b8",
    "vit_large_patch16_224": "vit_l16",
    "vit_large_patch32_224": "vit_l32",
    "vit_huge_patch14_224": "vit_h14",
    "vit_small_r26_s32_224": "vit_r26_s32",
    "vit_base_r50_s16_224": "vit_r50_b16",
    "vit_large_r50_s32_224": "vit_r50_l32",
    "swin_tiny_patch4_window7_224": "swin_t",
    "swin_small_patch4_window7_224": "swin_s",
    "swin_base_patch4_window7_224": "swin_b",
    "swin_base_patch4_window12_384": "swin_b_384",
    "swin_large_patch4_window7_224": "swin_l",
    "swinv2_tiny_window8_256": "swinv2_t",
    "swinv2_small_window8_256": "swinv2_s",
    "swinv2_base_window8_256": "swinv2_b",
    "swinv2_tiny_window16_256": "swinv2_t_w16",
    "swinv2_small_window16_256": "swinv2_s_w16",
    "swinv2_base_window16_256": "swinv2_b_w16",
}

_TIMM_VIT_NAMES = ViTNames(
    class_token="cls_token",
    position_embedding="pos_embed",
    patch_projection="patch_embed.proj",
    norm1="blocks.{i}.norm1",
    norm2="blocks.{i}.norm2",
    qkv=("blocks.{i}.attn.qkv",),
    attention_output="blocks.{i}.attn.proj",
    fc1="blocks.{i}.mlp.fc1",
    fc2="blocks.{i}.mlp.fc2",
    final_norm="norm",
    head="head",
    pre_logits="pre_logits.fc",
)


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
            size and pre-logits layer are read from the checkpoint when not given.

    Returns the `keras.Model`; ValueError on any missing, unused or mis-shaped tensor.
    """
    from keras_vit.applications.registry import create_model

    name = TIMM_NAMES.get(model_name.split(".")[0], model_name)
    tensors = read_safetensors(path)
    head = next((key for key in ("head.weight", "head.fc.weight") if key in tensors), None)
    if head:
        kwargs.setdefault("classes", tensors[head].shape[0])
    else:
        kwargs.setdefault("include_top", False)
    if "pre_logits.fc.weight" in tensors:
        kwargs.setdefault("representation_size", tensors["pre_logits.fc.weight"].shape[0])
    kwargs.setdefault("classifier_activation", None)
    _check_supported(tensors, path)
    model = create_model(name, **kwargs)
    load_into(model, path, include_top=kwargs.get("include_top", True), tensors=tensors, allow_resize=allow_resize)
    return model


def load_into(model, path, include_top=True, tensors=None, allow_resize=False):
    """Loads a timm ViT, hybrid, Swin or Swin-V2 state dict into an existing keras-vit model."""
    if tensors is None:
        tensors = read_safetensors(path)
    _check_supported(tensors, path)
    if any(key.startswith("layers.") for key in tensors):
        weight_map = WeightMap(model, tensors, checkpoint_name=path)
        map_swin(weight_map, timm_swin_names(tensors), include_top, allow_resize=allow_resize)
        weight_map.assign()
        return
    is_hybrid = any(key.startswith("patch_embed.backbone.") for key in tensors)
    names = dataclasses.replace(_TIMM_VIT_NAMES, stem="patch_embed.backbone.") if is_hybrid else _TIMM_VIT_NAMES
    weight_map = WeightMap(model, tensors, checkpoint_name=path)
    map_vit(weight_map, names, include_top)
    weight_map.assign()


def _check_supported(tensors, path):
    if "fc_norm.weight" in tensors:
        raise ValueError(
            f"{path!r} normalizes after average pooling (timm fc_norm); keras-vit's 'gap' pooling "
            "normalizes before it, so these weights would compute something else. Use a "
            "class-token checkpoint."
        )
