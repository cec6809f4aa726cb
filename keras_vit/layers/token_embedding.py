"""Token ids to vectors: a token table plus a learned absolute position table (GPT-2, CLIP text, iGPT)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned absolute position embedding (GPT-2's `wte` + `wpe`).

    iGPT embeds palette indices with it, CLIP's text encoder BPE ids.

    Args:
        vocabulary_size: number of token ids (iGPT: palette colors plus the start id).
        max_positions: rows of the position table: the longest sequence.
        hidden_dim: embedding width.
        embeddings_initializer: initializer of both tables.

    Call arguments:
        tokens: int `(batch, tokens)`.
        start_index: position of the first token (an int or a scalar tensor), so that
            cached generation embeds one new token at a time.

    Returns `(batch, tokens, hidden_dim)`.
    """

    def __init__(self, vocabulary_size, max_positions, hidden_dim, embeddings_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.max_positions = max_positions
        self.hidden_dim = hidden_dim
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer or keras.initializers.RandomNormal(stddev=0.02)
        )

    def build(self, input_shape):
        self.token_embedding = self.add_weight(
            shape=(self.vocabulary_size, self.hidden_dim), initializer=self.embeddings_initializer, name="token_embedding"
        )
        self.position_embedding = self.add_weight(
            shape=(self.max_positions, self.hidden_dim), initializer=self.embeddings_initializer, name="position_embedding"
        )
        self.built = True

    def call(self, tokens, start_index=0):
        tokens = ops.cast(tokens, "int32")
        count = tokens.shape[1] if tokens.shape[1] is not None else ops.shape(tokens)[1]
        if isinstance(start_index, int) and isinstance(count, int):
            positions = self.position_embedding[start_index : start_index + count]
        else:
            positions = ops.take(self.position_embedding, ops.arange(count) + ops.cast(start_index, "int32"), axis=0)
        embedded = ops.take(self.token_embedding, tokens, axis=0) + positions[None]
        return ops.cast(embedded, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_positions": self.max_positions,
                "hidden_dim": self.hidden_dim,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }
        )
        return config
