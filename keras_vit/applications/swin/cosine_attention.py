"""Swin-V2's scaled cosine attention."""

import math

import keras
from keras import ops

from keras_vit.layers.attention import MultiHeadSelfAttention


@keras.saving.register_keras_serializable(package="keras_vit")
class CosineAttention(MultiHeadSelfAttention):
    """Swin-V2's scaled cosine attention (Liu et al., CVPR 2022).

    The logits are `cos(q, k) * exp(min(logit_scale, log(100)))`, with one
    learned `logit_scale` per head initialised to log(10), so the temperature
    never drops below 0.01. With `qkv_bias`, queries and values have biases and
    keys have none (as in the reference code). The product still runs through
    `keras.ops.dot_product_attention`: the per-head temperature is folded into
    the unit-length queries and the kernel's own scale is 1.

    Args and shapes: as `MultiHeadSelfAttention`.
    """

    # q and v get their own biases below; the fused projection has none (k has no bias).
    _fused_qkv_bias = False

    def build(self, input_shape):
        super().build(input_shape)
        channels = input_shape[-1]
        if self.qkv_bias:
            self.query_bias = self.add_weight(shape=(channels,), initializer="zeros", name="query_bias")
            self.value_bias = self.add_weight(shape=(channels,), initializer="zeros", name="value_bias")
        self.logit_scale = self.add_weight(
            shape=(self.num_heads,), initializer=keras.initializers.Constant(math.log(10.0)), name="logit_scale"
        )

    def _queries_keys_values(self, inputs):
        batch, tokens = ops.shape(inputs)[0], ops.shape(inputs)[1]
        heads_shape = (batch, tokens, self.num_heads, self.head_dim)
        query, key, value = ops.split(self.qkv(inputs), 3, axis=-1)
        if self.qkv_bias:
            query, value = query + self.query_bias, value + self.value_bias
        query, key, value = (ops.reshape(part, heads_shape) for part in (query, key, value))
        temperature = ops.exp(ops.minimum(self.logit_scale, math.log(100.0)))
        query = _unit_length(query) * ops.cast(temperature[:, None], query.dtype)
        return query, _unit_length(key), value, 1.0


def _unit_length(x, epsilon=1e-12):
    """`x / max(||x||, epsilon)` over the last axis (torch's `F.normalize`), computed in
    float32: zero vectors (window padding has no key bias) must stay 0 in float16 too.
    The clamp comes before the square root, so that a zero vector has a finite gradient
    (the derivative of sqrt at 0 would make it NaN)."""
    x32 = ops.cast(x, "float32")
    squared_norm = ops.sum(ops.square(x32), axis=-1, keepdims=True)
    return ops.cast(x32 * ops.rsqrt(ops.maximum(squared_norm, epsilon * epsilon)), x.dtype)
