"""CLIP (Radford et al., 2021): a causal text transformer pooled at the end-of-text token and a
ViT with a pre-norm, each ending in a projection to the shared embedding space, joined by
the contrastive logits.

`CLIP` is the family's builder (`clip_b32`, `clip_b16`, `clip_l14`, and `clip_pico16` for
CPU demos); `contrastive_model` joins two given towers. OWL-ViT builds its detector on a
CLIP model from the registry (`create_model("clip_b32", ...)`), as DETR takes its backbone.
"""

import keras
from keras import ops

from keras_vit.applications import common
from keras_vit.applications.registry import ModelSpec, register_model
from keras_vit.applications.clip.layers import CausalPaddingMask, ContrastiveLogits, EndOfTextPooling
from keras_vit.layers import MultiHeadSelfAttention, PatchEmbedding, TransformerBlock
from keras_vit.data.tokenizer import CLIP_VOCABULARY_SIZE
from keras_vit.layers.token_embedding import TokenAndPositionEmbedding

# Text towers: CLIP's B and L text transformers (49,408 BPE ids).
CLIP_TEXT_VARIANTS = {
    "pico": dict(width=64, depth=2, num_heads=2, mlp_dim=256),
    "b": dict(width=512, depth=12, num_heads=8, mlp_dim=2048),
    "l": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
}
# Vision towers: ViT-B/32, B/16 and L/14 as CLIP builds them (no bias on the patch projection).
CLIP_VISION_VARIANTS = {
    "pico16": dict(patch_size=16, width=64, depth=2, num_heads=2, mlp_dim=256),
    "b32": dict(patch_size=32, width=768, depth=12, num_heads=12, mlp_dim=3072),
    "b16": dict(patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072),
    "l14": dict(patch_size=14, width=1024, depth=24, num_heads=16, mlp_dim=4096),
}



def _blocks(x, prefix, depth, num_heads, mlp_dim, layer_norm_epsilon, dropout_rate, attention_mask=None):
    """The towers' pre-norm quick-GELU blocks, named `{prefix}_block_{i}`: the prefix keeps the text and
    vision variables apart in the detector, whatever the scope the towers are built or loaded in.

    Attention projections start as CLIP's (normal, std `width^-0.5 (2 depth)^-0.5`): ViT's fixed 0.02
    is ~10x smaller for the narrow towers trained from scratch here and leaves them slow to start."""
    width = x.shape[-1]
    std = width**-0.5 * (2 * depth) ** -0.5
    for index in range(depth):
        attention = MultiHeadSelfAttention(
            num_heads,
            kernel_initializer=keras.initializers.RandomNormal(stddev=std),
            projection_dropout_rate=dropout_rate,
            name="attention",
        )
        x = TransformerBlock(
            num_heads,
            mlp_dim,
            attention=attention,
            layer_norm_epsilon=layer_norm_epsilon,
            activation="quick_gelu",
            dropout_rate=dropout_rate,
            name=f"{prefix}_block_{index}",
        )(x, attention_mask=attention_mask)
    return x


def CLIPTextEncoder(
    width=512,
    depth=12,
    num_heads=8,
    mlp_dim=2048,
    projection_dim=512,
    vocabulary_size=CLIP_VOCABULARY_SIZE,
    sequence_length=16,
    layer_norm_epsilon=1e-5,
    dropout_rate=0.0,
    name="text_encoder",
):
    """CLIP's text tower: causal pre-norm transformer, final LayerNorm, pooled at `<|endoftext|>`.

    Args:
        width, depth, num_heads, mlp_dim: the transformer (CLIP B: 512, 12, 8, 2048).
        projection_dim: width of the shared image-text embedding.
        vocabulary_size: BPE ids (CLIP: 49,408; end-of-text is the largest id).
        sequence_length: token positions (OWL-ViT: 16, CLIP: 77).

    Returns a `keras.Model` taking `{"input_ids": (batch, length), "attention_mask":
    (batch, length)}` (int, 1 on tokens, 0 on padding) and returning `{"tokens": (batch,
    length, width), "embedding": (batch, projection_dim)}` (not normalized).
    """
    input_ids = keras.Input(shape=(sequence_length,), dtype="int32", name="input_ids")
    attention_mask = keras.Input(shape=(sequence_length,), dtype="int32", name="attention_mask")
    x = TokenAndPositionEmbedding(vocabulary_size, sequence_length, width, name="text_embedding")(input_ids)
    mask = CausalPaddingMask(name="causal_padding_mask")(attention_mask)
    x = _blocks(x, "text", depth, num_heads, mlp_dim, layer_norm_epsilon, dropout_rate, attention_mask=mask)
    tokens = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="text_final_norm")(x)
    pooled = EndOfTextPooling(name="text_pooling")(tokens, input_ids)
    embedding = keras.layers.Dense(projection_dim, use_bias=False, name="text_projection")(pooled)
    return keras.Model(
        {"input_ids": input_ids, "attention_mask": attention_mask}, {"tokens": tokens, "embedding": embedding}, name=name
    )


def CLIPVisionEncoder(
    patch_size=32,
    width=768,
    depth=12,
    num_heads=12,
    mlp_dim=3072,
    projection_dim=512,
    input_shape=None,
    include_preprocessing=True,
    layer_norm_epsilon=1e-5,
    dropout_rate=0.0,
    default_size=224,
    name="vision_encoder",
):
    """CLIP's image tower: a ViT with a class token, a LayerNorm before the blocks
    (`vision_pre_norm`) and one after (`vision_post_norm`), the class token projected.

    Args:
        patch_size, width, depth, num_heads, mlp_dim: the ViT (B/32: 32, 768, 12, 12, 3072).
        projection_dim: width of the shared image-text embedding.
        input_shape: `(height, width, 3)`, default `(default_size, default_size, 3)`.
        include_preprocessing: inputs are [0, 255] pixels, normalized with CLIP's
            statistics inside; False for already-normalized inputs.

    Returns a `keras.Model` mapping images `(batch, H, W, 3)` to `{"tokens": (batch, 1 +
    patches, width)` after `vision_post_norm` (class token first; OWL-ViT reads every token),
    `"embedding": (batch, projection_dim)}` (the projected class token, not normalized).
    """
    input_shape = common.image_input_shape(name, input_shape, default_size, patch_size)
    images = keras.Input(shape=input_shape, name="images")
    x = common.preprocess(images, include_preprocessing, common.CLIP_MEAN, common.CLIP_STD)
    x = PatchEmbedding(width, patch_size, use_bias=False, name="patch_embedding")(x)
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="vision_pre_norm")(x)
    x = _blocks(x, "vision", depth, num_heads, mlp_dim, layer_norm_epsilon, dropout_rate)
    tokens = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="vision_post_norm")(x)
    embedding = keras.layers.Dense(projection_dim, use_bias=False, name="visual_projection")(tokens[:, 0])
    return keras.Model(images, {"tokens": tokens, "embedding": embedding}, name=name)


def contrastive_model(text_encoder, vision_encoder, contrastive_logits=None, name="clip"):
    """The contrastive image-text model over two towers.

    Args:
        text_encoder: a `CLIPTextEncoder` model.
        vision_encoder: a `CLIPVisionEncoder` model with the same `projection_dim`.
        contrastive_logits: the `ContrastiveLogits` layer (its learned temperature) to use,
            e.g. an OWL-ViT detector's, to pretrain the detector's towers in place; None for a new one.

    Returns a `keras.Model` taking `{"images": (batch, H, W, 3), "input_ids": (batch,
    length), "attention_mask": (batch, length)}` (one caption per image) and returning
    `{"image_embedding": (batch, dim), "text_embedding": (batch, dim), "logits_per_image":
    (batch, batch)}`: image `i` against every caption, `exp(scale) * cosine`.
    """
    image_dim, text_dim = vision_encoder.output["embedding"].shape[-1], text_encoder.output["embedding"].shape[-1]
    if image_dim != text_dim:
        raise ValueError(
            f"{name}: the vision tower projects to {image_dim} and the text tower to {text_dim}; build both "
            "with the same projection_dim."
        )
    images = keras.Input(shape=vision_encoder.input_shape[1:], name="images")
    text = {key: keras.Input(shape=tensor.shape[1:], dtype="int32", name=key) for key, tensor in text_encoder.input.items()}
    image_embedding = vision_encoder(images)["embedding"]
    text_embedding = text_encoder(text)["embedding"]
    contrastive_logits = contrastive_logits or ContrastiveLogits(name="contrastive_logits")
    logits = contrastive_logits(image_embedding, text_embedding)
    outputs = {"image_embedding": image_embedding, "text_embedding": text_embedding, "logits_per_image": logits}
    return keras.Model({"images": images, **text}, outputs, name=name)


def CLIP(
    text="b",
    vision="b32",
    projection_dim=512,
    *,
    weights=None,
    input_shape=None,
    include_preprocessing=True,
    vocabulary_size=CLIP_VOCABULARY_SIZE,
    sequence_length=77,
    dropout_rate=0.0,
    layer_norm_epsilon=1e-5,
    default_size=224,
    name="clip",
):
    """Builds a CLIP model: its text tower, its vision tower and the contrastive logits.

    Args:
        text: a key of `CLIP_TEXT_VARIANTS` ("b", "l") or a dict of `CLIPTextEncoder`
            arguments (`width`, `depth`, `num_heads`, `mlp_dim`).
        vision: a key of `CLIP_VISION_VARIANTS` ("b32", "b16", "l14") or a dict of
            `CLIPVisionEncoder` arguments (`patch_size`, `width`, ...).
        projection_dim: the shared embedding width.
        weights: None (local checkpoints are read through the OWL-ViT converter).
        input_shape: `(height, width, 3)`, default `(default_size, default_size, 3)`.
        include_preprocessing: inputs are [0, 255] pixels (CLIP's statistics inside).
        vocabulary_size, sequence_length: token ids and positions of the text tower
            (CLIP: 49,408 and 77; OWL-ViT's queries: 16).
        dropout_rate, layer_norm_epsilon: of both towers.

    Returns the `contrastive_model` of the two towers: its layers `text_encoder`,
    `vision_encoder` and `contrastive_logits` are the parts other models reuse.
    """
    if weights is not None:
        raise ValueError(
            f"{name}: CLIP checkpoints are not read directly; load an OWL-ViT checkpoint "
            "(keras_vit.convert.load_transformers_checkpoint), whose towers are CLIP's."
        )
    text_config = _variant(text, CLIP_TEXT_VARIANTS, "text", name)
    vision_config = _variant(vision, CLIP_VISION_VARIANTS, "vision", name)
    text_encoder = CLIPTextEncoder(
        **text_config, projection_dim=projection_dim, vocabulary_size=vocabulary_size, sequence_length=sequence_length,
        layer_norm_epsilon=layer_norm_epsilon, dropout_rate=dropout_rate,
    )
    vision_encoder = CLIPVisionEncoder(
        **vision_config, projection_dim=projection_dim, input_shape=input_shape, include_preprocessing=include_preprocessing,
        layer_norm_epsilon=layer_norm_epsilon, dropout_rate=dropout_rate, default_size=default_size,
    )
    return contrastive_model(text_encoder, vision_encoder, name=name)


def _variant(value, table, tower, name):
    if isinstance(value, dict):
        return dict(value)
    if value not in table:
        raise ValueError(f"{name}: unknown {tower} tower {value!r}; pick one of {sorted(table)} or pass a dict of its arguments.")
    return dict(table[value])


CLIP_VARIANTS = {
    "clip_pico16": dict(text="pico", vision="pico16", projection_dim=64),
    "clip_b32": dict(text="b", vision="b32", projection_dim=512),
    "clip_b16": dict(text="b", vision="b16", projection_dim=512),
    "clip_l14": dict(text="l", vision="l14", projection_dim=768),
}


def _register(name, constructor_name, description, params, default_size=224):
    return register_model(
        ModelSpec(
            name=name,
            constructor_name=constructor_name,
            family="clip",
            builder=CLIP,
            config=CLIP_VARIANTS[name],
            description=description,
            task="image_text",
            default_size=default_size,
            params=params,
            no_weight_decay=("class_token", "position_embedding", "logit_scale"),
        )
    )


CLIPPico16 = _register("clip_pico16", "CLIPPico16", "a small CLIP (2-layer towers of 64, patch 16) for 128 px images", None, 128)
CLIPBase32 = _register("clip_b32", "CLIPBase32", "CLIP ViT-B/32", 151_277_313)
CLIPBase16 = _register("clip_b16", "CLIPBase16", "CLIP ViT-B/16", 149_620_737)
CLIPLarge14 = _register("clip_l14", "CLIPLarge14", "CLIP ViT-L/14", 427_616_513)


@keras.saving.register_keras_serializable(package="keras_vit")
class CLIPContrastiveLoss(keras.losses.Loss):
    """CLIP's symmetric cross-entropy over a batch's image-caption logits, where every caption
    equal to image `i`'s own is a positive for it (CLIP's one-positive loss when captions are
    unique; small caption vocabularies, such as `shapes`', repeat captions within a batch).

    `y_true`: the captions' token ids `(batch, length)` (equal rows = equal captions).
    `y_pred`: `logits_per_image` `(batch, batch)`. Returns the mean of the image-to-text and
    text-to-image cross-entropies against the positives, spread evenly.
    """

    def __init__(self, name="clip_contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        ids = ops.cast(y_true, "int32")
        same = ops.cast(ops.all(ids[:, None, :] == ids[None, :, :], axis=-1), "float32")  # (batch, batch)
        targets = same / ops.sum(same, axis=-1, keepdims=True)
        logits = ops.cast(y_pred, "float32")
        per_image = -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)
        per_text = -ops.sum(targets * ops.log_softmax(ops.transpose(logits), axis=-1), axis=-1)
        return (per_image + per_text) / 2.0
