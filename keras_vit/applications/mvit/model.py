"""Multiscale Vision Transformers: MViT (Fan et al., ICCV 2021) and MViTv2 (Li et al., CVPR 2022).

A 7x7 stride-4 convolution makes a 56x56 token map (at 224 px); four stages of
`MultiScaleBlock`s follow, each halving the map with a query stride in its first block
while width and heads double. Keys and values are pooled harder (stride 4, 2, 1, 1),
so attention stays cheap at high resolution. MViTv2 adds decomposed relative positions
and residual pooling and drops the class token and the absolute position embedding.
One generic builder, `MViTv2`, reads the variant table below; `mvit_b16` is MViTv1's
image model (class token, absolute positions, width growing in the MLP, query pooling
only where the map shrinks).
"""

import math

import keras
import numpy as np

from keras_vit.applications import common
from keras_vit.applications.mvit.attention import check_pool_mode, pair, pooled_size
from keras_vit.applications.mvit.block import MultiScaleBlock, MViTPatchEmbedding
from keras_vit.applications.registry import ModelSpec, register_model
from keras_vit.layers.transformer_block import transformer_layout_map

# REFERENCE.md; drop_path_rate is the official recipe's for each size.
MVIT_VARIANTS = {
    "mvitv2_t": dict(depths=(1, 2, 5, 2), drop_path_rate=0.1),
    "mvitv2_s": dict(depths=(1, 2, 11, 2), drop_path_rate=0.1),
    "mvitv2_b": dict(depths=(2, 3, 16, 3), drop_path_rate=0.3),
    "mvitv2_l": dict(depths=(2, 6, 36, 4), embed_dim=144, num_heads=2, expand_attn=False, drop_path_rate=0.5),
    # MViTv1 B-16 for images: width and heads double at blocks 1, 3 and 14, i.e. stages of 1, 2, 11, 2.
    "mvit_b16": dict(
        depths=(1, 2, 11, 2),
        expand_attn=False,
        use_class_token=True,
        use_abs_pos=True,
        sep_pos_embed=True,
        use_rel_pos=False,
        residual_pooling=False,
        pool_q_every_block=False,
        pooling="token",
    ),
}

# Weights decoupled weight decay skips besides biases and norms (timm's `no_weight_decay()`).
MVIT_NO_WEIGHT_DECAY = ("rel_pos_h", "rel_pos_w", "class_token", "position_embedding")


def stage_strides(stride_q, stride_kv_adaptive, num_stages):
    """Per stage: the query stride of its first block and the key/value stride of all its blocks
    (the adaptive rule: the k/v stride shrinks by every query stride, never below 1)."""
    stride_q = tuple(pair(stride, "stride_q") for stride in stride_q)
    if len(stride_q) != num_stages:
        raise ValueError(f"stride_q {stride_q} needs one (height, width) stride per stage ({num_stages}).")
    kv, stride_kv = pair(stride_kv_adaptive, "stride_kv_adaptive"), []
    for stride in stride_q:
        if min(stride) > 1:
            kv = tuple(max(k // s, 1) for k, s in zip(kv, stride))
        stride_kv.append(kv)
    return stride_q, tuple(stride_kv)


def _per_stage(value, num_stages, what):
    if isinstance(value, (tuple, list)):
        if len(value) != num_stages:
            raise ValueError(f"{what} {tuple(value)} needs one entry per stage ({num_stages}), or one int to double per stage.")
        return tuple(int(v) for v in value)
    return tuple(int(value) * 2**i for i in range(num_stages))


def MViTv2(
    depths=(1, 2, 5, 2),
    embed_dim=96,
    num_heads=1,
    mlp_ratio=4.0,
    expand_attn=True,
    use_class_token=False,
    use_abs_pos=False,
    sep_pos_embed=False,
    use_rel_pos=True,
    residual_pooling=True,
    pool_mode="conv",
    kernel_qkv=(3, 3),
    stride_q=((1, 1), (2, 2), (2, 2), (2, 2)),
    stride_kv_adaptive=(4, 4),
    pool_q_every_block=True,
    patch_kernel=7,
    patch_stride=4,
    patch_padding=3,
    qkv_bias=True,
    *,
    include_top=True,
    weights=None,
    input_shape=None,
    classes=1000,
    classifier_activation="softmax",
    pooling="avg",
    include_preprocessing=True,
    dropout_rate=0.0,
    drop_path_rate=0.1,
    layer_norm_epsilon=1e-6,
    features_only=False,
    out_indices=None,
    default_size=224,
    name="mvitv2",
):
    """Builds an MViTv2 (or MViTv1) classifier as a functional `keras.Model`.

    Args:
        depths: blocks per stage.
        embed_dim, num_heads: the first stage's width and heads (doubled at every stage),
            or one value per stage.
        mlp_ratio: MLP width over the attention width.
        expand_attn: widths grow inside the attention of a stage's first block (MViTv2 T/S/B)
            rather than in the MLP of the previous stage's last block (MViTv1, MViTv2-L).
        use_class_token, use_abs_pos: MViTv1's class token and absolute position embedding.
        sep_pos_embed: the absolute position embedding in pytorchvideo's layout (spatial,
            temporal and class parts; one more `width` vector than timm's single table, the
            published MViTv1-B-16 count) rather than timm's one `pos_embed`.
        use_rel_pos, residual_pooling: MViTv2's decomposed relative positions and `attn @ v + q`.
        pool_mode: how q, k, v are pooled: "conv" (depthwise conv + LayerNorm), "max" or "avg".
        kernel_qkv: pooling kernel of q, k and v.
        stride_q: per stage, the query stride of its first block.
        stride_kv_adaptive: key/value stride of the first stage, divided by each query stride.
        pool_q_every_block: pool q in every block (MViTv2; a stride-1 conv) or only where q is
            strided (MViTv1).
        patch_kernel, patch_stride, patch_padding: the convolutional stem.
        include_top, weights, input_shape, classes, classifier_activation,
            include_preprocessing: as in `keras.applications` (inputs in [0, 255]
            normalized with ImageNet statistics when `include_preprocessing`).
        pooling: "avg" or "max" over the final tokens (the class token excluded) or, with a
            class token, "token"; with `include_top=False`, None for the features: the
            `(batch, h/32, w/32, width)` map, or the `(batch, 1 + h/32 * w/32, width)` tokens
            with a class token.
        dropout_rate: dropout before the head.
        drop_path_rate: stochastic depth, growing linearly over all blocks.
        features_only, out_indices: return the stage outputs instead (timm's `features_only`;
            no final norm, no head, the class token dropped): a list of `(batch, h/4, w/4,
            width)`, ..., `(batch, h/32, w/32, 8 * width)`, one per stage in `out_indices`.

    Any square input whose side is a multiple of the total stride (32) works: the relative
    position tables are sized from the input (`load_weights(..., allow_resize=True)` resizes
    those of a checkpoint trained at another size). Without relative positions the height
    and width may differ.
    """
    num_stages = len(depths)
    check_pool_mode(pool_mode, name)
    if features_only:
        include_top, pooling = False, None
    supported = ("avg", "max", "token") if use_class_token else ("avg", "max")
    pooling = common.check_head_arguments(name, include_top, pooling, classes, supported=supported)
    embed_dims = _per_stage(embed_dim, num_stages, "embed_dim")
    heads = _per_stage(num_heads, num_stages, "num_heads")
    stride_q, stride_kv = stage_strides(stride_q, stride_kv_adaptive, num_stages)
    kernel_qkv, patch_stride = pair(kernel_qkv, "kernel_qkv"), pair(patch_stride, "patch_stride")
    total = [patch_stride[axis] * math.prod(stride[axis] for stride in stride_q) for axis in (0, 1)]
    input_shape = common.image_input_shape(
        name, input_shape, default_size, math.lcm(*total), unit="the model's total stride"
    )
    height, width = input_shape[:2]
    if use_rel_pos and height != width:
        side = max(height, width)
        raise ValueError(
            f"{name}: input_shape {input_shape}: relative position tables need a square image, got {height}x{width}. "
            f"Resize or pad the images to a square such as {side}x{side}, or build with use_rel_pos=False."
        )

    inputs = keras.Input(shape=input_shape, name="images")
    x = common.preprocess(inputs, include_preprocessing, common.IMAGENET_MEAN, common.IMAGENET_STD)
    embedding = MViTPatchEmbedding(
        embed_dims[0], patch_kernel, patch_stride, patch_padding, use_class_token=use_class_token,
        use_position_embedding=use_abs_pos, separate_position_embedding=sep_pos_embed, name="patch_embedding",
    )
    x = embedding(x)
    kernel, stride, padding = pair(patch_kernel), patch_stride, pair(patch_padding)
    size = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip((height, width), padding, kernel, stride))
    rates = iter(np.linspace(0.0, drop_path_rate, sum(depths)))
    dim = embed_dims[0]
    stage_outputs = []
    for stage, depth in enumerate(depths):
        stage_out = embed_dims[stage] if expand_attn else embed_dims[min(stage + 1, num_stages - 1)]
        for block in range(depth):
            dim_out = stage_out if expand_attn or block == depth - 1 else dim
            strided = block == 0 and stride_q[stage] != (1, 1)
            block_stride_q = stride_q[stage] if block == 0 else (1, 1)
            x = MultiScaleBlock(
                heads[stage],
                dim_out=dim_out,
                mlp_ratio=mlp_ratio,
                expand_attn=expand_attn,
                qkv_bias=qkv_bias,
                pool_mode=pool_mode,
                kernel_q=kernel_qkv if pool_q_every_block or strided else (1, 1),
                kernel_kv=kernel_qkv,
                stride_q=block_stride_q,
                stride_kv=stride_kv[stage],
                use_rel_pos=use_rel_pos,
                residual_pooling=residual_pooling,
                has_class_token=use_class_token,
                feature_size=size if use_class_token else None,
                drop_path_rate=float(next(rates)),
                layer_norm_epsilon=layer_norm_epsilon,
                name=f"stage{stage}_block{block}",
            )(x)
            if pool_q_every_block or strided:
                size = tuple(pooled_size(n, k, s) for n, k, s in zip(size, kernel_qkv, block_stride_q))
            dim = dim_out
        if features_only:
            stage_outputs.append(_as_map(x, size, dim, use_class_token, f"stage{stage}_map"))
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
    x = common.pool(x, pooling, num_prefix_tokens=int(use_class_token))
    x = common.classification_head(x, include_top, classes, classifier_activation, dropout_rate=dropout_rate or None)
    model = common.load_weights(keras.Model(inputs, x, name=name), weights, family="mvit")
    return common.feature_extractor(model, stage_outputs, out_indices) if features_only else model


def _as_map(x, size, width, has_class_token, name):
    """A stage's output as a `(batch, h, w, width)` map (the class token, if any, dropped)."""
    if not has_class_token:
        return x
    return keras.layers.Reshape((*size, width), name=name)(x[:, 1:])


def _register(name, constructor_name, description, params):
    return register_model(
        ModelSpec(
            name=name,
            constructor_name=constructor_name,
            family="mvit",
            builder=MViTv2,
            config=MVIT_VARIANTS[name],
            description=description,
            params=params,
            no_weight_decay=MVIT_NO_WEIGHT_DECAY,
            layout_map=transformer_layout_map,
        )
    )


MViTv2Tiny = _register("mvitv2_t", "MViTv2Tiny", "MViTv2-T", 24_173_320)
MViTv2Small = _register("mvitv2_s", "MViTv2Small", "MViTv2-S", 34_870_216)
MViTv2Base = _register("mvitv2_b", "MViTv2Base", "MViTv2-B", 51_472_744)
MViTv2Large = _register("mvitv2_l", "MViTv2Large", "MViTv2-L", 217_992_952)
MViTBase16 = _register("mvit_b16", "MViTBase16", "MViTv1-B-16 for images (class token, absolute positions)", 36_982_696)
