"""Multi-head attention: self-attention with a fused qkv projection, and attention of
queries over separate keys and values (DETR's encoder and decoder)."""

import keras
from keras import ops

# Added to the logits of masked-out positions. Large enough to zero the
# softmax weight in float16 as well as float32, small enough not to overflow.
_MASK_VALUE = -1e4


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention (Vaswani et al., 2017).

    One dense layer computes queries, keys and values together; the product
    runs through `keras.ops.dot_product_attention`, so each backend may use its
    fused kernel. The explicit path is taken when attention weights are
    requested, attention dropout is active, the bias is grouped, or `fused=False`.

    Args:
        num_heads: number of attention heads; must divide the input width.
        qkv_bias: whether the qkv projection has a bias.
        attention_dropout_rate: dropout on the attention weights (training).
        projection_dropout_rate: dropout after the output projection.
        kernel_initializer: initializer of both projections' kernels.
        fused: use `keras.ops.dot_product_attention` when nothing needs the
            explicit path. False always computes the product with batched
            matmuls, which is faster for the many short sequences of window
            attention (Swin-T inference on CPU: JAX +12%, TF +2%, torch level).

    Call arguments:
        inputs: `(batch, tokens, channels)`.
        attention_bias: optional additive bias broadcastable to
            `(batch, heads, tokens, tokens)` (e.g. Swin's relative position bias).
        attention_mask: optional boolean mask broadcastable to
            `(batch, heads, tokens, tokens)`; `True` means "may attend".
        return_attention_scores: also return the softmax weights
            `(batch, heads, tokens, tokens)`.
        grouped_bias: `attention_bias` is `(groups, heads, tokens, tokens)` and
            batch row `i` uses group `i % groups` (Swin's per-window masks), added
            by broadcasting instead of tiling the bias over the batch.

    Returns `(batch, tokens, channels)`, plus the weights when asked.
    """

    _fused_qkv_bias = True  # the qkv Dense carries the q, k and v biases
    _projection_bias = True

    def __init__(
        self,
        num_heads,
        qkv_bias=True,
        attention_dropout_rate=0.0,
        projection_dropout_rate=0.0,
        kernel_initializer="truncated_normal",
        fused=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.fused = fused
        self.qkv_bias = qkv_bias
        self.attention_dropout_rate = attention_dropout_rate
        self.projection_dropout_rate = projection_dropout_rate
        self.kernel_initializer = keras.initializers.get(_initializer(kernel_initializer))
        self.attention_dropout = keras.layers.Dropout(
            attention_dropout_rate, dtype=self.dtype_policy, name="attention_dropout"
        )
        self.projection_dropout = keras.layers.Dropout(
            projection_dropout_rate, dtype=self.dtype_policy, name="projection_dropout"
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.num_heads:
            raise ValueError(
                f"MultiHeadSelfAttention: the input width {channels} is not divisible by "
                f"num_heads={self.num_heads}. Choose a width that is a multiple of the heads."
            )
        self.head_dim = channels // self.num_heads
        self.qkv = keras.layers.Dense(
            3 * channels,
            use_bias=self.qkv_bias and self._fused_qkv_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.qkv.build(input_shape)
        self.projection = keras.layers.Dense(
            channels,
            use_bias=self._projection_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="projection",
        )
        self.projection.build(input_shape)
        self.built = True

    def call(
        self,
        inputs,
        attention_bias=None,
        attention_mask=None,
        return_attention_scores=False,
        grouped_bias=False,
        training=False,
    ):
        batch, tokens = ops.shape(inputs)[0], ops.shape(inputs)[1]
        query, key, value, scale = self._queries_keys_values(inputs)
        bias = combine_bias_and_mask(attention_bias, attention_mask, inputs.dtype)
        use_dropout = training and self.attention_dropout_rate > 0.0
        if return_attention_scores or use_dropout or grouped_bias or not self.fused:
            outputs, scores = self._explicit_attention(query, key, value, bias, scale, training, grouped_bias)
        else:
            outputs = ops.dot_product_attention(query, key, value, bias=bias, scale=scale)
            scores = None
        outputs = ops.reshape(outputs, (batch, tokens, self.num_heads * self.head_dim))
        outputs = self.projection_dropout(self.projection(outputs), training=training)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def _queries_keys_values(self, inputs):
        """`(query, key, value, scale)`: three `(batch, tokens, heads, head_dim)` tensors
        and the factor the logits `q . k` are multiplied by."""
        batch, tokens = ops.shape(inputs)[0], ops.shape(inputs)[1]
        heads_shape = (batch, tokens, self.num_heads, self.head_dim)
        # Split on the channel axis rather than slicing a (B, N, 3, H, D) view: TensorFlow
        # graphs copy each slice and build a zero-padded gradient for it.
        query, key, value = (ops.reshape(part, heads_shape) for part in ops.split(self.qkv(inputs), 3, axis=-1))
        return query, key, value, self.head_dim**-0.5

    def _explicit_attention(self, query, key, value, bias, scale, training, grouped_bias=False):
        """softmax(scale * q k^T + bias) v as batched matmuls in `(batch, heads, tokens, dim)`
        layout, with the softmax in float32. Returns `(batch, tokens, heads, dim)` and the weights."""
        query, key, value = (ops.transpose(part, (0, 2, 1, 3)) for part in (query, key, value))
        if scale != 1.0:
            query = query * ops.cast(scale, query.dtype)
        logits = ops.cast(ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))), "float32")
        if bias is not None and grouped_bias:
            groups, heads, queries, keys = bias.shape
            grouped = ops.reshape(logits, (-1, groups, heads, queries, keys)) + ops.cast(bias, "float32")
            logits = ops.reshape(grouped, (-1, heads, queries, keys))
        elif bias is not None:
            logits = logits + ops.cast(bias, "float32")
        scores = ops.softmax(logits, axis=-1)
        weights = self.attention_dropout(ops.cast(scores, value.dtype), training=training)
        outputs = ops.transpose(ops.matmul(weights, value), (0, 2, 1, 3))
        return outputs, scores

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "qkv_bias": self.qkv_bias,
                "attention_dropout_rate": self.attention_dropout_rate,
                "projection_dropout_rate": self.projection_dropout_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "fused": self.fused,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention of queries over separate keys and values (Vaswani et al., 2017).

    Four `(channels, channels)` projections (`query`, `key`, `value`, `output`),
    one per input, as torch's `nn.MultiheadAttention` and DETR: the caller adds
    position embeddings to queries and keys only, and the same layer serves as
    self-attention (`query is key is value` up to those embeddings) and as
    cross-attention. The softmax runs in float32.

    Args:
        num_heads: attention heads; must divide the channels.
        attention_dropout_rate: dropout on the attention weights (training).
        kernel_initializer: initializer of the projections' kernels.

    Call arguments:
        query: `(batch, queries, channels)`.
        key: `(batch, keys, channels)`.
        value: `(batch, keys, channels)`.
        key_mask: optional `(batch, keys)`, 1 (or True) for keys that may be
            attended, 0 for padding.
        return_attention_scores: also return the weights `(batch, heads, queries, keys)`.

    Returns `(batch, queries, channels)`, plus the weights when asked.
    """

    def __init__(self, num_heads, attention_dropout_rate=0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.attention_dropout_rate = attention_dropout_rate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.attention_dropout = keras.layers.Dropout(attention_dropout_rate, dtype=self.dtype_policy, name="attention_dropout")

    def build(self, query_shape, key_shape=None, value_shape=None):
        channels = query_shape[-1]
        if channels % self.num_heads:
            raise ValueError(
                f"MultiHeadAttention: the width {channels} is not divisible by num_heads={self.num_heads}. "
                "Choose a width that is a multiple of the heads."
            )
        self.head_dim = channels // self.num_heads
        for name in ("query", "key", "value", "output"):
            dense = keras.layers.Dense(
                channels, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy, name=name
            )
            dense.build((None, channels))
            setattr(self, f"{name}_dense", dense)
        self.built = True

    def call(self, query, key, value, key_mask=None, return_attention_scores=False, training=False):
        batch, queries = ops.shape(query)[0], ops.shape(query)[1]
        heads = lambda x: ops.transpose(
            ops.reshape(x, (batch, -1, self.num_heads, self.head_dim)), (0, 2, 1, 3)
        )  # (batch, heads, tokens, head_dim)
        query = heads(self.query_dense(query)) * ops.cast(self.head_dim**-0.5, query.dtype)
        key, value = heads(self.key_dense(key)), heads(self.value_dense(value))
        logits = ops.cast(ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))), "float32")
        if key_mask is not None:
            logits = logits + ops.where(ops.cast(key_mask, "bool"), 0.0, _MASK_VALUE)[:, None, None, :]
        scores = ops.softmax(logits, axis=-1)
        weights = self.attention_dropout(ops.cast(scores, value.dtype), training=training)
        outputs = ops.reshape(ops.transpose(ops.matmul(weights, value), (0, 2, 1, 3)), (batch, queries, -1))
        outputs = self.output_dense(outputs)
        return (outputs, scores) if return_attention_scores else outputs

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "attention_dropout_rate": self.attention_dropout_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


def combine_bias_and_mask(bias, mask, dtype):
    """Folds a boolean mask into one additive bias (`None` if neither is given)."""
    if mask is None:
        return bias
    mask_bias = ops.where(ops.cast(mask, "bool"), 0.0, _MASK_VALUE)
    mask_bias = ops.cast(mask_bias, dtype)
    return mask_bias if bias is None else ops.cast(bias, dtype) + mask_bias


def _initializer(identifier):
    if identifier == "truncated_normal":
        return keras.initializers.TruncatedNormal(stddev=0.02)
    return identifier
