"""Swin Transformer (Liu et al., ICCV 2021) and Swin-V2 (Liu et al., CVPR 2022).

A hierarchical transformer: 4x4 patches, stages of (shifted) window
attention blocks with patch merging between them. One generic builder,
`SwinTransformer`, reads the variant table below; `version=2` switches to
V2's scaled cosine attention, continuous position bias, residual
post-norm and reduce-then-normalize patch merging (the V2 variants are in
`swin_v2.py`).
"""

import keras
import numpy as np

from keras_vit.applications.vit import make_constructor
from keras_vit.layers import ImageNormalization, PatchMerging, SwinTransformerBlock

# REFERENCE.md. drop_path_rate is the recipe's default for each size.
SWIN_VARIANTS = {
    "swin_t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2),
    "swin_s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.3),
    "swin_b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7, drop_path_rate=0.5),
    "swin_b_384": dict(
        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12, default_size=384, drop_path_rate=0.5
    ),
    "swin_l": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=7, drop_path_rate=0.5),
}
# ImageNet statistics in [0, 255], as the reference Swin models were trained.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def SwinTransformer(
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    window_size=7,
    patch_size=4,
    mlp_ratio=4.0,
    version=1,
    pretrained_window_sizes=None,
    *,
    include_top=True,
    weights=None,
    input_shape=None,
    classes=1000,
    classifier_activation="softmax",
    pooling="avg",
    include_preprocessing=True,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    drop_path_rate=0.1,
    qkv_bias=True,
    layer_norm_epsilon=1e-5,
    mask_padding=False,
    default_size=224,
    name="swin_transformer",
):
    """Builds a Swin Transformer as a functional `keras.Model`.

    Args:
        embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio: the architecture.
        version: 1 (Swin) or 2 (Swin-V2).
        pretrained_window_sizes: Swin-V2 only: per stage, the window the weights
            were pre-trained with when fine-tuning at a larger one (default: the same).
        include_top, weights, input_shape, classes, classifier_activation,
            include_preprocessing: as in `keras.applications` (inputs in [0, 255]
            normalized with ImageNet statistics when `include_preprocessing`).
        pooling: "avg" (global average of the last stage) or, with
            `include_top=False`, None for the `(batch, h/32, w/32, 8 * embed_dim)` map.
        dropout_rate, attention_dropout_rate, drop_path_rate: regularization;
            stochastic depth grows linearly over all blocks.
        mask_padding: mask the tokens padded to fill windows at the border
            (the reference implementations attend to them; default False).

    Any input size divisible by `patch_size` works: feature maps that are not
    a multiple of the window are padded, and odd maps are padded before merging.
    """
    if pooling not in ("avg", None):
        raise ValueError(f"pooling must be 'avg' or None, got {pooling!r}.")
    if include_top and pooling is None:
        raise ValueError("include_top=True needs pooling='avg'; use include_top=False for the feature map.")
    if len(depths) != len(num_heads):
        raise ValueError(f"depths {depths} and num_heads {num_heads} need one entry per stage.")
    if version not in (1, 2):
        raise ValueError(f"version must be 1 (Swin) or 2 (Swin-V2), got {version!r}.")
    if pretrained_window_sizes is not None and (version != 2 or len(pretrained_window_sizes) != len(depths)):
        raise ValueError(
            f"pretrained_window_sizes={pretrained_window_sizes} needs version=2 and one entry per stage ({len(depths)})."
        )
    pretrained_window_sizes = tuple(pretrained_window_sizes or (0,) * len(depths))
    v2 = version == 2
    input_shape = _check_input_shape(tuple(input_shape or (default_size, default_size, 3)), patch_size)
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if include_preprocessing:
        x = ImageNormalization(IMAGENET_MEAN, IMAGENET_STD, name="preprocessing")(x)
    x = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size, name="patch_embedding")(x)
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="patch_norm")(x)
    x = keras.layers.Dropout(dropout_rate, name="embedding_dropout")(x)
    rates = iter(np.linspace(0.0, drop_path_rate, sum(depths)))
    for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
        for block in range(depth):
            x = SwinTransformerBlock(
                heads,
                window_size=window_size,
                shift_size=0 if block % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                dropout_rate=dropout_rate,
                attention_dropout_rate=attention_dropout_rate,
                drop_path_rate=float(next(rates)),
                layer_norm_epsilon=layer_norm_epsilon,
                mask_padding=mask_padding,
                cosine_attention=v2,
                position_bias="continuous" if v2 else "table",
                pretrained_window_size=pretrained_window_sizes[stage],
                post_norm=v2,
                name=f"stage{stage}_block{block}",
            )(x)
        if stage < len(depths) - 1:
            x = PatchMerging(norm_after=v2, layer_norm_epsilon=layer_norm_epsilon, name=f"stage{stage}_merging")(x)
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    if include_top:
        x = keras.layers.Dense(classes, activation=classifier_activation, name="head")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        from keras_vit.convert import load_weights

        load_weights(model, weights)
    return model


def _check_input_shape(input_shape, patch_size):
    if len(input_shape) != 3:
        raise ValueError(f"input_shape {input_shape} must be (height, width, channels); images are channels_last.")
    height, width, _ = input_shape
    if not all(isinstance(side, int) for side in (height, width)):
        raise ValueError(
            f"input_shape {input_shape}: Swin needs a fixed height and width, because its window "
            "masks are built for one size. Build the model with the size you will feed, e.g. "
            "input_shape=(224, 224, 3); models of other sizes share weights via get_weights/set_weights."
        )
    if height < patch_size or width < patch_size or height % patch_size or width % patch_size:
        raise ValueError(
            f"input_shape {input_shape}: height and width must be positive multiples of the patch size "
            f"{patch_size}, e.g. {max(patch_size, round(height / patch_size) * patch_size)}."
        )
    return input_shape


SwinTiny = make_constructor(SwinTransformer, "swin_t", "SwinTiny", "Swin-T", "28,288,354 params", SWIN_VARIANTS["swin_t"])
SwinSmall = make_constructor(SwinTransformer, "swin_s", "SwinSmall", "Swin-S", "49,606,258 params", SWIN_VARIANTS["swin_s"])
SwinBase = make_constructor(SwinTransformer, "swin_b", "SwinBase", "Swin-B", "87,768,224 params", SWIN_VARIANTS["swin_b"])
SwinBase384 = make_constructor(SwinTransformer, "swin_b_384", "SwinBase384", "Swin-B at 384 px, window 12", "87,903,584 params", SWIN_VARIANTS["swin_b_384"])
SwinLarge = make_constructor(SwinTransformer, "swin_l", "SwinLarge", "Swin-L", "196,532,476 params", SWIN_VARIANTS["swin_l"])
