"""MViTv2 converter: timm `mvitv2_*` state dicts (`.safetensors`), and the flat `blocks.{i}` layout
of the official facebookresearch/mvit checkpoints once saved as safetensors.

timm's names: `patch_embed.proj`, `cls_token`, `pos_embed`, `stages.{i}.blocks.{j}.{norm1, attn.qkv,
attn.pool_{q,k,v}, attn.norm_{q,k,v}, attn.rel_pos_{h,w}, attn.proj, shortcut_proj_attn | shortcut_proj_mlp,
norm2, mlp.fc1, mlp.fc2}`, `norm`, `head.fc`. The official layout numbers blocks across stages, names the
shortcut projection `blocks.{n}.proj` and the head `head.projection` (timm's `checkpoint_filter_fn`
renames them the same way). Importing this module registers the converter with `keras_vit.convert`.
"""

import re

import numpy as np

from keras_vit.applications.mvit.model import MVIT_VARIANTS
from keras_vit.applications.registry import create_model
from keras_vit.convert import TimmConverter, register_converter
from keras_vit.convert.weight_map import conv_kernel, dense_kernel
from keras_vit.convert.weight_map import map_dense as _dense
from keras_vit.convert.weight_map import map_norm as _norm
from keras_vit.layers.patch_embedding import interpolation_matrix, resize_position_embedding

# timm model names -> keras-vit registry names.
TIMM_NAMES = {
    "mvitv2_tiny": "mvitv2_t",
    "mvitv2_small": "mvitv2_s",
    "mvitv2_base": "mvitv2_b",
    "mvitv2_large": "mvitv2_l",
}

_TIMM_BLOCK = re.compile(r"^stages\.\d+\.blocks\.\d+\.")
_FLAT_POOLING = re.compile(r"^blocks\.\d+\.attn\.(pool_[qkv]|norm_[qkv]|rel_pos_[hw])\b")  # not in a ViT


def recognizes(tensors):
    """True for timm's MViTv2 layout and the flat official ones (pooling attention's tensor names)."""
    return any(_TIMM_BLOCK.match(key) or _FLAT_POOLING.match(key) for key in tensors)


def pool_kernel(weight):
    """PyTorch depthwise Conv2d weight `(channels, 1, kh, kw)` -> our `(kh, kw, channels, 1)`."""
    return np.transpose(weight, (2, 3, 0, 1))


def resize_rel_pos(table, length):
    """A `(L, head_dim)` relative position table linearly interpolated to `length` rows (the official
    MViTv2 `get_rel_pos`: `F.interpolate(mode="linear")`, `align_corners=False`)."""
    if table.shape[0] == length:
        return table
    return (interpolation_matrix(table.shape[0], length, "bilinear") @ table.astype(np.float64)).astype(np.float32)


def official_to_timm(tensors, depths, expand_attn):
    """Renames a flat state dict (`blocks.{n}`: the official MViTv2 code, or pytorchvideo's MViTv1 with
    separate `attn.q/k/v`, `cls_positional_encoding.*`, `patch_embed.patch_model`, `norm_embed` and
    `head.proj`) to timm's stage layout, as timm's `checkpoint_filter_fn` does for the official one.
    A timm state dict is returned unchanged."""
    if not any(key.startswith("blocks.") for key in tensors):
        return dict(tensors)
    where = [(stage, block) for stage, depth in enumerate(depths) for block in range(depth)]
    shortcut = "shortcut_proj_attn" if expand_attn else "shortcut_proj_mlp"
    renames = (("cls_positional_encoding.", ""), ("patch_embed.patch_model.", "patch_embed.proj."),
               ("norm_embed.", "norm."), ("head.projection.", "head.fc."), ("head.proj.", "head.fc."))
    renamed, separate_qkv = {}, {}
    for key, value in tensors.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
        match = re.match(r"blocks\.(\d+)\.(.*)", key)
        if match and int(match.group(1)) < len(where):
            stage, block = where[int(match.group(1))]
            rest = re.sub(r"^proj\.", shortcut + ".", match.group(2))
            key = f"stages.{stage}.blocks.{block}.{rest}"
            part = re.fullmatch(r"(.*attn\.)([qkv])\.(weight|bias)", key)
            if part:  # separate q, k, v projections: fused below, in q, k, v order
                separate_qkv.setdefault((part.group(1), part.group(3)), {})[part.group(2)] = value
                continue
        renamed[key] = value
    for (prefix, kind), parts in separate_qkv.items():
        if set(parts) == set("qkv"):
            renamed[f"{prefix}qkv.{kind}"] = np.concatenate([parts[p] for p in "qkv"], axis=0)
        else:  # incomplete: leave them for the mismatch report
            renamed.update({f"{prefix}{p}.{kind}": value for p, value in parts.items()})
    return renamed


def _model_blocks(model):
    """`{(stage, block): layer}` of a keras-vit MViT."""
    blocks = {}
    for layer in model.layers:
        match = re.fullmatch(r"stage(\d+)_block(\d+)", layer.name)
        if match:
            blocks[int(match.group(1)), int(match.group(2))] = layer
    return blocks


def map_mvit(weight_map, include_top, allow_resize=False):
    """Fills `weight_map` for a keras-vit `MViTv2` from a timm (or official) MViTv2 state dict.

    Relative position tables and the absolute position embedding of a checkpoint trained at
    another image size are interpolated (linearly, as the official code does at run time; the
    position embedding bicubically) only with `allow_resize`; otherwise that is a ValueError.
    """
    model, take = weight_map.model, weight_map.take
    blocks = _model_blocks(model)
    depths = [1 + max(block for (s, block) in blocks if s == stage) for stage in range(1 + max(s for s, _ in blocks))]
    expand_attn = blocks[0, 0].expand_attn
    weight_map.source = official_to_timm(weight_map.source, depths, expand_attn)
    embedding = model.get_layer("patch_embedding")
    weight_map.set("patch_embedding/projection/kernel", take("patch_embed.proj.weight", conv_kernel))
    weight_map.set("patch_embedding/projection/bias", take("patch_embed.proj.bias"))
    if embedding.use_class_token:
        weight_map.set("patch_embedding/class_token", take("cls_token", lambda t: t.reshape(1, 1, -1)))
    if embedding.use_position_embedding:
        _map_position_embedding(weight_map, embedding, allow_resize)
    for (stage, index), block in sorted(blocks.items()):
        name, source = block.name, f"stages.{stage}.blocks.{index}."
        attention = block.attention
        _norm(weight_map, f"{name}/norm1", source + "norm1")
        if attention.qkv_bias:
            _dense(weight_map, f"{name}/attention/qkv", source + "attn.qkv")
        else:
            weight_map.set(f"{name}/attention/qkv/kernel", take(source + "attn.qkv.weight", dense_kernel))
        _dense(weight_map, f"{name}/attention/projection", source + "attn.proj")
        for part in "qkv":
            if getattr(attention, f"pool_{part}") is not None:
                weight_map.set(f"{name}/attention/pool_{part}", take(f"{source}attn.pool_{part}.weight", pool_kernel))
                _norm(weight_map, f"{name}/attention/norm_{part}", f"{source}attn.norm_{part}")
        if attention.use_rel_pos:
            for axis, variable in (("h", attention.rel_pos_h), ("w", attention.rel_pos_w)):
                length = variable.shape[0]
                weight_map.set(
                    f"{name}/attention/rel_pos_{axis}",
                    take(f"{source}attn.rel_pos_{axis}", lambda t, n=length: _fit_rel_pos(t, n, allow_resize, weight_map)),
                )
        if block.shortcut_projection is not None:
            shortcut = "shortcut_proj_attn" if block.expand_attn else "shortcut_proj_mlp"
            _dense(weight_map, f"{name}/shortcut_projection", source + shortcut)
        _norm(weight_map, f"{name}/norm2", source + "norm2")
        _dense(weight_map, f"{name}/mlp/fc1", source + "mlp.fc1")
        _dense(weight_map, f"{name}/mlp/fc2", source + "mlp.fc2")
    _norm(weight_map, "norm", "norm")
    if include_top:
        _dense(weight_map, "head", "head.fc")
    else:
        weight_map.ignore(lambda key: key.startswith("head."))


def _fit_rel_pos(table, length, allow_resize, weight_map):
    if table.shape[0] != length and not allow_resize:
        weight_map.report(
            f"the relative position tables were trained for another image size ({table.shape[0]} rows where the "
            f"model has {length}): build the model at the checkpoint's input_shape (224 for timm's mvitv2_*), or "
            "pass allow_resize=True to interpolate them (linear; fine-tune afterwards)"
        )
        return None
    return resize_rel_pos(table, length)


def _map_position_embedding(weight_map, embedding, allow_resize):
    """The absolute position embedding, from timm's one `pos_embed` `(1, prefix + h * w, c)` or
    pytorchvideo's `pos_embed_spatial` / `pos_embed_temporal` (one frame) / `pos_embed_class`,
    into whichever layout the model has (the two are the same function of the tokens)."""
    take, prefix = weight_map.take, int(embedding.use_class_token)
    if weight_map.has("pos_embed"):
        joint = take("pos_embed")
        spatial, class_part, temporal = joint[:, prefix:], joint[:, :prefix], np.zeros_like(joint[:, :1])
    else:
        spatial, temporal = take("pos_embed_spatial"), take("pos_embed_temporal")
        class_part = take("pos_embed_class") if prefix else np.zeros_like(spatial[:, :0])
        if temporal is not None and temporal.shape[1] != 1:
            weight_map.report(
                f"pos_embed_temporal has {temporal.shape[1]} frames: a video checkpoint; keras-vit's MViT takes images (1 frame)"
            )
            temporal = None
    if spatial is None or temporal is None or class_part is None:
        return
    spatial = _fit_grid(spatial, embedding, allow_resize, weight_map)
    if spatial is None:
        return
    if embedding.separate_position_embedding:
        weight_map.set("patch_embedding/position_embedding", spatial)
        weight_map.set("patch_embedding/temporal_position_embedding", temporal)
        if prefix:
            weight_map.set("patch_embedding/class_position_embedding", class_part)
    else:
        weight_map.set("patch_embedding/position_embedding", np.concatenate([class_part, spatial + temporal], axis=1))


def _fit_grid(spatial, embedding, allow_resize, weight_map):
    """The patch part `(1, h * w, c)` of a position embedding, for the model's grid."""
    patches = embedding.grid_size[0] * embedding.grid_size[1]
    if spatial.shape[1] == patches:
        return spatial
    if not allow_resize:
        weight_map.report(
            f"the position embedding has {spatial.shape[1]} patch positions but the model has {patches} "
            f"({embedding.grid_size[0]}x{embedding.grid_size[1]}): build the model at the checkpoint's input_shape, "
            "or pass allow_resize=True to interpolate it (bicubic; fine-tune afterwards)"
        )
        return None
    return resize_position_embedding(spatial, embedding.grid_size, num_prefix_tokens=0)


register_converter(
    TimmConverter(
        family="mvit",
        model_names={**{name: name for name in MVIT_VARIANTS}, **TIMM_NAMES},
        create=create_model,
        recognizes=recognizes,
        map_weights=lambda weight_map, tensors, include_top, allow_resize: map_mvit(
            weight_map, include_top, allow_resize=allow_resize
        ),
    )
)
