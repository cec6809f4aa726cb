"""DETR's post-norm transformer layers: positions added to queries and keys, never to values."""

import keras

from keras_vit.layers.attention import MultiHeadAttention


def _add(x, position):
    return x if position is None else x + keras.ops.cast(position, x.dtype)


class _PostNormLayer(keras.layers.Layer):
    """Shared parts: `norm(x + dropout(branch(x)))` residuals and the configuration."""

    def __init__(self, num_heads=8, ffn_dim=2048, dropout_rate=0.1, activation="relu", layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout_rate = dropout_rate
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy, name="dropout")

    def _attention(self, name):
        return MultiHeadAttention(
            self.num_heads, attention_dropout_rate=self.dropout_rate, dtype=self.dtype_policy, name=name
        )

    def _norm(self, name):
        return keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name)

    def _build_ffn(self, input_shape):
        channels = input_shape[-1]
        self.fc1 = keras.layers.Dense(self.ffn_dim, activation=self.activation, dtype=self.dtype_policy, name="fc1")
        self.fc2 = keras.layers.Dense(channels, dtype=self.dtype_policy, name="fc2")
        self.fc1.build((None, channels))
        self.fc2.build((None, self.ffn_dim))

    def _ffn(self, x, training):
        """`fc2(dropout(activation(fc1(x))))` (the branch's own dropout follows in `_residual`)."""
        return self.fc2(self.dropout(self.fc1(x), training=training))

    def _residual(self, norm, x, branch, training):
        return norm(x + self.dropout(branch, training=training))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "ffn_dim": self.ffn_dim,
                "dropout_rate": self.dropout_rate,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class DetrEncoderLayer(_PostNormLayer):
    """`x = norm1(x + attn(x + pos, x + pos, x))`, then `norm2(x + ffn(x))` with `ffn = fc2(relu(fc1(x)))`.

    Args:
        num_heads, ffn_dim: attention heads and FFN width (DETR: 8, 2048).
        dropout_rate: on the attention weights, after the FFN's activation and on each branch (0.1).
        activation: FFN activation ("relu").
        layer_norm_epsilon: 1e-5, as torch.

    Call arguments: `inputs` `(batch, tokens, channels)`, `position` (same shape),
    `padding_mask` `(batch, tokens)` (1 on real pixels). Returns `(batch, tokens, channels)`.
    """

    def build(self, input_shape):
        self.self_attention = self._attention("self_attention")
        self.norm1, self.norm2 = self._norm("norm1"), self._norm("norm2")
        for layer in (self.self_attention, self.norm1, self.norm2):
            layer.build(input_shape)
        self._build_ffn(input_shape)
        self.built = True

    def call(self, inputs, position=None, padding_mask=None, training=False):
        query_key = _add(inputs, position)
        attended = self.self_attention(query_key, query_key, inputs, key_mask=padding_mask, training=training)
        x = self._residual(self.norm1, inputs, attended, training)
        return self._residual(self.norm2, x, self._ffn(x, training), training)


@keras.saving.register_keras_serializable(package="keras_vit")
class DetrDecoderLayer(_PostNormLayer):
    """Self-attention of the object queries, cross-attention to the encoder's memory, FFN; each post-norm.

    The query position embedding is added to the self-attention's queries and
    keys and to the cross-attention's queries; the memory's position embedding
    to the cross-attention's keys.

    Call arguments: `inputs` `(batch, queries, channels)`, `memory`
    `(batch, tokens, channels)`, `query_position` `(batch, queries, channels)`,
    `memory_position` `(batch, tokens, channels)`, `memory_mask` `(batch, tokens)`.
    Returns `(batch, queries, channels)`.
    """

    def build(self, input_shape, *args, **kwargs):
        self.self_attention = self._attention("self_attention")
        self.cross_attention = self._attention("cross_attention")
        self.norm1, self.norm2, self.norm3 = self._norm("norm1"), self._norm("norm2"), self._norm("norm3")
        for layer in (self.self_attention, self.cross_attention, self.norm1, self.norm2, self.norm3):
            layer.build(input_shape)
        self._build_ffn(input_shape)
        self.built = True

    def call(self, inputs, memory, query_position=None, memory_position=None, memory_mask=None, training=False):
        query_key = _add(inputs, query_position)
        x = self._residual(self.norm1, inputs, self.self_attention(query_key, query_key, inputs, training=training), training)
        attended = self.cross_attention(
            _add(x, query_position), _add(memory, memory_position), memory, key_mask=memory_mask, training=training
        )
        x = self._residual(self.norm2, x, attended, training)
        return self._residual(self.norm3, x, self._ffn(x, training), training)


class ResizeMask(keras.layers.Layer):
    """(Part of `DetrDetector`'s graph, rebuilt by its constructor; not serialized alone.)

    Resizes a pixel mask to a feature map's grid by nearest neighbour, as torch's
    `interpolate(mode="nearest")`: output row `i` reads input row `floor(i * in / out)`.

    Call arguments: `mask` `(batch, height, width)`, `features` `(batch, h, w, channels)`.
    Returns `(batch, h, w)` float32, 1 where the feature pixel lies on the image.
    """

    def call(self, mask, features):
        mask = keras.ops.cast(mask, "float32")
        for axis in (1, 2):
            size_in, size_out = keras.ops.shape(mask)[axis], keras.ops.shape(features)[axis]
            scale = keras.ops.cast(size_in, "float32") / keras.ops.cast(size_out, "float32")
            source = keras.ops.floor(keras.ops.arange(size_out, dtype="float32") * scale)
            source = keras.ops.minimum(keras.ops.cast(source, "int32"), size_in - 1)
            mask = keras.ops.take(mask, source, axis=axis)
        return mask

    def compute_output_spec(self, mask, features):
        return keras.KerasTensor(tuple(features.shape[:3]), dtype="float32")


class ObjectQueries(keras.layers.Layer):
    """(Part of `DetrDetector`'s graph, rebuilt by its constructor; not serialized alone.)

    DETR's learned object queries: `num_queries` embeddings of width `hidden_dim`.

    Call arguments: `reference` `(batch, ...)`, whose batch size the output takes.
    Returns the query embeddings broadcast to `(batch, num_queries, hidden_dim)`.
    """

    def __init__(self, num_queries, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim

    def build(self, reference_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.num_queries, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0),  # torch nn.Embedding
            name="embeddings",
        )
        self.built = True

    def call(self, reference):
        batch = keras.ops.shape(reference)[0]
        embeddings = keras.ops.cast(self.embeddings, self.compute_dtype)
        return keras.ops.broadcast_to(embeddings[None], (batch, self.num_queries, self.hidden_dim))

    def compute_output_shape(self, reference_shape):
        return (reference_shape[0], self.num_queries, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"num_queries": self.num_queries, "hidden_dim": self.hidden_dim})
        return config
