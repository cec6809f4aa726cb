"""Reads checkpoints written by `transformers`' `save_pretrained`."""

import json
import os
import re

from keras_vit.convert.swin_mapping import TRANSFORMERS_SWIN, TRANSFORMERS_SWINV2, map_swin
from keras_vit.convert.vit_mapping import ViTNames, map_vit
from keras_vit.convert.weight_map import WeightMap, read_safetensors

# transformers >= 5 layout; older checkpoints are renamed to it by `_modernize`.
_VIT_NAMES = ViTNames(
    class_token="vit.embeddings.cls_token",
    position_embedding="vit.embeddings.position_embeddings",
    patch_projection="vit.embeddings.patch_embeddings.projection",
    norm1="vit.layers.{i}.layernorm_before",
    norm2="vit.layers.{i}.layernorm_after",
    qkv=("vit.layers.{i}.attention.q_proj", "vit.layers.{i}.attention.k_proj", "vit.layers.{i}.attention.v_proj"),
    attention_output="vit.layers.{i}.attention.o_proj",
    fc1="vit.layers.{i}.mlp.fc1",
    fc2="vit.layers.{i}.mlp.fc2",
    final_norm="vit.layernorm",
    head="classifier",
    pre_logits="vit.pooler.dense",
)

_LEGACY_RENAMES = (
    (r"\.encoder\.layer\.(\d+)\.attention\.attention\.query\.", r".layers.\1.attention.q_proj."),
    (r"\.encoder\.layer\.(\d+)\.attention\.attention\.key\.", r".layers.\1.attention.k_proj."),
    (r"\.encoder\.layer\.(\d+)\.attention\.attention\.value\.", r".layers.\1.attention.v_proj."),
    (r"\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r".layers.\1.attention.o_proj."),
    (r"\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r".layers.\1.mlp.fc1."),
    (r"\.encoder\.layer\.(\d+)\.output\.dense\.", r".layers.\1.mlp.fc2."),
    (r"\.encoder\.layer\.(\d+)\.", r".layers.\1."),
)

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def read_transformers_directory(path):
    """`(config dict, tensors dict)` of a `save_pretrained` directory."""
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a directory written by transformers' save_pretrained.")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{path!r} has no config.json; is it a transformers save_pretrained directory?")
    with open(config_path) as file:
        config = json.load(file)
    shards = sorted(name for name in os.listdir(path) if name.endswith(".safetensors"))
    if not shards:
        raise ValueError(
            f"{path!r} has no .safetensors file. keras-vit never unpickles .bin files: "
            "re-save the model with save_pretrained(..., safe_serialization=True)."
        )
    tensors = {}
    for shard in shards:
        tensors.update(read_safetensors(os.path.join(path, shard)))
    return config, _modernize(tensors, config.get("model_type"))


def _modernize(tensors, model_type):
    """Prefixes the keys of bare backbones (`ViTModel`, `SwinModel`, ...) with the
    classifier's base-model prefix and renames pre-v5 ViT layouts."""
    renamed = {}
    for key, value in tensors.items():
        if key.startswith(("embeddings.", "encoder.", "layers.", "layernorm.", "pooler.")):
            key = f"{model_type}.{key}"
        if model_type == "vit":
            for pattern, replacement in _LEGACY_RENAMES:
                key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def vit_kwargs_from_config(config, tensors):
    """keras-vit `VisionTransformer` arguments equivalent to a transformers ViT config."""
    activation = config.get("hidden_act", "gelu")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"Unsupported ViT hidden_act {activation!r}; supported: {sorted(_ACTIVATIONS)}.")
    image_size = config.get("image_size", 224)
    num_classes = tensors["classifier.weight"].shape[0] if "classifier.weight" in tensors else None
    return dict(
        patch_size=config.get("patch_size", 16),
        hidden_dim=config["hidden_size"],
        depth=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        mlp_dim=config["intermediate_size"],
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
        activation=_ACTIVATIONS[activation],
        qkv_bias=config.get("qkv_bias", True),
        input_shape=(image_size, image_size, config.get("num_channels", 3)),
        include_top=num_classes is not None,
        classes=num_classes or 1000,
        representation_size=config["hidden_size"] if "vit.pooler.dense.weight" in tensors else None,
        classifier_activation=None,
    )


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
    (logits by default). Raises ValueError on any missing, unused or
    mis-shaped tensor.
    """
    from keras_vit.applications.swin import SwinTransformer
    from keras_vit.applications.vit import VisionTransformer

    config, tensors = read_transformers_directory(path)
    model_type = config.get("model_type")
    families = {
        "vit": (vit_kwargs_from_config, VisionTransformer),
        "swin": (swin_kwargs_from_config, SwinTransformer),
        "swinv2": (swin_kwargs_from_config, SwinTransformer),
    }
    if model_type not in families:
        raise ValueError(
            f"{path!r} holds a {model_type!r} model; load_transformers_checkpoint supports: {sorted(families)}."
        )
    read_config, builder = families[model_type]
    options = read_config(config, tensors)
    options["include_preprocessing"] = False
    options.update(kwargs)
    options.setdefault("name", model_type)
    model = builder(**options)
    load_into(
        model, path, include_top=options["include_top"], tensors=tensors, model_type=model_type, allow_resize=allow_resize
    )
    return model


def swin_kwargs_from_config(config, tensors):
    """keras-vit `SwinTransformer` arguments equivalent to a transformers Swin or Swinv2 config."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"Unsupported Swin hidden_act {config.get('hidden_act')!r}; supported: 'gelu'.")
    image_size = config.get("image_size", 224)
    num_classes = tensors["classifier.weight"].shape[0] if "classifier.weight" in tensors else None
    version = {}
    if config["model_type"] == "swinv2":
        pretrained = config.get("pretrained_window_sizes") or [0] * len(config["depths"])
        version = dict(version=2, pretrained_window_sizes=tuple(pretrained) if any(pretrained) else None)
    return dict(
        **version,
        embed_dim=config["embed_dim"],
        depths=tuple(config["depths"]),
        num_heads=tuple(config["num_heads"]),
        window_size=config.get("window_size", 7),
        patch_size=config.get("patch_size", 4),
        mlp_ratio=config.get("mlp_ratio", 4.0),
        qkv_bias=config.get("qkv_bias", True),
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-5),
        input_shape=(image_size, image_size, config.get("num_channels", 3)),
        include_top=num_classes is not None,
        classes=num_classes or 1000,
        classifier_activation=None,
        drop_path_rate=0.0,
    )


def load_into(model, path, include_top=True, tensors=None, model_type=None, allow_resize=False):
    """Loads a transformers ViT, Swin or Swinv2 directory into an existing keras-vit model."""
    if tensors is None:
        config, tensors = read_transformers_directory(path)
        model_type = config.get("model_type")
    weight_map = WeightMap(model, tensors, checkpoint_name=path)
    if model_type in ("swin", "swinv2"):
        names = TRANSFORMERS_SWINV2 if model_type == "swinv2" else TRANSFORMERS_SWIN
        map_swin(weight_map, names, include_top, allow_resize=allow_resize)
    else:
        map_vit(weight_map, _VIT_NAMES, include_top)
    weight_map.assign()
