"""DETR converters: transformers `DetrForObjectDetection` directories (`model_type="detr"`) and
the original facebookresearch/detr state dict (as `.safetensors`).

Both name the same tensors differently; each layout is a `DetrNames`, and one mapping fills
the model. The ResNet backbone comes either in transformers' own ResNet layout
(`use_timm_backbone=False`) or in torchvision's (`conv1`, `layer1.0.downsample.0`, ...: DETR's
original checkpoints and transformers' timm-backbone ones). Importing this module registers both.
"""

import dataclasses
import re

from keras_vit.applications.detr.model import DETR, DETR_VARIANTS, RESNET_FROZEN_LAYERS
from keras_vit.applications.registry import create_model, model_info
from keras_vit.convert import TimmConverter, TransformersConverter, register_converter
from keras_vit.convert.weight_map import conv_kernel, dense_kernel
from keras_vit.convert.weight_map import map_dense as _dense
from keras_vit.convert.weight_map import map_norm as _norm


@dataclasses.dataclass(frozen=True)
class DetrNames:
    """Tensor names of one DETR checkpoint layout (per-layer names relative to `encoder_layer`
    / `decoder_layer`, which are formatted with `index`)."""

    backbone: str  # prefix of the ResNet's tensors
    input_projection: str
    query_embedding: str
    encoder_layer: str
    decoder_layer: str
    decoder_norm: str
    class_head: str
    box_head: str  # formatted with `index` 0..2
    self_attention: str
    cross_attention: str
    fused_qkv: bool  # torch nn.MultiheadAttention's in_proj_weight (original) or q/k/v_proj
    attention_output: str
    fc1: str
    fc2: str
    encoder_norms: tuple
    decoder_norms: tuple


TRANSFORMERS_DETR = DetrNames(
    backbone="model.backbone.model.",
    input_projection="model.input_projection",
    query_embedding="model.query_position_embeddings.weight",
    encoder_layer="model.encoder.layers.{index}.",
    decoder_layer="model.decoder.layers.{index}.",
    decoder_norm="model.decoder.layernorm",
    class_head="class_labels_classifier",
    box_head="bbox_predictor.layers.{index}",
    self_attention="self_attn",
    cross_attention="encoder_attn",
    fused_qkv=False,
    attention_output="o_proj",
    fc1="mlp.fc1",
    fc2="mlp.fc2",
    encoder_norms=("self_attn_layer_norm", "final_layer_norm"),
    decoder_norms=("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"),
)

ORIGINAL_DETR = DetrNames(
    backbone="backbone.0.body.",
    input_projection="input_proj",
    query_embedding="query_embed.weight",
    encoder_layer="transformer.encoder.layers.{index}.",
    decoder_layer="transformer.decoder.layers.{index}.",
    decoder_norm="transformer.decoder.norm",
    class_head="class_embed",
    box_head="bbox_embed.layers.{index}",
    self_attention="self_attn",
    cross_attention="multihead_attn",
    fused_qkv=True,
    attention_output="out_proj",
    fc1="linear1",
    fc2="linear2",
    encoder_norms=("norm1", "norm2"),
    decoder_norms=("norm1", "norm2", "norm3"),
)

# transformers < 5 wrote `out_proj`, the MLP without `mlp.`, and a timm backbone under `conv_encoder`.
_LEGACY_TRANSFORMERS = (
    (re.compile(r"\.(self_attn|encoder_attn)\.out_proj\."), r".\1.o_proj."),
    (re.compile(r"(layers\.\d+)\.(fc[12])\."), r"\1.mlp.\2."),
    (re.compile(r"^model\.backbone\.conv_encoder\.model\."), "model.backbone.model."),
)


def rename_legacy_transformers(tensors):
    renamed = {}
    for key, value in tensors.items():
        for pattern, replacement in _LEGACY_TRANSFORMERS:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed


# ---------------------------------------------------------------------------------------------
# The mapping
# ---------------------------------------------------------------------------------------------


def map_detr(weight_map, names, tensors):
    """Plans every variable of a DETR model built with a keras-vit ResNet backbone."""
    weight_map.ignore(lambda key: key.endswith("num_batches_tracked"))
    model = weight_map.model
    _map_resnet(weight_map, names.backbone, model.backbone, torchvision_layout=f"{names.backbone}conv1.weight" in tensors)
    _conv(weight_map, "input_projection", names.input_projection, bias=True)
    weight_map.set("object_queries/embeddings", weight_map.take(names.query_embedding))
    for index in range(model.encoder_layers):
        layer = names.encoder_layer.format(index=index)
        _attention(weight_map, f"encoder_layer{index}/self_attention", layer + names.self_attention, names)
        _ffn_and_norms(weight_map, f"encoder_layer{index}", layer, names, names.encoder_norms)
    for index in range(model.decoder_layers):
        layer = names.decoder_layer.format(index=index)
        _attention(weight_map, f"decoder_layer{index}/self_attention", layer + names.self_attention, names)
        _attention(weight_map, f"decoder_layer{index}/cross_attention", layer + names.cross_attention, names)
        _ffn_and_norms(weight_map, f"decoder_layer{index}", layer, names, names.decoder_norms)
    _norm(weight_map, "decoder_norm", names.decoder_norm)
    _dense(weight_map, "class_head", names.class_head)
    for index in range(3):
        _dense(weight_map, f"box_head{index}", names.box_head.format(index=index))


def _attention(weight_map, path, source, names):
    if names.fused_qkv:
        width = weight_map.source[f"{source}.in_proj_weight"].shape[1] if weight_map.has(f"{source}.in_proj_weight") else None
        weight = weight_map.take(f"{source}.in_proj_weight")
        bias = weight_map.take(f"{source}.in_proj_bias")
        for part, projection in enumerate(("query", "key", "value")):
            rows = slice(part * width, (part + 1) * width) if width else None
            weight_map.set(f"{path}/{projection}/kernel", None if weight is None else dense_kernel(weight[rows]))
            weight_map.set(f"{path}/{projection}/bias", None if bias is None else bias[rows])
    else:
        for projection, name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            _dense(weight_map, f"{path}/{projection}", f"{source}.{name}")
    _dense(weight_map, f"{path}/output", f"{source}.{names.attention_output}")


def _ffn_and_norms(weight_map, path, layer, names, norms):
    _dense(weight_map, f"{path}/fc1", layer + names.fc1)
    _dense(weight_map, f"{path}/fc2", layer + names.fc2)
    for index, norm in enumerate(norms, start=1):
        _norm(weight_map, f"{path}/norm{index}", layer + norm)


def _map_resnet(weight_map, prefix, backbone, torchvision_layout):
    """The backbone in torchvision's names (`conv1`, `layer1.0.conv2`) or transformers' ResNet's
    (`embedder.embedder`, `encoder.stages.0.layers.0.layer.1`)."""
    if torchvision_layout:
        stem_conv, stem_bn = "conv1", "bn1"
        block = "layer{stage_number}.{block}."
        convs = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "shortcut_conv": "downsample.0"}
        norms = {"bn1": "bn1", "bn2": "bn2", "bn3": "bn3", "shortcut_bn": "downsample.1"}
    else:
        stem_conv, stem_bn = "embedder.embedder.convolution", "embedder.embedder.normalization"
        block = "encoder.stages.{stage}.layers.{block}."
        convs = {f"conv{n}": f"layer.{n - 1}.convolution" for n in (1, 2, 3)} | {"shortcut_conv": "shortcut.convolution"}
        norms = {f"bn{n}": f"layer.{n - 1}.normalization" for n in (1, 2, 3)} | {"shortcut_bn": "shortcut.normalization"}
    _conv(weight_map, "stem_conv", prefix + stem_conv)
    _batch_norm(weight_map, "stem_bn", prefix + stem_bn)
    for layer in backbone.layers:
        match = re.fullmatch(r"stage(\d+)_block(\d+)", layer.name)
        if not match:
            continue
        stage, index = int(match[1]), int(match[2])
        source = prefix + block.format(stage=stage, stage_number=stage + 1, block=index)
        for ours, theirs in convs.items():
            if ours != "shortcut_conv" or layer.shortcut is not None:
                _conv(weight_map, f"{layer.name}/{ours}", source + theirs)
        for ours, theirs in norms.items():
            if ours != "shortcut_bn" or layer.shortcut is not None:
                _batch_norm(weight_map, f"{layer.name}/{ours}", source + theirs)



def _conv(weight_map, path, source, bias=False):
    weight_map.set(f"{path}/kernel", weight_map.take(source + ".weight", conv_kernel))
    if bias:
        weight_map.set(f"{path}/bias", weight_map.take(source + ".bias"))



def _batch_norm(weight_map, path, source):
    _norm(weight_map, path, source)
    weight_map.set(f"{path}/moving_mean", weight_map.take(source + ".running_mean"))
    weight_map.set(f"{path}/moving_variance", weight_map.take(source + ".running_var"))


# ---------------------------------------------------------------------------------------------
# Architectures from config.json or from the tensors
# ---------------------------------------------------------------------------------------------


def detr_kwargs_from_config(config, tensors):
    """keras-vit `DETR` arguments equivalent to a transformers `DetrConfig`."""
    for key, supported in (("activation_function", "relu"), ("position_embedding_type", "sine")):
        if config.get(key, supported) != supported:
            raise ValueError(f"DETR config {key}={config[key]!r} is not supported; keras-vit's DETR uses {supported!r}.")
    if config.get("dilation"):
        raise ValueError("DETR config dilation=True (DC5) is not supported: keras-vit's ResNet has no dilated stage.")
    for encoder_key, decoder_key in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if config.get(encoder_key) != config.get(decoder_key):
            raise ValueError(
                f"DETR config {encoder_key}={config.get(encoder_key)} differs from {decoder_key}={config.get(decoder_key)}; "
                "keras-vit's DETR uses one value for both."
            )
    return dict(
        backbone=_backbone_from_config(config),
        num_queries=config["num_queries"],
        hidden_dim=config["d_model"],
        num_heads=config["encoder_attention_heads"],
        encoder_layers=config["encoder_layers"],
        decoder_layers=config["decoder_layers"],
        ffn_dim=config["encoder_ffn_dim"],
        dropout_rate=config.get("dropout", 0.1),
        frozen_backbone_layers=RESNET_FROZEN_LAYERS,
        classes=tensors["class_labels_classifier.weight"].shape[0] - 1,
    )


def _backbone_from_config(config):
    backbone = config.get("backbone_config") or {}
    model_type = backbone.get("model_type")
    if model_type == "timm_backbone" or (model_type is None and config.get("use_timm_backbone", True)):
        name = backbone.get("backbone") or config.get("backbone") or "resnet50"
        if name not in ("resnet50", "resnet101"):
            raise ValueError(f"DETR backbone {name!r} is not supported; keras-vit reads resnet50 and resnet101 backbones.")
        return name
    if model_type != "resnet" or backbone.get("layer_type", "bottleneck") != "bottleneck":
        raise ValueError(
            f"DETR backbone_config of model_type {model_type!r}, layer_type {backbone.get('layer_type')!r} is not "
            "supported; keras-vit reads bottleneck ResNet backbones."
        )
    if backbone.get("embedding_size", 64) != 64 or backbone.get("downsample_in_bottleneck") or backbone.get("downsample_in_first_stage"):
        raise ValueError("DETR backbone_config: keras-vit's ResNet has a 64-channel stem and strides on the 3x3 convs (v1.5).")
    depths, filters = tuple(backbone["depths"]), tuple(backbone["hidden_sizes"])
    stages = backbone.get("stage_names") or ["stem"] + [f"stage{i + 1}" for i in range(len(depths))]
    if (backbone.get("out_features") or stages[-1:])[-1] != stages[-1]:
        raise ValueError(f"DETR backbone_config out_features {backbone.get('out_features')}: DETR reads the last stage, {stages[-1]!r}.")
    resnet = model_info("resnet50").builder  # the ResNet family's generic builder
    return resnet(
        depths=depths,
        widths=tuple(f // 4 for f in filters),
        filters=filters,
        include_top=False,
        pooling=None,
        include_preprocessing=False,
        input_shape=(None, None, 3),
        name="backbone",
    )


def detr_kwargs_from_tensors(tensors):
    """`DETR` arguments read from an original state dict (heads: DETR's 8, not stored)."""
    count = lambda pattern: len({m[1] for key in tensors if (m := re.match(pattern, key))})
    blocks_res4 = count(r"backbone\.0\.body\.layer3\.(\d+)\.")
    backbones = {6: "resnet50", 23: "resnet101"}
    if blocks_res4 not in backbones:
        raise ValueError(f"DETR state dict with {blocks_res4} res4 blocks: keras-vit reads ResNet-50 (6) and ResNet-101 (23) backbones.")
    return dict(
        backbone=backbones[blocks_res4],
        num_queries=tensors["query_embed.weight"].shape[0],
        hidden_dim=tensors["query_embed.weight"].shape[1],
        encoder_layers=count(r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=count(r"transformer\.decoder\.layers\.(\d+)\."),
        ffn_dim=tensors["transformer.encoder.layers.0.linear1.weight"].shape[0],
        classes=tensors["class_embed.weight"].shape[0] - 1,
        include_preprocessing=False,
    )


def _check_original(tensors, path):
    if "query_embed.weight" not in tensors or "class_embed.weight" not in tensors:
        raise ValueError(f"{path!r} is not a DETR state dict (no query_embed.weight / class_embed.weight).")


register_converter(
    TransformersConverter(
        model_type="detr",
        family="detr",
        builder=DETR,
        builder_arguments=detr_kwargs_from_config,
        map_weights=lambda weight_map, model_type, include_top, allow_resize: map_detr(
            weight_map, TRANSFORMERS_DETR, weight_map.source
        ),
        rename=rename_legacy_transformers,
        required_keys=("d_model", "encoder_layers", "decoder_layers", "num_queries", "encoder_attention_heads", "encoder_ffn_dim"),
    )
)

register_converter(
    TimmConverter(
        family="detr",
        model_names={**{name: name for name in DETR_VARIANTS}, "detr_resnet50": "detr_r50", "detr_resnet101": "detr_r101"},
        create=create_model,
        recognizes=lambda tensors: "query_embed.weight" in tensors and "class_embed.weight" in tensors,
        map_weights=lambda weight_map, tensors, include_top, allow_resize: map_detr(weight_map, ORIGINAL_DETR, tensors),
        builder_arguments=detr_kwargs_from_tensors,
        check=_check_original,
        classifier=False,
    )
)
