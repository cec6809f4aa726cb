"""Vision Transformer (Dosovitskiy et al., ICLR 2021): ViT-Ti/S/B/L/H.

One generic builder, `VisionTransformer`, reads the variant table below; the
named constructors (`ViTBase16`, ...) and the registry names (`vit_b16`, ...)
are registry entries over it. The ResNet hybrids reuse the same builder with a
convolutional stem (`hybrid.py`).
"""

import keras
import numpy as np

from keras_vit.applications import common
from keras_vit.applications.registry import ModelSpec, register_model
from keras_vit.layers import PatchEmbedding, TransformerBlock
from keras_vit.layers.transformer_block import transformer_layout_map

# Variant table: patch size, width, depth, heads, MLP width (REFERENCE.md).
VIT_VARIANTS = {
    # A small ViT for 64 px images and CPU demos (the `keras-vit train` default).
    "vit_pico8": dict(patch_size=8, hidden_dim=64, depth=4, num_heads=4, mlp_dim=128, pooling="avg"),
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

# Weights decoupled weight decay skips besides biases and norms (timm's `no_weight_decay()`).
VIT_NO_WEIGHT_DECAY = ("class_token", "position_embedding")


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
            Keras `.weights.h5` file, which must match the architecture exactly
            (ValueError listing any difference). Position embeddings of a transformers
            or timm checkpoint trained on another grid are interpolated to this model's.
        input_shape: `(height, width, channels)`; default `(default_size, default_size, 3)`.
        classes: number of classes of the head.
        classifier_activation: activation of the head ("softmax", None for logits).
        pooling: "token" (class token), "avg" or "max" (over the patch tokens;
            the model then has no class token; "gap" = "avg"), or None with
            `include_top=False` for the normalized token sequence `(batch, tokens, hidden_dim)`.
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
    pooling = common.check_head_arguments(name, include_top, pooling, classes, supported=("token", "avg", "max"))
    input_shape = common.image_input_shape(name, input_shape, default_size, 1 if stem else patch_size)
    use_class_token = pooling in ("token", None)

    inputs = keras.Input(shape=input_shape, name="images")
    x = common.preprocess(inputs, include_preprocessing, common.INCEPTION_MEAN, common.INCEPTION_STD)
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
        x = common.pool(x, pooling, num_prefix_tokens=int(use_class_token))
        if representation_size:
            x = keras.layers.Dense(representation_size, activation="tanh", name="pre_logits")(x)
    x = common.classification_head(x, include_top, classes, classifier_activation, kernel_initializer="zeros")
    return common.load_weights(keras.Model(inputs, x, name=name), weights, family="vit")


def _register(name, constructor_name, description, params, builder=VisionTransformer, config=None, **spec):
    return register_model(
        ModelSpec(
            name=name,
            constructor_name=constructor_name,
            family="vit",
            builder=builder,
            config=config if config is not None else VIT_VARIANTS[name],
            description=description,
            params=params,
            no_weight_decay=VIT_NO_WEIGHT_DECAY,
            layout_map=transformer_layout_map,
            **spec,
        )
    )


ViTPico8 = _register("vit_pico8", "ViTPico8", "a 4-layer, 64-wide ViT/8 with average pooling for 64 px images", 215_464, default_size=64)
ViTTiny16 = _register("vit_ti16", "ViTTiny16", "ViT-Ti/16", 5_717_416)
ViTSmall16 = _register("vit_s16", "ViTSmall16", "ViT-S/16", 22_050_664)
ViTSmall32 = _register("vit_s32", "ViTSmall32", "ViT-S/32", 22_878_952)
ViTBase16 = _register("vit_b16", "ViTBase16", "ViT-B/16", 86_567_656)
ViTBase32 = _register("vit_b32", "ViTBase32", "ViT-B/32", 88_224_232)
ViTBase8 = _register("vit_b8", "ViTBase8", "ViT-B/8", 86_576_872)
ViTLarge16 = _register("vit_l16", "ViTLarge16", "ViT-L/16", 304_326_632)
ViTLarge32 = _register("vit_l32", "ViTLarge32", "ViT-L/32", 306_535_400)
ViTHuge14 = _register("vit_h14", "ViTHuge14", "ViT-H/14", 632_045_800)
