"""Vision Transformer (Dosovitskiy et al., ICLR 2021): ViT-Ti/S/B/L/H.

One generic builder, `VisionTransformer`, reads the variant table below; the
named constructors (`ViTBase16`, ...) and the registry names (`vit_b16`, ...)
are thin entries over it. The ResNet hybrids reuse the same builder with a
convolutional stem (see `hybrid.py`).
"""

import keras
import numpy as np

from keras_vit.applications.registry import register_model
from keras_vit.layers import ImageNormalization, PatchEmbedding, TokenPooling, TransformerBlock

# Variant table: patch size, width, depth, heads, MLP width (REFERENCE.md).
VIT_VARIANTS = {
    # A small ViT for 64 px images and CPU demos (the `keras-vit train` default).
    "vit_pico8": dict(patch_size=8, hidden_dim=64, depth=4, num_heads=4, mlp_dim=128, default_size=64, pooling="gap"),
    "vit_ti16": dict(patch_size=16, hidden_dim=192, depth=12, num_heads=3, mlp_dim=768),
    "vit_s16": dict(patch_size=16, hidden_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_s32": dict(patch_size=32, hidden_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_b16": dict(patch_size=16, hidden_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_b32": dict(patch_size=32, hidden_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_b8": dict(patch_size=8, hidden_dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "vit_l16": dict(patch_size=16, hidden_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
    "vit_l32": dict(patch_size=32, hidden_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
    "vit_h14": dict(patch_size=14, hidden_dim=1280, depth=32, num_heads=16, mlp_dim=5120),
}

# Inputs in [0, 255] map to [-1, 1]: mean = std = 0.5, as the reference ViTs were trained.
PIXEL_MEAN = (127.5, 127.5, 127.5)
PIXEL_STD = (127.5, 127.5, 127.5)

POOLING_MODES = ("token", "gap", None)


def VisionTransformer(
    patch_size=16,
    hidden_dim=768,
    depth=12,
    num_heads=12,
    mlp_dim=3072,
    *,
    include_top=True,
    weights=None,
    input_shape=None,
    classes=1000,
    classifier_activation="softmax",
    pooling="token",
    include_preprocessing=True,
    representation_size=None,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    drop_path_rate=0.0,
    qkv_bias=True,
    layer_norm_epsilon=1e-6,
    activation="gelu",
    default_size=224,
    stem=None,
    name="vision_transformer",
):
    """Builds a Vision Transformer as a functional `keras.Model`.

    Args:
        patch_size, hidden_dim, depth, num_heads, mlp_dim: the architecture.
        include_top: end with the classification head (`classes` outputs).
        weights: None (random init) or a local checkpoint: a `transformers`
            `save_pretrained` directory, a timm `.safetensors` state dict or a
            Keras `.weights.h5` file. Position embeddings trained on another
            grid are interpolated to this model's.
        input_shape: `(height, width, channels)`; default `(default_size, default_size, 3)`.
        classes: number of classes of the head.
        classifier_activation: activation of the head ("softmax", None for logits).
        pooling: "token" (class token), "gap" (mean of patch tokens; the model
            then has no class token), or None with `include_top=False` to
            output the whole normalized token sequence `(batch, tokens, hidden_dim)`.
        include_preprocessing: inputs are raw pixels in [0, 255] and the model
            maps them to [-1, 1]; with False, pass already-normalized inputs.
        representation_size: optional pre-logits `Dense + tanh` width.
        dropout_rate: dropout after the position embedding, in the MLPs and
            after the attention projection.
        attention_dropout_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth of the last block; earlier blocks
            get linearly smaller rates, the first 0.
        qkv_bias, layer_norm_epsilon, activation: architecture details.
        stem: optional function mapping the normalized image to a feature map
            (the hybrids' ResNet); the patch embedding then runs on its output.
        name: model name.

    Returns a `keras.Model` mapping `(batch, height, width, channels)` images to
    `(batch, classes)` (or features, see `include_top` and `pooling`).
    """
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
    if include_top and pooling is None:
        raise ValueError(
            "include_top=True needs pooling='token' or 'gap' to feed the head; "
            "use include_top=False to get the token sequence."
        )
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive int, got {classes!r}.")
    input_shape = _standardize_input_shape(input_shape, default_size, patch_size, stem is not None)
    use_class_token = pooling != "gap"

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if include_preprocessing:
        x = ImageNormalization(
            _per_channel(PIXEL_MEAN, input_shape[-1]), _per_channel(PIXEL_STD, input_shape[-1]), name="preprocessing"
        )(x)
    if stem is not None:
        x = stem(x)
        if x.shape[1] % patch_size or x.shape[2] % patch_size:
            raise ValueError(
                f"The stem's {x.shape[1]}x{x.shape[2]} feature map is not divisible by "
                f"patch_size={patch_size}; change the image size."
            )
    x = PatchEmbedding(hidden_dim, patch_size, use_class_token=use_class_token, name="patch_embedding")(x)
    x = keras.layers.Dropout(dropout_rate, name="embedding_dropout")(x)
    for index, rate in enumerate(np.linspace(0.0, drop_path_rate, depth)):
        x = TransformerBlock(
            num_heads,
            mlp_dim,
            qkv_bias=qkv_bias,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=float(rate),
            layer_norm_epsilon=layer_norm_epsilon,
            activation=activation,
            name=f"block_{index}",
        )(x)
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
    if pooling is not None:
        x = TokenPooling(pooling, num_prefix_tokens=int(use_class_token), name="pooling")(x)
        if representation_size:
            x = keras.layers.Dense(representation_size, activation="tanh", name="pre_logits")(x)
    if include_top:
        x = keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer="zeros",
            name="head",
        )(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        from keras_vit.convert import load_weights

        load_weights(model, weights)
    return model


def _standardize_input_shape(input_shape, default_size, patch_size, has_stem):
    if input_shape is None:
        return (default_size, default_size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive ints, got {input_shape}. "
            "Images are channels_last."
        )
    height, width, _ = input_shape
    if not has_stem and (height % patch_size or width % patch_size):
        raise ValueError(
            f"Image size {height}x{width} is not divisible by the patch size {patch_size}. "
            f"Use a multiple of {patch_size}, e.g. {max(patch_size, round(height / patch_size) * patch_size)}."
        )
    return input_shape


def _per_channel(values, channels):
    return list(values) if channels == len(values) else [float(np.mean(values))] * channels


_CONSTRUCTOR_DOC = """Builds {title}{params}.

    Takes the keras.applications arguments of `{builder}` (`include_top`,
    `weights`, `input_shape` (default {size}x{size}x3), `classes`,
    `classifier_activation`, `pooling`, `include_preprocessing`, `name`) and its
    regularization knobs; the architecture is fixed to `{registry_name}`'s.
    """


def make_constructor(builder, registry_name, function_name, title, params, config):
    """A named constructor over `builder` with the variant `config` fixed, registered."""

    def constructor(**kwargs):
        kwargs.setdefault("name", registry_name)
        return builder(**{**config, **kwargs})

    constructor.__name__ = constructor.__qualname__ = function_name
    constructor.__doc__ = _CONSTRUCTOR_DOC.format(
        title=title,
        params=f" ({params} with a 1000-class head)" if params else "",
        builder=builder.__name__,
        size=config.get("default_size", 224),
        registry_name=registry_name,
    )
    register_model(registry_name, constructor)
    return constructor


ViTPico8 = make_constructor(VisionTransformer, "vit_pico8", "ViTPico8", "a 4-layer, 64-wide ViT/8 with average pooling for 64 px images", "0.2M params", VIT_VARIANTS["vit_pico8"])
ViTTiny16 = make_constructor(VisionTransformer, "vit_ti16", "ViTTiny16", "ViT-Ti/16", "5,717,416 params", VIT_VARIANTS["vit_ti16"])
ViTSmall16 = make_constructor(VisionTransformer, "vit_s16", "ViTSmall16", "ViT-S/16", "22,050,664 params", VIT_VARIANTS["vit_s16"])
ViTSmall32 = make_constructor(VisionTransformer, "vit_s32", "ViTSmall32", "ViT-S/32", "22,878,952 params", VIT_VARIANTS["vit_s32"])
ViTBase16 = make_constructor(VisionTransformer, "vit_b16", "ViTBase16", "ViT-B/16", "86,567,656 params", VIT_VARIANTS["vit_b16"])
ViTBase32 = make_constructor(VisionTransformer, "vit_b32", "ViTBase32", "ViT-B/32", "88,224,232 params", VIT_VARIANTS["vit_b32"])
ViTBase8 = make_constructor(VisionTransformer, "vit_b8", "ViTBase8", "ViT-B/8", "86,576,872 params", VIT_VARIANTS["vit_b8"])
ViTLarge16 = make_constructor(VisionTransformer, "vit_l16", "ViTLarge16", "ViT-L/16", "304,326,632 params", VIT_VARIANTS["vit_l16"])
ViTLarge32 = make_constructor(VisionTransformer, "vit_l32", "ViTLarge32", "ViT-L/32", "306,535,400 params", VIT_VARIANTS["vit_l32"])
ViTHuge14 = make_constructor(VisionTransformer, "vit_h14", "ViTHuge14", "ViT-H/14", "632,045,800 params", VIT_VARIANTS["vit_h14"])
