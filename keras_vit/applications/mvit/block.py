"""The MViT block (pooling attention with pooled shortcuts) and MViT's patch embedding."""

import keras
from keras import ops

from keras_vit.applications.mvit.attention import (
    MultiScaleAttention,
    check_pool_mode,
    merge_tokens,
    pair,
    query_output_shape,
    split_tokens,
    spatial_pool,
    token_layout,
)
from keras_vit.layers.drop_path import StochasticDepth
from keras_vit.layers.mlp import Mlp
from keras_vit.layers.preprocessing import check_channels


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiScaleBlock(keras.layers.Layer):
    """The MViT / MViTv2 block (timm's `MultiScaleBlock`).

    `x = shortcut(x) + drop_path(attention(norm1(x)))`, then
    `x = shortcut'(x) + drop_path(mlp(norm2(x)))`. At a query-stride block the first
    shortcut is max-pooled (kernel `s + 1` where `s > 1`, stride `s`, padding `kernel // 2`).
    When the width changes, the shortcut that crosses the change is `Linear(norm(x))`
    instead of `x`: around attention with `expand_attn` (the attention outputs `dim_out`,
    MViTv2), otherwise around the MLP (the MLP outputs `dim_out`, MViTv1 and MViTv2-L).
    The class token, if any, skips the pooling.

    Args:
        num_heads: attention heads.
        dim_out: output width (default: the input width).
        mlp_ratio: MLP hidden width over the attention width (4).
        expand_attn: grow the width inside attention rather than in the MLP.
        qkv_bias, pool_mode, kernel_q, kernel_kv, stride_q, stride_kv, use_rel_pos,
            residual_pooling, has_class_token, feature_size: as in `MultiScaleAttention`.
        drop_path_rate: stochastic depth of both branches.
        layer_norm_epsilon: epsilon of every LayerNorm (1e-6).

    Shape: `(batch, h, w, channels)` -> `(batch, h', w', dim_out)`, or
        `(batch, class_token + h * w, channels)` -> `(batch, class_token + h' * w', dim_out)`.
    """

    def __init__(
        self,
        num_heads,
        dim_out=None,
        mlp_ratio=4.0,
        expand_attn=True,
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
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_pool_mode(pool_mode, f"MultiScaleBlock '{self.name}'")
        self.num_heads = num_heads
        self.dim_out = dim_out
        self.mlp_ratio = mlp_ratio
        self.expand_attn = expand_attn
        self.qkv_bias = qkv_bias
        self.pool_mode = pool_mode
        self.kernel_q, self.kernel_kv = pair(kernel_q, "kernel_q"), pair(kernel_kv, "kernel_kv")
        self.stride_q, self.stride_kv = pair(stride_q, "stride_q"), pair(stride_kv, "stride_kv")
        self.use_rel_pos = use_rel_pos
        self.residual_pooling = residual_pooling
        self.has_class_token = has_class_token
        self.feature_size = None if feature_size is None else pair(feature_size, "feature_size")
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.skip_kernel = tuple(s + 1 if s > 1 else s for s in self.stride_q)
        self.pools_shortcut = self.stride_q[0] * self.stride_q[1] > 1
        self.shortcut_projection = None

    def build(self, input_shape):
        self.input_size, _ = token_layout(self, input_shape)
        dim = input_shape[-1]
        dim_out = self.dim_out or dim
        attention_dim = dim_out if self.expand_attn else dim
        policy, epsilon = self.dtype_policy, self.layer_norm_epsilon
        dense = keras.initializers.TruncatedNormal(stddev=0.02)
        self.norm1 = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy, name="norm1")
        self.norm1.build(input_shape)
        self.attention = MultiScaleAttention(
            self.num_heads,
            output_dim=attention_dim,
            qkv_bias=self.qkv_bias,
            pool_mode=self.pool_mode,
            kernel_q=self.kernel_q,
            kernel_kv=self.kernel_kv,
            stride_q=self.stride_q,
            stride_kv=self.stride_kv,
            use_rel_pos=self.use_rel_pos,
            residual_pooling=self.residual_pooling,
            has_class_token=self.has_class_token,
            feature_size=self.feature_size,
            layer_norm_epsilon=epsilon,
            dtype=policy,
            name="attention",
        )
        self.attention.build(input_shape)
        attended_shape = self.attention.compute_output_shape(input_shape)
        if dim != dim_out:  # on norm1(x) with expand_attn, on norm2(x) otherwise: both `dim` wide
            self.shortcut_projection = keras.layers.Dense(dim_out, kernel_initializer=dense, dtype=policy, name="shortcut_projection")
            self.shortcut_projection.build((None, None, dim))
        self.norm2 = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy, name="norm2")
        self.norm2.build(attended_shape)
        self.mlp = Mlp(int(attention_dim * self.mlp_ratio), output_dim=dim_out, dtype=policy, name="mlp")
        self.mlp.build(attended_shape)
        self.drop_path = StochasticDepth(self.drop_path_rate, dtype=policy, name="drop_path")
        self.built = True

    def _pool_shortcut(self, x, as_map):
        if not self.pools_shortcut:
            return x
        prefix, spatial = split_tokens(x, self.input_size, int(self.has_class_token))
        spatial = spatial_pool(spatial, "max", self.skip_kernel, self.stride_q)
        return merge_tokens(prefix, spatial, as_map)

    def call(self, inputs, training=False):
        as_map = len(inputs.shape) == 4
        normed = self.norm1(inputs)
        project_attention = self.shortcut_projection is not None and self.expand_attn
        shortcut = self.shortcut_projection(normed) if project_attention else inputs
        x = self._pool_shortcut(shortcut, as_map) + self.drop_path(self.attention(normed), training=training)
        normed = self.norm2(x)
        project_mlp = self.shortcut_projection is not None and not self.expand_attn
        shortcut = self.shortcut_projection(normed) if project_mlp else x
        return shortcut + self.drop_path(self.mlp(normed, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return query_output_shape(self, input_shape, self.dim_out)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "dim_out": self.dim_out,
                "mlp_ratio": self.mlp_ratio,
                "expand_attn": self.expand_attn,
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
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class MViTPatchEmbedding(keras.layers.Layer):
    """MViT's stem: an overlapping convolution (7x7, stride 4, padding 3), and for MViTv1 a
    class token and a learned absolute position embedding.

    Args:
        hidden_dim: token width.
        kernel_size, strides, padding: the convolution (ints or pairs; symmetric zero padding).
        use_class_token: prepend a class token; the output is then a token sequence.
        use_position_embedding: add a learned absolute position embedding, which fixes the
            input size: one `(1, class_token + h * w, hidden_dim)` table (timm's `pos_embed`), or
            with `separate_position_embedding` pytorchvideo's three: `position_embedding`
            `(1, h * w, hidden_dim)`, `temporal_position_embedding` `(1, 1, hidden_dim)` (one
            frame: a vector added to every patch) and `class_position_embedding` `(1, 1, hidden_dim)`.

    Shape: `(batch, H, W, channels)` -> `(batch, h, w, hidden_dim)`, or with the class token
        `(batch, 1 + h * w, hidden_dim)`; `h = floor((H + 2 * padding - kernel) / strides) + 1`.
    """

    def __init__(self, hidden_dim, kernel_size=7, strides=4, padding=3, use_class_token=False,
                 use_position_embedding=False, separate_position_embedding=False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.kernel_size, self.strides = pair(kernel_size, "kernel_size"), pair(strides, "strides")
        self.padding = pair(padding, "padding")
        self.use_class_token = use_class_token
        self.use_position_embedding = use_position_embedding
        self.separate_position_embedding = separate_position_embedding

    def _grid(self, height, width):
        return tuple(
            (n + 2 * p - k) // s + 1 for n, p, k, s in zip((height, width), self.padding, self.kernel_size, self.strides)
        )

    def build(self, input_shape):
        height, width, self.channels = input_shape[1:]
        if self.use_position_embedding and (height is None or width is None):
            raise ValueError(
                f"MViTPatchEmbedding '{self.name}' needs a fixed image size for its position embedding, got input "
                f"shape {tuple(input_shape)}. Pass input_shape=(H, W, C)."
            )
        self.projection = keras.layers.Conv2D(
            self.hidden_dim, self.kernel_size, strides=self.strides, dtype=self.dtype_policy, name="projection"
        )
        padded = (None if height is None else height + 2 * self.padding[0], None if width is None else width + 2 * self.padding[1])
        self.projection.build((None, *padded, self.channels))
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        if self.use_class_token:
            self.class_token = self.add_weight(shape=(1, 1, self.hidden_dim), initializer=init, name="class_token")
        if self.use_position_embedding:
            self.grid_size = self._grid(height, width)
            separate, patches = self.separate_position_embedding, self.grid_size[0] * self.grid_size[1]
            tokens = patches if separate else int(self.use_class_token) + patches
            self.position_embedding = self.add_weight(shape=(1, tokens, self.hidden_dim), initializer=init, name="position_embedding")
            if separate:
                self.temporal_position_embedding = self.add_weight(
                    shape=(1, 1, self.hidden_dim), initializer=init, name="temporal_position_embedding"
                )
                if self.use_class_token:
                    self.class_position_embedding = self.add_weight(
                        shape=(1, 1, self.hidden_dim), initializer=init, name="class_position_embedding"
                    )
        self.built = True

    def call(self, images):
        check_channels(images, self.channels, self.name)
        (ph, pw) = self.padding
        x = self.projection(ops.pad(images, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else images)
        if not (self.use_class_token or self.use_position_embedding):
            return x
        _, height, width, channels = x.shape
        x = ops.reshape(x, (-1, height * width, channels))
        separate = self.use_position_embedding and self.separate_position_embedding
        if separate:
            x = x + ops.cast(self.position_embedding + self.temporal_position_embedding, x.dtype)
        if self.use_class_token:
            token = self.class_token + self.class_position_embedding if separate else self.class_token
            token = ops.broadcast_to(ops.cast(token, x.dtype), (ops.shape(x)[0], 1, channels))
            x = ops.concatenate([token, x], axis=1)
        if self.use_position_embedding and not separate:
            x = x + ops.cast(self.position_embedding, x.dtype)
        return x if self.use_class_token else ops.reshape(x, (-1, height, width, channels))

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1:3]
        grid = (None, None) if height is None or width is None else self._grid(height, width)
        if not self.use_class_token:
            return (input_shape[0], *grid, self.hidden_dim)
        return (input_shape[0], None if grid[0] is None else 1 + grid[0] * grid[1], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "use_class_token": self.use_class_token,
                "use_position_embedding": self.use_position_embedding,
                "separate_position_embedding": self.separate_position_embedding,
            }
        )
        return config
