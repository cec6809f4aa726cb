"""Pooling attention (MViT, Fan et al. 2021; MViTv2, Li et al. 2022).

Queries, keys and values are pooled over the token map before attending: a
depthwise convolution shared by the heads (then a LayerNorm over the head
width), or a max / average pool. A query stride shrinks the map (the stage
transitions); a key/value stride makes attention cheap at high resolution.
MViTv2 adds decomposed relative positions (`rel_pos_h`, `rel_pos_w`) and
residual pooling (`attn @ v + q`).
"""

import keras
import numpy as np
from keras import ops

from keras_vit.layers.constant import device_constant

POOL_MODES = ("conv", "max", "avg")


def pair(value, what="value"):
    """`value` as a `(height, width)` tuple of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what} must be an int or a (height, width) pair, got {value!r}.")
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


def pooled_size(size, kernel, stride):
    """The side of a map of `size` after a `kernel`/`stride` pool with padding `kernel // 2`
    (PyTorch's floor rule, as the reference implementations pool)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def check_pool_mode(pool_mode, owner):
    if pool_mode not in POOL_MODES:
        raise ValueError(
            f"{owner}: pool_mode must be one of {', '.join(repr(mode) for mode in POOL_MODES)} (how queries, keys "
            f"and values are pooled), got {pool_mode!r}. Use 'conv' (MViTv1 and MViTv2's default)."
        )


def relative_position_index(q_size, k_size):
    """`(q_size, k_size)` rows of the relative position table that query `i` and key `j` use
    along one axis: their distance in the finer of the two grids (timm's `cal_rel_pos_type`,
    computed in float32 and truncated as it does)."""
    q_ratio = np.float32(max(k_size / q_size, 1.0))
    k_ratio = np.float32(max(q_size / k_size, 1.0))
    distance = np.arange(q_size, dtype=np.float32)[:, None] * q_ratio - np.arange(k_size, dtype=np.float32)[None, :] * k_ratio
    distance = distance + np.float32((k_size - 1) * float(k_ratio))
    return distance.astype(np.int64)


def spatial_pool(x, kind, kernel, stride, conv_kernel=None):
    """Pools a map `(batch, h, w, channels)` with PyTorch's symmetric padding `kernel // 2`:
    "conv" (depthwise `conv_kernel` `(kh, kw, channels, 1)`, zero padding), "max" (padding
    ignored) or "avg" (zeros in the padding counted, PyTorch's default)."""
    padding = ((0, 0), (kernel[0] // 2, kernel[0] // 2), (kernel[1] // 2, kernel[1] // 2), (0, 0))
    padded = any(side for pad in padding for side in pad)
    if kind == "max":
        if padded:
            x = ops.pad(x, padding, constant_values=float("-inf"))
        return ops.max_pool(x, kernel, strides=stride, padding="valid")
    if padded:
        x = ops.pad(x, padding)
    if kind == "avg":
        return ops.average_pool(x, kernel, strides=stride, padding="valid")
    if keras.backend.backend() == "torch" and stride == (1, 1):
        return ops.depthwise_conv(x, conv_kernel, strides=1, padding="valid")
    return _shifted_depthwise_conv(x, conv_kernel, stride)


def _shifted_depthwise_conv(x, kernel, stride):
    """A "valid" depthwise convolution as a sum of `kh * kw` strided slices times their per-channel
    weights. XLA on CPU (TensorFlow, JAX) runs grouped convolutions slowly: for MViTv2-T's first
    stage (8 x 58 x 58 x 96, 3x3) this is 17 ms against 341 ms on JAX and 15 against 552 ms on
    TensorFlow; torch's kernel wins at stride 1 (59 against 166 ms), this at stride 4 (15 against 46).
    Unequal strides work too (TensorFlow's depthwise kernel refuses them)."""
    (kh, kw), (sh, sw) = kernel.shape[:2], stride
    height, width = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    kernel = ops.cast(kernel, x.dtype)
    out = None
    for i in range(kh):
        for j in range(kw):
            term = x[:, i : i + sh * (height - 1) + 1 : sh, j : j + sw * (width - 1) + 1 : sw, :] * kernel[i, j, :, 0]
            out = term if out is None else out + term
    return out


def split_tokens(inputs, feature_size, num_prefix_tokens):
    """`(prefix tokens or None, spatial map (batch, h, w, c))` of a token map or a token sequence."""
    if len(inputs.shape) == 4:
        return None, inputs
    height, width = feature_size
    prefix = inputs[:, :num_prefix_tokens] if num_prefix_tokens else None
    spatial = ops.reshape(inputs[:, num_prefix_tokens:], (-1, height, width, inputs.shape[-1]))
    return prefix, spatial


def merge_tokens(prefix, spatial, as_map):
    """Inverse of `split_tokens` for the (possibly pooled) `spatial` map."""
    if as_map:
        return spatial
    _, height, width, channels = spatial.shape
    tokens = ops.reshape(spatial, (-1, height * width, channels))
    return tokens if prefix is None else ops.concatenate([ops.cast(prefix, tokens.dtype), tokens], axis=1)


def token_layout(layer, input_shape):
    """Reads `(feature_size, is_map)` from an input shape: a map `(batch, h, w, c)` (no class
    token) or a sequence `(batch, prefix + h * w, c)` whose map size is `layer.feature_size`."""
    name = type(layer).__name__
    if len(input_shape) == 4:
        if layer.has_class_token:
            raise ValueError(
                f"{name} '{layer.name}': has_class_token=True needs token sequences (batch, 1 + h * w, channels) "
                f"and feature_size=(h, w), got a map of shape {tuple(input_shape)}."
            )
        size = tuple(input_shape[1:3])
        if None in size:
            raise ValueError(f"{name} '{layer.name}' needs a static map size, got input shape {tuple(input_shape)}.")
        if layer.feature_size is not None and tuple(layer.feature_size) != size:
            raise ValueError(f"{name} '{layer.name}': feature_size={layer.feature_size} but the input map is {size}.")
        return size, True
    if len(input_shape) != 3:
        raise ValueError(f"{name} '{layer.name}' takes (batch, h, w, c) maps or (batch, tokens, c) sequences, got {tuple(input_shape)}.")
    if layer.feature_size is None:
        raise ValueError(
            f"{name} '{layer.name}': a token sequence {tuple(input_shape)} needs feature_size=(h, w), the map its "
            "spatial tokens form (or pass a (batch, h, w, c) map)."
        )
    height, width = layer.feature_size
    expected = int(layer.has_class_token) + height * width
    if input_shape[1] is not None and input_shape[1] != expected:
        raise ValueError(
            f"{name} '{layer.name}': {input_shape[1]} tokens, but feature_size={tuple(layer.feature_size)} and "
            f"has_class_token={layer.has_class_token} make {expected}."
        )
    return (height, width), False


def query_output_shape(layer, input_shape, output_dim):
    """The shape of `layer`'s (attention or block) input after its query pooling, `output_dim` wide."""
    (height, width), as_map = token_layout(layer, input_shape)
    dim = output_dim or input_shape[-1]
    if np.prod(layer.kernel_q) > 1 or np.prod(layer.stride_q) > 1:
        height, width = (pooled_size(n, k, s) for n, k, s in zip((height, width), layer.kernel_q, layer.stride_q))
    if as_map:
        return (input_shape[0], height, width, dim)
    return (input_shape[0], int(layer.has_class_token) + height * width, dim)


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiScaleAttention(keras.layers.Layer):
    """Multi-head pooling attention (timm's `MultiScaleAttention`, pooling after the qkv projection).

    `qkv = Linear(x)`; q, k and v are each pooled over the token map (kernel `kernel_q` /
    `kernel_kv`, stride `stride_q` / `stride_kv`, padding `kernel // 2`): in "conv" mode a
    depthwise convolution of the head width shared by all heads (no bias) then a LayerNorm
    over the head width; in "max" / "avg" mode a pool. A pool of kernel 1 and stride 1 is
    skipped. Attention is `softmax(q k^T / sqrt(d) + rel_pos) v`, plus the pooled q with
    `residual_pooling`, then an output projection. A class token is carried around the
    pooling unpooled (and normalized with the pooled tokens).

    Args:
        num_heads: attention heads.
        output_dim: width of q, k, v and the output (default: the input width).
        qkv_bias: bias on the qkv projection.
        pool_mode: "conv", "max" or "avg".
        kernel_q, kernel_kv, stride_q, stride_kv: pooling kernels and strides, ints or pairs.
        use_rel_pos: MViTv2's decomposed relative positions: `rel_pos_h` and `rel_pos_w`,
            each `(2 * max(q_size, kv_size) - 1, head_dim)` along its axis, sized from the
            input map when built; the query-key distance is measured in the finer grid.
        residual_pooling: add the pooled queries to the attention output (MViTv2). With a class
            token its query is added too, as timm does (the official code adds the spatial ones only).
        has_class_token: the input sequence starts with a class token.
        feature_size: `(h, w)` of the spatial tokens, needed for sequence inputs.
        layer_norm_epsilon: epsilon of the pooling norms (1e-6).

    Shape: `(batch, h, w, channels)` -> `(batch, h', w', output_dim)`, or
        `(batch, class_token + h * w, channels)` -> `(batch, class_token + h' * w', output_dim)`,
        where `h' = floor((h + 2 * (k // 2) - k) / s) + 1` for the query pool.
    """

    def __init__(
        self,
        num_heads,
        output_dim=None,
        qkv_bias=True,
        pool_mode="conv",
        kernel_q=(3, 3),
        kernel_kv=(3, 3),
        stride_q=(1, 1),
        stride_kv=(1, 1),
        use_rel_pos=True,
        residual_pooling=True,
        has_class_token=False,
        feature_size=None,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_pool_mode(pool_mode, f"MultiScaleAttention '{self.name}'")
        self.num_heads = num_heads
        self.output_dim = output_dim
        self.qkv_bias = qkv_bias
        self.pool_mode = pool_mode
        self.kernel_q, self.kernel_kv = pair(kernel_q, "kernel_q"), pair(kernel_kv, "kernel_kv")
        self.stride_q, self.stride_kv = pair(stride_q, "stride_q"), pair(stride_kv, "stride_kv")
        self.use_rel_pos = use_rel_pos
        self.residual_pooling = residual_pooling
        self.has_class_token = has_class_token
        self.feature_size = None if feature_size is None else pair(feature_size, "feature_size")
        self.layer_norm_epsilon = layer_norm_epsilon
        # Pools of kernel 1 and stride 1 are skipped (the reference code's rule).
        self.pools_q = bool(np.prod(self.kernel_q) > 1 or np.prod(self.stride_q) > 1)
        self.pools_kv = bool(np.prod(self.kernel_kv) > 1 or np.prod(self.stride_kv) > 1)
        self.pool_q = self.pool_k = self.pool_v = self.norm_q = self.norm_k = self.norm_v = None

    def build(self, input_shape):
        (height, width), _ = token_layout(self, input_shape)
        channels = input_shape[-1]
        dim = self.output_dim or channels
        if dim % self.num_heads:
            raise ValueError(
                f"MultiScaleAttention '{self.name}': the width {dim} is not divisible by num_heads={self.num_heads}."
            )
        self.dim, self.head_dim = dim, dim // self.num_heads
        self.input_size = (height, width)
        self.q_size = self._pooled(self.input_size, self.pools_q, self.kernel_q, self.stride_q)
        self.kv_size = self._pooled(self.input_size, self.pools_kv, self.kernel_kv, self.stride_kv)
        if min(*self.q_size, *self.kv_size) < 1:
            raise ValueError(f"MultiScaleAttention '{self.name}': a {height}x{width} map is too small for its strides.")
        policy, dense = self.dtype_policy, keras.initializers.TruncatedNormal(stddev=0.02)
        tokens = input_shape[1] * input_shape[2] if len(input_shape) == 4 else input_shape[1]
        self.qkv = keras.layers.Dense(3 * dim, use_bias=self.qkv_bias, kernel_initializer=dense, dtype=policy, name="qkv")
        self.qkv.build((None, tokens, channels))
        self.projection = keras.layers.Dense(dim, kernel_initializer=dense, dtype=policy, name="projection")
        self.projection.build((None, None, dim))
        for part in "qkv":  # conv mode: pool_q / norm_q, pool_k / norm_k, pool_v / norm_v
            pools = self.pools_q if part == "q" else self.pools_kv
            if not pools or self.pool_mode != "conv":
                continue
            kernel = self.kernel_q if part == "q" else self.kernel_kv
            setattr(self, f"pool_{part}", self.add_weight(shape=(*kernel, self.head_dim, 1), name=f"pool_{part}"))
            norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=policy, name=f"norm_{part}")
            norm.build((None, None, None, self.head_dim))
            setattr(self, f"norm_{part}", norm)
        if self.use_rel_pos:
            tables = [2 * max(q, k) - 1 for q, k in zip(self.q_size, self.kv_size)]
            init = keras.initializers.TruncatedNormal(stddev=0.02)
            self.rel_pos_h = self.add_weight(shape=(tables[0], self.head_dim), initializer=init, name="rel_pos_h")
            self.rel_pos_w = self.add_weight(shape=(tables[1], self.head_dim), initializer=init, name="rel_pos_w")
            self.rel_index_h = device_constant(relative_position_index(self.q_size[0], self.kv_size[0]))
            self.rel_index_w = device_constant(relative_position_index(self.q_size[1], self.kv_size[1]))
        self.built = True

    @staticmethod
    def _pooled(size, pools, kernel, stride):
        if not pools:
            return tuple(size)
        return tuple(pooled_size(n, k, s) for n, k, s in zip(size, kernel, stride))

    def _pool(self, tokens, part):
        """q, k or v `(batch, tokens, dim)` pooled and normalized: `(batch, heads, tokens', head_dim)`."""
        pools = self.pools_q if part == "q" else self.pools_kv
        prefix_count = int(self.has_class_token)
        if pools:
            prefix, spatial = split_tokens(tokens, self.input_size, prefix_count)
            kernel = self.kernel_q if part == "q" else self.kernel_kv
            stride = self.stride_q if part == "q" else self.stride_kv
            conv_kernel = None
            if self.pool_mode == "conv":  # one depthwise kernel of the head width, shared by the heads
                conv_kernel = ops.tile(ops.cast(getattr(self, f"pool_{part}"), spatial.dtype), (1, 1, self.num_heads, 1))
            spatial = spatial_pool(spatial, self.pool_mode, kernel, stride, conv_kernel)
            tokens = merge_tokens(prefix, spatial, as_map=False)
        tokens = ops.reshape(tokens, (-1, tokens.shape[1], self.num_heads, self.head_dim))
        norm = getattr(self, f"norm_{part}")
        if norm is not None:
            tokens = norm(tokens)
        return ops.transpose(tokens, (0, 2, 1, 3))

    def _relative_positions(self, q):
        """`(batch, heads, q_h * q_w, kv_h * kv_w)` decomposed relative position logits of the spatial queries."""
        (q_h, q_w), (k_h, k_w) = self.q_size, self.kv_size
        spatial = q[:, :, int(self.has_class_token):]
        spatial = ops.reshape(spatial, (-1, self.num_heads, q_h, q_w, self.head_dim))
        table_h = ops.take(ops.cast(self.rel_pos_h, q.dtype), self.rel_index_h, axis=0)  # (q_h, k_h, d)
        table_w = ops.take(ops.cast(self.rel_pos_w, q.dtype), self.rel_index_w, axis=0)  # (q_w, k_w, d)
        rel_h = ops.einsum("bnhwc,hkc->bnhwk", spatial, table_h)
        rel_w = ops.einsum("bnhwc,wkc->bnhwk", spatial, table_w)
        bias = ops.expand_dims(rel_h, -1) + ops.expand_dims(rel_w, -2)  # (b, n, q_h, q_w, k_h, k_w)
        return ops.reshape(bias, (-1, self.num_heads, q_h * q_w, k_h * k_w))

    def call(self, inputs):
        as_map = len(inputs.shape) == 4
        tokens = merge_tokens(None, inputs, as_map=False) if as_map else inputs
        q, k, v = ops.split(self.qkv(tokens), 3, axis=-1)
        q, k, v = (self._pool(t, part) for t, part in ((q, "q"), (k, "k"), (v, "v")))
        logits = ops.cast(ops.matmul(q * ops.cast(self.head_dim**-0.5, q.dtype), ops.transpose(k, (0, 1, 3, 2))), "float32")
        if self.use_rel_pos:
            bias = ops.cast(self._relative_positions(q), "float32")
            if self.has_class_token:  # the class token's rows and columns get no position
                bias = ops.pad(bias, ((0, 0), (0, 0), (1, 0), (1, 0)))
            logits = logits + bias
        weights = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
        x = ops.matmul(weights, v)
        if self.residual_pooling:
            x = x + q
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, x.shape[2], self.dim))
        x = self.projection(x)
        if as_map:
            return ops.reshape(x, (-1, *self.q_size, self.dim))
        return x

    def compute_output_shape(self, input_shape):
        return query_output_shape(self, input_shape, self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "output_dim": self.output_dim,
                "qkv_bias": self.qkv_bias,
                "pool_mode": self.pool_mode,
                "kernel_q": self.kernel_q,
                "kernel_kv": self.kernel_kv,
                "stride_q": self.stride_q,
                "stride_kv": self.stride_kv,
                "use_rel_pos": self.use_rel_pos,
                "residual_pooling": self.residual_pooling,
                "has_class_token": self.has_class_token,
                "feature_size": self.feature_size,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
