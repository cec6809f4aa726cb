"""Self-attention over token sequences (GPT, iGPT): causal or bidirectional, with a
key/value cache for generation and a kernel chosen for long sequences."""

import keras
from keras import ops

from keras_vit.layers.attention import MultiHeadSelfAttention, combine_bias_and_mask
from keras_vit.layers.blockwise_attention import blockwise_attention

IMPLEMENTATIONS = ("auto", "dense", "fused", "blockwise")


@keras.saving.register_keras_serializable(package="keras_vit")
class CausalSelfAttention(MultiHeadSelfAttention):
    """Multi-head self-attention where token `i` sees tokens `0..i` (or all, `causal=False`).

    The weights are `MultiHeadSelfAttention`'s (`qkv`, `projection`), so one set of
    weights serves the causal objective, the bidirectional (masked) one and cached
    generation. Pixel sequences are long (4096 tokens at 64x64), and the kernel decides
    the memory:

    - "dense": `softmax(q k^T) v` with matmuls: a `(batch, heads, T, T)` score matrix.
    - "fused": `keras.ops.dot_product_attention(is_causal=...)`, the backend's kernel
      (`flash_attention` passes through). torch's never builds the score matrix;
      TensorFlow's and JAX's CPU kernels do.
    - "blockwise": `blockwise_attention`, exact online-softmax attention over
      `block_size` blocks: scratch `O(block_size^2)` per head, on every backend.
    - "auto" (default): "fused" on torch; on TensorFlow and JAX "blockwise" when the
      sequence is longer than `block_size`, else "dense".

    Attention dropout during training always takes the dense path.

    Args:
        num_heads: attention heads; must divide the width.
        causal: mask future tokens (False: bidirectional, for a masked objective).
        use_bias: biases on the qkv and output projections (iGPT's original has none).
        implementation: one of `IMPLEMENTATIONS`.
        block_size: block side of the block-wise kernel.
        flash_attention: passed to `keras.ops.dot_product_attention` by "fused".
        attention_dropout_rate, projection_dropout_rate, kernel_initializer: as in
            `MultiHeadSelfAttention`.

    Call arguments:
        inputs: `(batch, tokens, channels)`.
        cache: optional `(batch, 2, max_tokens, heads, head_dim)` keys and values of
            the tokens before `cache_index` (causal only). The new tokens' keys and
            values are written at `cache_index` and the updated cache is returned.
        cache_index: position of the first input token in the sequence. A Python 0
            (a prompt) attends among the inputs with the chosen kernel; otherwise the
            inputs attend to the cache, masked past their position: `O(max_tokens)`
            per new token.

    Returns `(batch, tokens, channels)`, and the updated cache when one was given.
    """

    def __init__(
        self,
        num_heads,
        causal=True,
        use_bias=True,
        implementation="auto",
        block_size=256,
        flash_attention=None,
        attention_dropout_rate=0.0,
        projection_dropout_rate=0.0,
        kernel_initializer="truncated_normal",
        **kwargs,
    ):
        super().__init__(
            num_heads,
            qkv_bias=use_bias,
            attention_dropout_rate=attention_dropout_rate,
            projection_dropout_rate=projection_dropout_rate,
            kernel_initializer=kernel_initializer,
            **kwargs,
        )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"CausalSelfAttention: implementation must be one of {', '.join(map(repr, IMPLEMENTATIONS))}, "
                f"got {implementation!r}."
            )
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"CausalSelfAttention: block_size must be a positive int, got {block_size!r}.")
        self.causal = causal
        self.use_bias = self._projection_bias = use_bias
        self.implementation = implementation
        self.block_size = block_size
        self.flash_attention = flash_attention

    def resolved_implementation(self, tokens):
        """The kernel "auto" stands for at a sequence of `tokens` (None: unknown)."""
        if self.implementation != "auto":
            return self.implementation
        if keras.backend.backend() == "torch":
            return "fused"
        return "blockwise" if tokens is not None and tokens > self.block_size else "dense"

    def call(self, inputs, cache=None, cache_index=None, training=False):
        batch, tokens = ops.shape(inputs)[0], ops.shape(inputs)[1]
        query, key, value, scale = self._queries_keys_values(inputs)
        if cache is None:
            outputs = self._attend(query, key, value, scale, training)
        else:
            outputs, cache = self._attend_with_cache(query, key, value, scale, cache, cache_index)
        outputs = ops.reshape(outputs, (batch, tokens, self.num_heads * self.head_dim))
        outputs = self.projection_dropout(self.projection(outputs), training=training)
        return outputs if cache is None else (outputs, cache)

    def _attend(self, query, key, value, scale, training):
        if query.shape[1] == 1 and key.shape[1] == 1:  # one token sees only itself
            return value
        implementation = self.resolved_implementation(query.shape[1])
        if implementation == "dense" or (training and self.attention_dropout_rate > 0.0):
            bias = None
            if self.causal:
                tokens = ops.shape(query)[1]
                bias = combine_bias_and_mask(None, causal_mask(tokens, tokens)[None, None], query.dtype)
            return self._explicit_attention(query, key, value, bias, scale, training)[0]
        if implementation == "fused":
            return ops.dot_product_attention(
                query, key, value, scale=scale, is_causal=self.causal, flash_attention=self.flash_attention
            )
        return blockwise_attention(query, key, value, causal=self.causal, block_size=self.block_size, scale=scale)

    def _attend_with_cache(self, query, key, value, scale, cache, cache_index):
        if not self.causal:
            raise ValueError("CausalSelfAttention: a key/value cache needs causal=True; bidirectional attention sees the future.")
        if cache_index is None:
            raise ValueError("CausalSelfAttention: pass cache_index, the position of the first input token, with a cache.")
        keys = ops.slice_update(cache[:, 0], [0, cache_index, 0, 0], ops.cast(key, cache.dtype))
        values = ops.slice_update(cache[:, 1], [0, cache_index, 0, 0], ops.cast(value, cache.dtype))
        cache = ops.stack([keys, values], axis=1)
        if isinstance(cache_index, int) and cache_index == 0:  # a prompt: nothing cached before it
            return self._attend(query, key, value, scale, training=False), cache
        max_tokens, new_tokens = cache.shape[2], ops.shape(query)[1]
        query_positions = ops.arange(new_tokens) + ops.cast(cache_index, "int32")
        visible = ops.arange(max_tokens)[None, :] <= query_positions[:, None]  # (new, max_tokens)
        bias = combine_bias_and_mask(None, visible[None, None], query.dtype)
        outputs, _ = self._explicit_attention(query, ops.cast(keys, query.dtype), ops.cast(values, query.dtype), bias, scale, False)
        return outputs, cache

    def get_config(self):
        config = super().get_config()
        for key in ("qkv_bias", "fused"):
            config.pop(key)
        config.update(
            {
                "causal": self.causal,
                "use_bias": self.use_bias,
                "implementation": self.implementation,
                "block_size": self.block_size,
                "flash_attention": self.flash_attention,
            }
        )
        return config


def causal_mask(query_tokens, key_tokens):
    """`(query_tokens, key_tokens)` booleans, True where a query may attend; queries are the
    last `query_tokens` positions of the keys."""
    offset = key_tokens - query_tokens
    return ops.arange(key_tokens)[None, :] <= ops.arange(query_tokens)[:, None] + offset
