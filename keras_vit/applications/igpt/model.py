"""iGPT (Chen et al., ICML 2020): a GPT-2 style transformer on sequences of palette indices.

An image becomes a raster-order sequence of palette indices (`keras_vit.data.palette`);
the model reads `[start, t_0, ..., t_{T-2}]` and predicts `t_0, ..., t_{T-1}`. Blocks
are pre-norm with an RMS-style norm (scale only), quick-GELU MLPs, and the head is
untied and bias-free. The layout is transformers' `ImageGPT` (with biases); the
original's bias-free layout is `use_bias=False`.
"""

import keras

from keras_vit.applications import common
from keras_vit.layers.token_embedding import TokenAndPositionEmbedding
from keras_vit.applications.registry import ModelSpec, register_model
from keras_vit.layers.causal_attention import IMPLEMENTATIONS, CausalSelfAttention
from keras_vit.layers.transformer_block import TransformerBlock, transformer_layout_map

OBJECTIVES = ("causal", "masked")

IGPT_VARIANTS = {
    "igpt_pico": dict(hidden_dim=64, depth=4, num_heads=4),
    "igpt_s": dict(hidden_dim=512, depth=24, num_heads=8),
    "igpt_m": dict(hidden_dim=1024, depth=36, num_heads=8),
    "igpt_l": dict(hidden_dim=1536, depth=48, num_heads=16),
}

# Embeddings are not decayed (GPT-2 / minGPT convention); biases and norm scales never are.
IGPT_NO_WEIGHT_DECAY = (r"token_embedding", r"position_embedding")


def ImageGPT(
    hidden_dim,
    depth,
    num_heads,
    *,
    palette_size=512,
    image_size=None,
    max_positions=None,
    mlp_ratio=4,
    use_bias=True,
    objective="causal",
    attention_implementation="auto",
    block_size=256,
    flash_attention=None,
    remat=False,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    layer_norm_epsilon=1e-5,
    include_top=True,
    pooling=None,
    classes=None,
    classifier_activation=None,
    weights=None,
    name="igpt",
    default_size=32,
):
    """Builds an iGPT on `image_size x image_size` token sequences.

    Args:
        hidden_dim, depth, num_heads, mlp_ratio: the transformer's shape.
        palette_size: colors of the palette (512); the vocabulary adds one id,
            `palette_size`, for the start of the sequence (or the masked pixel).
        image_size: side of the images; the model reads `image_size**2` tokens
            (default `default_size`).
        max_positions: rows of the position table (default `image_size**2`; a
            checkpoint's own count when it is larger than the sequence).
        use_bias: biases in the attention and MLP projections (transformers' layout);
            False gives the original bias-free layout.
        objective: "causal" (next pixel) or "masked" (BERT-style: bidirectional
            attention, masked pixels given as id `palette_size`).
        attention_implementation: "auto", "dense", "fused" or "blockwise" (see
            `CausalSelfAttention`); `block_size` and `flash_attention` tune them.
        remat: recompute each block's activations in the backward pass
            (`keras.remat`), trading compute for memory on long sequences.
        dropout_rate, attention_dropout_rate: dropout after the embeddings and
            projections, and on the attention weights.
        include_top: True: logits over the palette (`classes=None`) or a bias-free
            classifier on the average-pooled features (`classes=N`, transformers'
            `ImageGPTForImageClassification`). False: the final-norm features.
        pooling: None, or "avg" (also "max") to pool the features over the tokens.
        classifier_activation: activation of the classifier (with `classes`).
        weights: None, or a local checkpoint path.

    Input: int `(batch, image_size**2)` tokens in `[0, palette_size]`. Output: logits
    `(batch, tokens, palette_size)`; `(batch, classes)`; or features `(batch, tokens,
    hidden_dim)` / `(batch, hidden_dim)`.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"{name}: objective must be one of {OBJECTIVES}, got {objective!r}.")
    if attention_implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{name}: attention_implementation must be one of {IMPLEMENTATIONS}, got {attention_implementation!r}.")
    image_size = common.as_int(default_size if image_size is None else image_size)
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"{name}: image_size must be a positive int (the image side in pixels), got {image_size!r}.")
    tokens = image_size**2
    max_positions = common.as_int(tokens if max_positions is None else max_positions)
    if tokens > max_positions:
        side = int(max_positions**0.5)
        raise ValueError(
            f"{name}: image_size {image_size} makes {tokens} tokens, more than the model's {max_positions} positions. "
            f"Use image_size <= {side}, or build with max_positions={tokens} (a checkpoint's position table "
            "does not grow)."
        )
    classes = common.as_int(classes)
    if include_top and classes is not None:
        pooling = common.check_head_arguments(name, include_top, pooling or "avg", classes, supported=("avg", "max"))
    elif pooling is not None:
        pooling = common.check_head_arguments(name, False, pooling, classes, supported=("avg", "max"))

    inputs = keras.Input(shape=(tokens,), dtype="int32", name="tokens")
    x = TokenAndPositionEmbedding(palette_size + 1, max_positions, hidden_dim, name="embedding")(inputs)
    x = keras.layers.Dropout(dropout_rate, name="embedding_dropout")(x)
    for index in range(depth):
        attention = CausalSelfAttention(
            num_heads,
            causal=objective == "causal",
            use_bias=use_bias,
            implementation=attention_implementation,
            block_size=block_size,
            flash_attention=flash_attention,
            attention_dropout_rate=attention_dropout_rate,
            projection_dropout_rate=dropout_rate,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="attention",
        )
        x = TransformerBlock(
            attention=attention,
            mlp_ratio=mlp_ratio,
            dropout_rate=dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            activation="quick_gelu",
            normalization="rms_norm",
            mlp_bias=use_bias,
            remat=remat,
            name=f"block{index}",
        )(x)
    x = keras.layers.RMSNormalization(epsilon=layer_norm_epsilon, name="norm")(x)
    if include_top and classes is None:
        # GPT-2's N(0, 0.02) start: near-uniform first predictions, a loss near ln(palette_size).
        head_initializer = keras.initializers.RandomNormal(stddev=0.02)
        x = keras.layers.Dense(palette_size, use_bias=False, kernel_initializer=head_initializer, name="lm_head")(x)
    else:
        x = common.pool(x, pooling)
        x = common.classification_head(x, include_top, classes, classifier_activation, use_bias=False)
    return common.load_weights(keras.Model(inputs, x, name=name), weights, family="igpt")


def _register(name, constructor_name, description, params, default_size=32):
    return register_model(
        ModelSpec(
            name=name,
            constructor_name=constructor_name,
            family="igpt",
            builder=ImageGPT,
            config=IGPT_VARIANTS[name],
            description=description,
            task="generation",
            default_size=default_size,
            params=params,
            no_weight_decay=IGPT_NO_WEIGHT_DECAY,
            layout_map=transformer_layout_map,
        )
    )


ImageGPTPico = _register("igpt_pico", "ImageGPTPico", "iGPT-pico (4 layers, width 64) for tests and CPU demos", None)
ImageGPTSmall = _register("igpt_s", "ImageGPTSmall", "iGPT-S (24 layers, width 512)", 76_682_240)
ImageGPTMedium = _register("igpt_m", "ImageGPTMedium", "iGPT-M (36 layers, width 1024)", 455_489_536)
ImageGPTLarge = _register("igpt_l", "ImageGPTLarge", "iGPT-L (48 layers, width 1536)", 1_362_914_304)
