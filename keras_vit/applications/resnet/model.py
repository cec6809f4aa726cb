"""ResNets with attention: Non-local ResNet-50 (Wang et al., CVPR 2018) and a general
builder that inserts `NonLocalBlock` or `SelfAttention2D` after chosen residual blocks.

`ResNet` is the one generic builder of the ResNet family; LR-Net
(`lrnet.py`) is the same builder with local relation layers in place of the
3x3 convs. Blocks are ResNet v1.5 bottlenecks (stride on the 3x3 conv, convs
without bias), so a plain `resnet50` has torchvision's 25,557,032 parameters.
"""

import keras

from keras_vit.applications import common
from keras_vit.applications.registry import ModelSpec, register_model
from keras_vit.applications.resnet.bottleneck import Bottleneck
from keras_vit.applications.resnet.local_relation import LocalRelation
from keras_vit.layers.non_local import NonLocalBlock
from keras_vit.layers.self_attention_2d import SelfAttention2D

# Non-local placements in res3 (stage 1, 4 blocks) and res4 (stage 2, 6 blocks) of ResNet-50.
NL_5_BLOCKS = {1: (1, 3), 2: (1, 3, 5)}  # every second block: 2 + 3
NL_10_BLOCKS = {1: (0, 1, 2, 3), 2: (0, 1, 2, 3, 4, 5)}  # every block: 4 + 6

RESNET_VARIANTS = {
    # Three stages (stride 16) for the offline 64-128 px shapes datasets and DETR's tests.
    "resnet_pico": dict(depths=(1, 1, 1), widths=(16, 32, 64), filters=(64, 128, 256)),
    "resnet50": dict(depths=(3, 4, 6, 3)),
    "resnet101": dict(depths=(3, 4, 23, 3)),
    "nl_resnet50": dict(depths=(3, 4, 6, 3), attention="non_local", attention_blocks=NL_5_BLOCKS),
    "nl_resnet50_10": dict(depths=(3, 4, 6, 3), attention="non_local", attention_blocks=NL_10_BLOCKS),
    "nl_resnet101": dict(depths=(3, 4, 23, 3), attention="non_local", attention_blocks=NL_5_BLOCKS),
    "sa_resnet50": dict(depths=(3, 4, 6, 3), attention="self_attention", attention_blocks=NL_5_BLOCKS),
}

_ATTENTION_DEFAULTS = {"non_local": dict(sub_sample=True), "self_attention": dict()}


_ATTENTION_LAYERS = {"non_local": NonLocalBlock, "self_attention": SelfAttention2D}


def _check_attention_blocks(attention, attention_blocks, depths):
    if attention is None:
        if attention_blocks:
            raise ValueError("attention_blocks needs attention='non_local' or 'self_attention'.")
        return {}
    if attention not in _ATTENTION_DEFAULTS:
        raise ValueError(f"attention must be None, 'non_local' or 'self_attention', got {attention!r}.")
    if not attention_blocks:
        raise ValueError(
            f"attention={attention!r} needs attention_blocks, e.g. {NL_5_BLOCKS} (stage -> block indices)."
        )
    for stage, blocks in attention_blocks.items():
        if not 0 <= stage < len(depths) or any(not 0 <= block < depths[stage] for block in blocks):
            raise ValueError(
                f"attention_blocks {attention_blocks} names a block that does not exist: "
                f"stages 0..{len(depths) - 1} have {list(depths)} blocks."
            )
    return {stage: set(blocks) for stage, blocks in attention_blocks.items()}


def ResNet(
    depths=(3, 4, 6, 3),
    widths=(64, 128, 256, 512),
    filters=(256, 512, 1024, 2048),
    stem="conv",
    spatial="conv",
    kernel_size=3,
    channels_per_group=8,
    attention=None,
    attention_blocks=None,
    attention_options=None,
    *,
    include_top=True,
    weights=None,
    input_shape=None,
    classes=1000,
    classifier_activation="softmax",
    pooling="avg",
    include_preprocessing=True,
    dropout_rate=0.0,
    zero_init_residual=False,
    features_only=False,
    out_indices=None,
    default_size=224,
    name="resnet",
):
    """Builds a bottleneck ResNet, optionally with attention blocks or local relation layers.

    Args:
        depths: bottlenecks per stage (ResNet-50: 3, 4, 6, 3).
        widths, filters: bottleneck and output channels per stage.
        stem: "conv" (7x7/2 conv) or "local_relation" (1x1 conv, then a
            `kernel_size` local relation layer with stride 2, as LR-Net).
            Either is followed by BatchNorm, ReLU and a 3x3/2 max pool.
        spatial: "conv" (3x3) or "local_relation" in every bottleneck.
        kernel_size: of the local relation layers (the convs' is 3).
        channels_per_group: m of the local relation layers: one int, or one per
            stage (each must divide that stage's width).
        attention: None, "non_local" (`NonLocalBlock`) or "self_attention"
            (`SelfAttention2D`), inserted after the blocks in `attention_blocks`.
        attention_blocks: `{stage: block indices}`, stages counted from 0 (res2).
        attention_options: keyword arguments of the attention layer
            (NonLocalBlock default here: `sub_sample=True`, as Wang et al.).
        include_top, weights, input_shape, classes, classifier_activation,
            include_preprocessing: as in `keras.applications` (raw [0, 255]
            inputs normalized with ImageNet statistics when `include_preprocessing`).
        pooling: "avg", "max", or None (with `include_top=False`) for the feature map.
        dropout_rate: dropout before the classifier.
        zero_init_residual: start each block's last BatchNorm gamma at 0.
        features_only, out_indices: return the stage outputs instead (timm's
            `features_only`; no head, no pooling): a list of `(batch, h/4, w/4,
            filters[0])`, ..., one per stage in `out_indices` (default all).

    Output: `(batch, classes)`, `(batch, filters[-1])`, or `(batch, h/32, w/32, filters[-1])`.
    """
    if features_only:
        include_top, pooling = False, None
    if not len(depths) == len(widths) == len(filters):
        raise ValueError(f"depths {depths}, widths {widths} and filters {filters} need one entry per stage.")
    if stem not in ("conv", "local_relation"):
        raise ValueError(f"stem must be 'conv' or 'local_relation', got {stem!r}.")
    pooling = common.check_head_arguments(name, include_top, pooling, classes, supported=("avg", "max"))
    placements = _check_attention_blocks(attention, attention_blocks, depths)
    groups = tuple(channels_per_group) if isinstance(channels_per_group, (tuple, list)) else (channels_per_group,) * len(depths)
    if len(groups) != len(depths):
        raise ValueError(f"channels_per_group {channels_per_group} needs one entry per stage ({len(depths)}).")
    options = {**_ATTENTION_DEFAULTS.get(attention, {}), **(attention_options or {})}
    input_shape = common.image_input_shape(name, input_shape, default_size, any_size=True)

    inputs = keras.Input(shape=input_shape, name="images")
    x = common.preprocess(inputs, include_preprocessing, common.IMAGENET_MEAN, common.IMAGENET_STD)
    x = _stem(x, stem, kernel_size, groups[-1])  # the paper's m (res2's may be smaller to divide its width)
    stage_outputs = []
    for stage, (depth, width, out, m) in enumerate(zip(depths, widths, filters, groups)):
        for block in range(depth):
            x = Bottleneck(
                out,
                width,
                strides=2 if stage > 0 and block == 0 else 1,
                spatial=spatial,
                kernel_size=kernel_size if spatial == "local_relation" else 3,
                channels_per_group=m,
                zero_init_residual=zero_init_residual,
                name=f"stage{stage}_block{block}",
            )(x)
            if block in placements.get(stage, ()):
                x = _ATTENTION_LAYERS[attention](name=f"stage{stage}_block{block}_{attention}", **options)(x)
        stage_outputs.append(x)
    x = common.pool(x, pooling)
    x = common.classification_head(x, include_top, classes, classifier_activation, dropout_rate=dropout_rate)
    model = common.load_weights(keras.Model(inputs, x, name=name), weights, family="resnet")
    return common.feature_extractor(model, stage_outputs, out_indices) if features_only else model


def _stem(x, stem, kernel_size, channels_per_group):
    if stem == "conv":
        x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
        x = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, kernel_initializer="he_normal", name="stem_conv")(x)
    else:
        x = keras.layers.Conv2D(64, 1, use_bias=False, kernel_initializer="he_normal", name="stem_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="stem_conv_bn")(x)
        x = keras.layers.ReLU(name="stem_conv_relu")(x)
        x = LocalRelation(
            64, kernel_size=kernel_size, strides=2, channels_per_group=channels_per_group, name="stem_local_relation"
        )(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)


def register_resnet(name, constructor_name, description, params, config):
    """Registers a variant of the `ResNet` builder (ResNets, attention ResNets, LR-Nets)."""
    return register_model(
        ModelSpec(
            name=name,
            constructor_name=constructor_name,
            family="resnet",
            builder=ResNet,
            config=config,
            description=description,
            params=params,
        )
    )


ResNetPico = register_resnet("resnet_pico", "ResNetPico", "a 3-stage ResNet (one bottleneck a stage, stride 16) for small images", None, RESNET_VARIANTS["resnet_pico"])
ResNet50 = register_resnet("resnet50", "ResNet50", "ResNet-50 (v1.5)", 25_557_032, RESNET_VARIANTS["resnet50"])
ResNet101 = register_resnet("resnet101", "ResNet101", "ResNet-101 (v1.5)", 44_549_160, RESNET_VARIANTS["resnet101"])
NonLocalResNet50 = register_resnet("nl_resnet50", "NonLocalResNet50", "ResNet-50 with 5 non-local blocks (res3: 2, res4: 3)", 32_915_496, RESNET_VARIANTS["nl_resnet50"])
NonLocalResNet50Blocks10 = register_resnet("nl_resnet50_10", "NonLocalResNet50Blocks10", "ResNet-50 with 10 non-local blocks (every block of res3 and res4)", 40_273_960, RESNET_VARIANTS["nl_resnet50_10"])
NonLocalResNet101 = register_resnet("nl_resnet101", "NonLocalResNet101", "ResNet-101 with 5 non-local blocks (res3: 2, res4: 3)", 51_907_624, RESNET_VARIANTS["nl_resnet101"])
SelfAttentionResNet50 = register_resnet("sa_resnet50", "SelfAttentionResNet50", "ResNet-50 with 5 SAGAN self-attention blocks (res3: 2, res4: 3)", 30_144_557, RESNET_VARIANTS["sa_resnet50"])
