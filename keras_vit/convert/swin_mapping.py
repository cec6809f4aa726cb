"""Maps `transformers` Swin checkpoints onto keras-vit's Swin layout.

Names are those `save_pretrained` writes and the Hub's Swin checkpoints use
(`attention.self.query`, `intermediate.dense`, ...).
"""

from keras_vit.convert.weight_map import conv_kernel, dense_kernel


def map_transformers_swin(weight_map, include_top):
    """Fills `weight_map` for a keras-vit `SwinTransformer` from transformers' Swin names."""
    model, take = weight_map.model, weight_map.take
    weight_map.set("patch_embedding/kernel", take("swin.embeddings.patch_embeddings.projection.weight", conv_kernel))
    weight_map.set("patch_embedding/bias", take("swin.embeddings.patch_embeddings.projection.bias"))
    _norm(weight_map, "patch_norm", "swin.embeddings.norm")
    for layer in model.layers:
        name = layer.name
        if name.startswith("stage") and "_block" in name:
            stage, block = (int(part) for part in name[len("stage"):].split("_block"))
            source = f"swin.encoder.layers.{stage}.blocks.{block}."
            _norm(weight_map, f"{name}/norm1", source + "layernorm_before")
            _norm(weight_map, f"{name}/norm2", source + "layernorm_after")
            attention = f"{name}/window_attention/attention"
            qkv = [source + f"attention.self.{part}" for part in ("query", "key", "value")]
            weight_map.set(f"{attention}/qkv/kernel", weight_map.take_concatenated([k + ".weight" for k in qkv], dense_kernel, axis=1))
            if layer.qkv_bias:
                weight_map.set(f"{attention}/qkv/bias", weight_map.take_concatenated([k + ".bias" for k in qkv]))
            _dense(weight_map, f"{attention}/projection", source + "attention.output.dense")
            bias_layer = layer.attention.relative_position_bias
            weight_map.set(
                f"{name}/window_attention/relative_position_bias/relative_position_bias_table",
                take(source + "attention.self.relative_position_bias_table", _fit_table(bias_layer)),
            )
            _dense(weight_map, f"{name}/mlp/fc1", source + "intermediate.dense")
            _dense(weight_map, f"{name}/mlp/fc2", source + "output.dense")
        elif name.endswith("_merging"):
            stage = int(name[len("stage"):].split("_")[0])
            source = f"swin.encoder.layers.{stage}.downsample."
            weight_map.set(f"{name}/reduction/kernel", take(source + "reduction.weight", dense_kernel))
            _norm(weight_map, f"{name}/norm", source + "norm")
    _norm(weight_map, "norm", "swin.layernorm")
    if include_top:
        _dense(weight_map, "head", "classifier")
    else:
        weight_map.ignore(lambda key: key.startswith("classifier."))


def _fit_table(bias_layer):
    from keras_vit.layers.position_bias import resize_bias_table

    return lambda table: resize_bias_table(table, bias_layer.window_size)


def _dense(weight_map, path, source):
    weight_map.set(f"{path}/kernel", weight_map.take(source + ".weight", dense_kernel))
    weight_map.set(f"{path}/bias", weight_map.take(source + ".bias"))


def _norm(weight_map, path, source):
    weight_map.set(f"{path}/gamma", weight_map.take(source + ".weight"))
    weight_map.set(f"{path}/beta", weight_map.take(source + ".bias"))


def map_timm_swin(weight_map, include_top):
    """Fills `weight_map` from a timm Swin state dict.

    Accepts timm >= 0.9 (patch merging stored as `layers.{i+1}.downsample`, head
    `head.fc`) and the original layout (`layers.{i}.downsample`, `head`); the
    derived buffers `relative_position_index` and `attn_mask` are ignored.
    """
    model, take, source = weight_map.model, weight_map.take, weight_map.source
    weight_map.ignore(lambda key: key.endswith(("relative_position_index", "attn_mask")))
    merging_in_next_stage = not any(key.startswith("layers.0.downsample.") for key in source)
    head = "head.fc" if "head.fc.weight" in source else "head"
    weight_map.set("patch_embedding/kernel", take("patch_embed.proj.weight", conv_kernel))
    weight_map.set("patch_embedding/bias", take("patch_embed.proj.bias"))
    _norm(weight_map, "patch_norm", "patch_embed.norm")
    for layer in model.layers:
        name = layer.name
        if name.startswith("stage") and "_block" in name:
            stage, block = (int(part) for part in name[len("stage"):].split("_block"))
            prefix = f"layers.{stage}.blocks.{block}."
            _norm(weight_map, f"{name}/norm1", prefix + "norm1")
            _norm(weight_map, f"{name}/norm2", prefix + "norm2")
            _dense(weight_map, f"{name}/window_attention/attention/qkv", prefix + "attn.qkv")
            _dense(weight_map, f"{name}/window_attention/attention/projection", prefix + "attn.proj")
            weight_map.set(
                f"{name}/window_attention/relative_position_bias/relative_position_bias_table",
                take(prefix + "attn.relative_position_bias_table", _fit_table(layer.attention.relative_position_bias)),
            )
            _dense(weight_map, f"{name}/mlp/fc1", prefix + "mlp.fc1")
            _dense(weight_map, f"{name}/mlp/fc2", prefix + "mlp.fc2")
        elif name.endswith("_merging"):
            stage = int(name[len("stage"):].split("_")[0]) + int(merging_in_next_stage)
            prefix = f"layers.{stage}.downsample."
            weight_map.set(f"{name}/reduction/kernel", take(prefix + "reduction.weight", dense_kernel))
            _norm(weight_map, f"{name}/norm", prefix + "norm")
    _norm(weight_map, "norm", "norm")
    if include_top:
        _dense(weight_map, "head", head)
    else:
        weight_map.ignore(lambda key: key.startswith("head."))
