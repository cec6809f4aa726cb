"""Maps ViT and hybrid checkpoints onto keras-vit's layer layout.

Each source format describes its tensor names as a `ViTNames` instance; the
mapping from there to our variables is shared.
"""

import dataclasses

from keras_vit.convert.weight_map import conv_kernel, dense_kernel
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


def _dense(weight_map, path, source):
    weight_map.set(f"{path}/kernel", weight_map.take(source + ".weight", dense_kernel))
    weight_map.set(f"{path}/bias", weight_map.take(source + ".bias"))


def _layer_norm(weight_map, path, source):
    weight_map.set(f"{path}/gamma", weight_map.take(source + ".weight"))
    weight_map.set(f"{path}/beta", weight_map.take(source + ".bias"))


_group_norm = _layer_norm
