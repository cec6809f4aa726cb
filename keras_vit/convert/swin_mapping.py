"""Maps Swin checkpoints (transformers, timm) onto keras-vit's Swin layout.

Each source format describes its tensor names as a `SwinNames` instance; the
mapping from there to our variables is shared.
"""

import dataclasses

from keras_vit.convert.weight_map import conv_kernel, dense_kernel
from keras_vit.layers.position_bias import resize_bias_table


@dataclasses.dataclass(frozen=True)
class SwinNames:
    """Tensor names of one Swin checkpoint format.

    `block` is formatted with `stage` and `block`; `merging` with the stage
    whose merging it is stored under. Per-block names are relative to `block`.
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


def timm_swin_names(tensors):
    """`TIMM_SWIN`, or the original layout (`layers.{i}.downsample`, `head`) when the state dict has it."""
    if any(key.startswith("layers.0.downsample.") for key in tensors):
        return dataclasses.replace(TIMM_SWIN, head="head", merging_in_next_stage=False)
    return TIMM_SWIN


def map_swin(weight_map, names, include_top):
    """Fills `weight_map` for a keras-vit `SwinTransformer` from a checkpoint named by `names`.

    Derived buffers some checkpoints carry (`relative_position_index`, `attn_mask`) are ignored.
    """
    model, take = weight_map.model, weight_map.take
    weight_map.ignore(lambda key: key.endswith(("relative_position_index", "attn_mask")))
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
            if layer.qkv_bias:
                weight_map.set(f"{attention}/qkv/bias", weight_map.take_concatenated([k + ".bias" for k in qkv]))
            _dense(weight_map, f"{attention}/projection", source + names.attention_output)
            window = layer.attention.relative_position_bias.window_size
            weight_map.set(
                f"{name}/window_attention/relative_position_bias/relative_position_bias_table",
                take(source + names.bias_table, lambda table: resize_bias_table(table, window)),
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


def _dense(weight_map, path, source):
    weight_map.set(f"{path}/kernel", weight_map.take(source + ".weight", dense_kernel))
    weight_map.set(f"{path}/bias", weight_map.take(source + ".bias"))


def _norm(weight_map, path, source):
    weight_map.set(f"{path}/gamma", weight_map.take(source + ".weight"))
    weight_map.set(f"{path}/beta", weight_map.take(source + ".bias"))
