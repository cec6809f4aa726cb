"""ViT and hybrid converters: transformers `model_type="vit"` and timm `vit_*` state dicts.

Each source format describes its tensor names as a `ViTNames` instance; the
mapping from there to our variables is shared. Importing this module registers
both converters with `keras_vit.convert`.
"""

import dataclasses
import re

from keras_vit.applications.registry import create_model
from keras_vit.applications.vit.model import VisionTransformer, VIT_VARIANTS
from keras_vit.applications.vit.hybrid import HYBRID_VARIANTS
from keras_vit.convert import TimmConverter, TransformersConverter, register_converter
from keras_vit.convert.weight_map import conv_kernel, dense_kernel
from keras_vit.convert.weight_map import map_dense as _dense
from keras_vit.convert.weight_map import map_norm as _layer_norm
from keras_vit.layers.patch_embedding import resize_position_embedding


@dataclasses.dataclass(frozen=True)
class ViTNames:
    """Tensor names of one ViT checkpoint format. `{i}` is the block index."""

    class_token: str
    position_embedding: str
    patch_projection: str  # prefix of .weight / .bias
    norm1: str
    norm2: str
    qkv: tuple  # one fused prefix, or three (q, k, v)
    attention_output: str
    fc1: str
    fc2: str
    final_norm: str
    head: str
    pre_logits: str = None
    stem: str = None  # prefix of a ResNet-v2 stem (timm hybrids)


def map_vit(weight_map, names, include_top):
    """Fills `weight_map` for a keras-vit ViT/hybrid from a checkpoint named by `names`."""
    model, take = weight_map.model, weight_map.take
    patch_embedding = model.get_layer("patch_embedding")
    if patch_embedding.use_class_token:
        weight_map.set("patch_embedding/class_token", take(names.class_token, lambda t: t.reshape(1, 1, -1)))

    def fit_grid(position):
        position = position.reshape(1, -1, position.shape[-1])
        source_grid = _source_grid(position, patch_embedding)
        return resize_position_embedding(
            position, patch_embedding.grid_size, patch_embedding.num_prefix_tokens, source_grid
        )

    weight_map.set("patch_embedding/position_embedding", take(names.position_embedding, fit_grid))
    weight_map.set("patch_embedding/projection/kernel", take(names.patch_projection + ".weight", conv_kernel))
    weight_map.set("patch_embedding/projection/bias", take(names.patch_projection + ".bias"))
    depth = sum(1 for layer in model.layers if layer.name.startswith("block_"))
    for i in range(depth):
        prefix = f"block_{i}"
        _layer_norm(weight_map, f"{prefix}/norm1", names.norm1.format(i=i))
        _layer_norm(weight_map, f"{prefix}/norm2", names.norm2.format(i=i))
        qkv = [name.format(i=i) for name in names.qkv]
        weight_map.set(
            f"{prefix}/attention/qkv/kernel",
            weight_map.take_concatenated([name + ".weight" for name in qkv], dense_kernel, axis=1),
        )
        if model.get_layer(prefix).qkv_bias:
            weight_map.set(f"{prefix}/attention/qkv/bias", weight_map.take_concatenated([name + ".bias" for name in qkv]))
        _dense(weight_map, f"{prefix}/attention/projection", names.attention_output.format(i=i))
        _dense(weight_map, f"{prefix}/mlp/fc1", names.fc1.format(i=i))
        _dense(weight_map, f"{prefix}/mlp/fc2", names.fc2.format(i=i))
    _layer_norm(weight_map, "norm", names.final_norm)
    head_keys = (names.head, names.pre_logits) if names.pre_logits else (names.head,)
    if _has_layer(model, "pre_logits"):
        _dense(weight_map, "pre_logits", names.pre_logits)
    if include_top:
        _dense(weight_map, "head", names.head)
    else:
        weight_map.ignore(lambda key: key.startswith(head_keys))
    if names.stem:
        map_resnet_v2_stem(weight_map, names.stem)


def map_resnet_v2_stem(weight_map, prefix):
    """timm `ResNetV2(preact=False)` names under `prefix` -> our `stem_*` layers."""
    weight_map.set("stem_conv/kernel", weight_map.take(f"{prefix}stem.conv.weight", conv_kernel))
    _group_norm(weight_map, "stem_norm", f"{prefix}stem.norm")
    for layer in weight_map.model.layers:
        if not layer.name.startswith("stem_stage"):
            continue
        stage, block = (int(part) for part in layer.name[len("stem_stage") :].split("_block"))
        source = f"{prefix}stages.{stage}.blocks.{block}."
        for index in (1, 2, 3):
            weight_map.set(f"{layer.name}/conv{index}/kernel", weight_map.take(f"{source}conv{index}.weight", conv_kernel))
            _group_norm(weight_map, f"{layer.name}/norm{index}", f"{source}norm{index}")
        if layer.has_projection:
            weight_map.set(
                f"{layer.name}/downsample_conv/kernel", weight_map.take(f"{source}downsample.conv.weight", conv_kernel)
            )
            _group_norm(weight_map, f"{layer.name}/downsample_norm", f"{source}downsample.norm")


def _source_grid(position, patch_embedding):
    """The checkpoint's grid; square unless it matches ours in size."""
    patches = position.shape[1] - patch_embedding.num_prefix_tokens
    if patches == patch_embedding.num_patches:
        return patch_embedding.grid_size
    return None


def _has_layer(model, name):
    return any(layer.name == name for layer in model.layers)


_group_norm = _layer_norm


# ---------------------------------------------------------------------------------------------
# transformers: ViTForImageClassification / ViTModel (model_type "vit")
# ---------------------------------------------------------------------------------------------

# transformers >= 5 layout; older checkpoints are renamed to it by `_modernize`.
TRANSFORMERS_VIT = ViTNames(
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


def _modernize(tensors):
    """Renames pre-v5 transformers ViT layouts (`encoder.layer.N.attention.attention.query`) to v5's."""
    renamed = {}
    for key, value in tensors.items():
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


register_converter(
    TransformersConverter(
        model_type="vit",
        family="vit",
        builder=VisionTransformer,
        builder_arguments=vit_kwargs_from_config,
        map_weights=lambda weight_map, model_type, include_top, allow_resize: map_vit(
            weight_map, TRANSFORMERS_VIT, include_top
        ),
        rename=_modernize,
        required_keys=("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
    )
)

# ---------------------------------------------------------------------------------------------
# timm: vit_* and the vit_*_r* hybrids
# ---------------------------------------------------------------------------------------------

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
}

TIMM_VIT = ViTNames(
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


def map_timm_vit(weight_map, tensors, include_top, allow_resize=False):
    """timm ViT or hybrid (`patch_embed.backbone.*`) state dict -> our ViT."""
    is_hybrid = any(key.startswith("patch_embed.backbone.") for key in tensors)
    names = dataclasses.replace(TIMM_VIT, stem="patch_embed.backbone.") if is_hybrid else TIMM_VIT
    map_vit(weight_map, names, include_top)


def check_timm_vit(tensors, path):
    if "fc_norm.weight" in tensors:
        raise ValueError(
            f"{path!r} normalizes after average pooling (timm fc_norm); keras-vit's 'avg' pooling "
            "normalizes before it, so these weights would compute something else. Use a "
            "class-token checkpoint."
        )


register_converter(
    TimmConverter(
        family="vit",
        model_names={**{name: name for name in (*VIT_VARIANTS, *HYBRID_VARIANTS)}, **TIMM_NAMES},
        create=create_model,
        recognizes=lambda tensors: "pos_embed" in tensors,  # Swin state dicts have none
        map_weights=map_timm_vit,
        builder_arguments=lambda tensors: (
            {"representation_size": tensors["pre_logits.fc.weight"].shape[0]} if "pre_logits.fc.weight" in tensors else {}
        ),
        check=check_timm_vit,
    )
)
