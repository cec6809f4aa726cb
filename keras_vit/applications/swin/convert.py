"""Swin and Swin-V2 converters: transformers `model_type="swin"/"swinv2"` and timm `swin*`.

Each source format describes its tensor names as a `SwinNames` instance; the
mapping from there to our variables is shared. Importing this module registers
the converters with `keras_vit.convert`.
"""

import dataclasses

import numpy as np

from keras_vit.applications.registry import create_model
from keras_vit.applications.swin.model import SWIN_V2_VARIANTS, SWIN_VARIANTS, SwinTransformer
from keras_vit.convert import TimmConverter, TransformersConverter, register_converter
from keras_vit.convert.weight_map import conv_kernel, dense_kernel
from keras_vit.convert.weight_map import map_dense as _dense
from keras_vit.convert.weight_map import map_norm as _norm
from keras_vit.layers.position_bias import resize_bias_table


@dataclasses.dataclass(frozen=True)
class SwinNames:
    """Tensor names of one Swin checkpoint format.

    `block` is formatted with `stage` and `block`; `merging` with the stage
    whose merging it is stored under. Per-block names are relative to `block`.
    The last group is Swin-V2's (`query_bias`/`value_bias` None: the biases
    of separate q and v projections).
    """

    patch_projection: str
    patch_norm: str
    block: str
    norm1: str
    norm2: str
    qkv: tuple  # one fused name, or three (q, k, v)
    attention_output: str
    bias_table: str
    fc1: str
    fc2: str
    merging: str
    final_norm: str
    head: str
    merging_in_next_stage: bool = False
    logit_scale: str = None
    cpb_hidden: str = None
    cpb_output: str = None
    query_bias: str = None
    value_bias: str = None


# What `save_pretrained` writes and the Hub's Swin checkpoints use.
TRANSFORMERS_SWIN = SwinNames(
    patch_projection="swin.embeddings.patch_embeddings.projection",
    patch_norm="swin.embeddings.norm",
    block="swin.encoder.layers.{stage}.blocks.{block}.",
    norm1="layernorm_before",
    norm2="layernorm_after",
    qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
    attention_output="attention.output.dense",
    bias_table="attention.self.relative_position_bias_table",
    fc1="intermediate.dense",
    fc2="output.dense",
    merging="swin.encoder.layers.{stage}.downsample.",
    final_norm="swin.layernorm",
    head="classifier",
)

TRANSFORMERS_SWINV2 = dataclasses.replace(
    TRANSFORMERS_SWIN,
    patch_projection="swinv2.embeddings.patch_embeddings.projection",
    patch_norm="swinv2.embeddings.norm",
    block="swinv2.encoder.layers.{stage}.blocks.{block}.",
    bias_table=None,
    merging="swinv2.encoder.layers.{stage}.downsample.",
    final_norm="swinv2.layernorm",
    logit_scale="attention.self.logit_scale",
    cpb_hidden="attention.self.continuous_position_bias_mlp.0",
    cpb_output="attention.self.continuous_position_bias_mlp.2",
)

# timm >= 0.9 stores patch merging at the start of the next stage and the head as `head.fc`.
TIMM_SWIN = SwinNames(
    patch_projection="patch_embed.proj",
    patch_norm="patch_embed.norm",
    block="layers.{stage}.blocks.{block}.",
    norm1="norm1",
    norm2="norm2",
    qkv=("attn.qkv",),
    attention_output="attn.proj",
    bias_table="attn.relative_position_bias_table",
    fc1="mlp.fc1",
    fc2="mlp.fc2",
    merging="layers.{stage}.downsample.",
    final_norm="norm",
    head="head.fc",
    merging_in_next_stage=True,
)


TIMM_SWINV2 = dataclasses.replace(
    TIMM_SWIN,
    bias_table=None,
    logit_scale="attn.logit_scale",
    cpb_hidden="attn.cpb_mlp.0",
    cpb_output="attn.cpb_mlp.2",
    query_bias="attn.q_bias",
    value_bias="attn.v_bias",
)


def timm_swin_names(tensors):
    """The timm layout of a Swin or Swin-V2 state dict: merging at the start of the next
    stage and `head.fc` (timm >= 0.9), or the original `layers.{i}.downsample` and `head`."""
    names = TIMM_SWINV2 if any(key.endswith("attn.logit_scale") for key in tensors) else TIMM_SWIN
    if any(key.startswith("layers.0.downsample.") for key in tensors):
        return dataclasses.replace(names, head="head", merging_in_next_stage=False)
    return names


def map_swin(weight_map, names, include_top, allow_resize=False):
    """Fills `weight_map` for a keras-vit `SwinTransformer` from a checkpoint named by `names`.

    Swin bias tables of a checkpoint trained with another window size are
    interpolated (bicubic) only with `allow_resize`; otherwise that is a
    ValueError. A stage whose window was clamped to a smaller feature map takes
    the exact centre of the table (its offsets are a subset). Derived buffers
    (`relative_position_index`, `relative_coords_table`, `attn_mask`) are ignored.
    """
    model, take = weight_map.model, weight_map.take
    weight_map.ignore(lambda key: key.endswith(("relative_position_index", "relative_coords_table", "attn_mask")))
    weight_map.set("patch_embedding/kernel", take(names.patch_projection + ".weight", conv_kernel))
    weight_map.set("patch_embedding/bias", take(names.patch_projection + ".bias"))
    _norm(weight_map, "patch_norm", names.patch_norm)
    for layer in model.layers:
        name = layer.name
        if name.startswith("stage") and "_block" in name:
            stage, block = (int(part) for part in name[len("stage"):].split("_block"))
            source = names.block.format(stage=stage, block=block)
            _norm(weight_map, f"{name}/norm1", source + names.norm1)
            _norm(weight_map, f"{name}/norm2", source + names.norm2)
            attention = f"{name}/window_attention/attention"
            qkv = [source + part for part in names.qkv]
            weight_map.set(f"{attention}/qkv/kernel", weight_map.take_concatenated([k + ".weight" for k in qkv], dense_kernel, axis=1))
            if layer.cosine_attention:
                _map_cosine_attention(weight_map, names, source, qkv, name, layer.qkv_bias)
            elif layer.qkv_bias:
                weight_map.set(f"{attention}/qkv/bias", weight_map.take_concatenated([k + ".bias" for k in qkv]))
            _dense(weight_map, f"{attention}/projection", source + names.attention_output)
            if layer.position_bias == "table":
                weight_map.set(
                    f"{name}/window_attention/relative_position_bias/relative_position_bias_table",
                    take(source + names.bias_table, lambda table: _fit_bias_table(table, layer, allow_resize, weight_map)),
                )
            _dense(weight_map, f"{name}/mlp/fc1", source + names.fc1)
            _dense(weight_map, f"{name}/mlp/fc2", source + names.fc2)
        elif name.endswith("_merging"):
            stage = int(name[len("stage"):].split("_")[0]) + int(names.merging_in_next_stage)
            source = names.merging.format(stage=stage)
            weight_map.set(f"{name}/reduction/kernel", take(source + "reduction.weight", dense_kernel))
            _norm(weight_map, f"{name}/norm", source + "norm")
    _norm(weight_map, "norm", names.final_norm)
    if include_top:
        _dense(weight_map, "head", names.head)
    else:
        weight_map.ignore(lambda key: key.startswith(names.head.split(".")[0] + "."))


def _map_cosine_attention(weight_map, names, source, qkv, name, qkv_bias):
    """Swin-V2's q/v biases, per-head logit scale and continuous-position-bias MLP."""
    attention, take = f"{name}/window_attention/attention", weight_map.take
    if qkv_bias:
        query_bias = source + names.query_bias if names.query_bias else qkv[0] + ".bias"
        value_bias = source + names.value_bias if names.value_bias else qkv[2] + ".bias"
        weight_map.set(f"{attention}/query_bias", take(query_bias))
        weight_map.set(f"{attention}/value_bias", take(value_bias))
    weight_map.set(f"{attention}/logit_scale", take(source + names.logit_scale, lambda scale: scale.reshape(-1)))
    bias = f"{name}/window_attention/continuous_position_bias"
    _dense(weight_map, f"{bias}/hidden", source + names.cpb_hidden)
    weight_map.set(f"{bias}/output/kernel", take(source + names.cpb_output + ".weight", dense_kernel))


def _fit_bias_table(table, block, allow_resize, weight_map):
    """The checkpoint's `((2w-1)^2, heads)` table for `block`'s window M (and its clamped window m);
    None, with the problem reported, when w != M and resizing is not allowed."""
    side = int(round(np.sqrt(table.shape[0])))
    checkpoint_window = (side + 1) // 2
    if checkpoint_window != block.window_size:
        if not allow_resize:
            weight_map.report(
                f"the relative position tables were trained with window size {checkpoint_window}, but the model "
                f"uses window_size={block.window_size}: build it with window_size={checkpoint_window}, or pass "
                "allow_resize=True to interpolate the tables (bicubic; fine-tune afterwards)"
            )
            return None
        table = resize_bias_table(table, block.window_size)
    clamped = block.attention.relative_position_bias.window_size
    if clamped == block.window_size:
        return table
    full, crop = 2 * block.window_size - 1, block.window_size - clamped
    grid = table.reshape(full, full, -1)[crop : full - crop, crop : full - crop]
    return grid.reshape(-1, table.shape[-1])




# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


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


def _map_transformers_swin(weight_map, model_type, include_top, allow_resize):
    names = TRANSFORMERS_SWINV2 if model_type == "swinv2" else TRANSFORMERS_SWIN
    map_swin(weight_map, names, include_top, allow_resize=allow_resize)


for _model_type in ("swin", "swinv2"):
    register_converter(
        TransformersConverter(
            model_type=_model_type,
            family="swin",
            builder=SwinTransformer,
            builder_arguments=swin_kwargs_from_config,
            map_weights=_map_transformers_swin,
            required_keys=("embed_dim", "depths", "num_heads"),
        )
    )

# timm model names -> keras-vit registry names.
TIMM_NAMES = {
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

register_converter(
    TimmConverter(
        family="swin",
        model_names={**{name: name for name in (*SWIN_VARIANTS, *SWIN_V2_VARIANTS)}, **TIMM_NAMES},
        create=create_model,
        recognizes=lambda tensors: any(key.startswith("layers.") for key in tensors),
        map_weights=lambda weight_map, tensors, include_top, allow_resize: map_swin(
            weight_map, timm_swin_names(tensors), include_top, allow_resize=allow_resize
        ),
    )
)
