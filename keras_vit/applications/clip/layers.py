"""CLIP's own layers: the text attention mask, end-of-text pooling and the contrastive logits."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class CausalPaddingMask(keras.layers.Layer):
    """The text encoder's attention mask: token `i` sees tokens `0..i` that are not padding.

    Call arguments: `attention_mask` `(batch, length)`, 1 on tokens and 0 on padding.
    Returns a boolean `(batch, 1, length, length)`, True where a query may attend a key.
    """

    def call(self, attention_mask):
        length = ops.shape(attention_mask)[1]
        positions = ops.arange(length)
        causal = positions[None, :] <= positions[:, None]  # (queries, keys)
        keys = ops.cast(attention_mask, "bool")[:, None, None, :]
        return ops.logical_and(causal[None, None], keys)

    def compute_output_spec(self, attention_mask):
        batch, length = attention_mask.shape
        return keras.KerasTensor((batch, 1, length, length), dtype="bool")


@keras.saving.register_keras_serializable(package="keras_vit")
class EndOfTextPooling(keras.layers.Layer):
    """Picks each sequence's end-of-text token: the one with the largest id (CLIP's vocabulary
    puts `<|endoftext|>` last, so `argmax(input_ids)` finds it).

    Call arguments: `tokens` `(batch, length, width)` and `input_ids` `(batch, length)`.
    Returns `(batch, width)`.
    """

    def call(self, tokens, input_ids):
        index = ops.argmax(ops.cast(input_ids, "int32"), axis=-1)
        return ops.take_along_axis(tokens, index[:, None, None], axis=1)[:, 0]

    def compute_output_shape(self, tokens_shape, input_ids_shape):
        return (tokens_shape[0], tokens_shape[2])


@keras.saving.register_keras_serializable(package="keras_vit")
class ContrastiveLogits(keras.layers.Layer):
    """`exp(logit_scale) * cos(image, text)`: CLIP's image-text logits, with the learned
    temperature (initialized to 1 / 0.07 and clipped at 100, as CLIP trains it).

    Call arguments:
        image_embeddings: `(images, dim)`.
        text_embeddings: `(texts, dim)` for every image-text pair (CLIP's
            `logits_per_image`, `(images, texts)`), or `(images, queries, dim)` for
            each image's own queries (`(images, queries)`).
    """

    def __init__(self, initial_scale=math.log(1 / 0.07), **kwargs):
        super().__init__(**kwargs)
        self.initial_scale = initial_scale

    def build(self, image_embeddings_shape, text_embeddings_shape=None):
        self.logit_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial_scale), name="logit_scale"
        )
        self.built = True

    def call(self, image_embeddings, text_embeddings):
        image = _l2_normalize(ops.cast(image_embeddings, "float32"))
        text = _l2_normalize(ops.cast(text_embeddings, "float32"))
        if len(text.shape) == 2:
            similarity = ops.matmul(image, ops.transpose(text))
        else:
            similarity = ops.einsum("bd,bqd->bq", image, text)
        return similarity * ops.exp(ops.minimum(ops.cast(self.logit_scale, "float32"), _MAX_LOGIT_SCALE))

    def compute_output_shape(self, image_embeddings_shape, text_embeddings_shape):
        if len(text_embeddings_shape) == 2:
            return (image_embeddings_shape[0], text_embeddings_shape[0])
        return tuple(text_embeddings_shape[:2])

    def get_config(self):
        config = super().get_config()
        config["initial_scale"] = self.initial_scale
        return config


_MAX_LOGIT_SCALE = math.log(100.0)


def _l2_normalize(x):
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
