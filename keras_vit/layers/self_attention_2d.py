"""SAGAN self-attention over a feature map, in BigGAN's form."""

import keras
from keras import ops

from keras_vit.layers.spectral_conv import SpectralConv2D


@keras.saving.register_keras_serializable(package="keras_vit")
class SelfAttention2D(keras.layers.Layer):
    """Self-attention block of SAGAN (Zhang et al., ICML 2019) as used in BigGAN.

    Queries `f(x)` and keys `g(x)` are 1x1 convolutions to `key_channels`,
    values `h(x)` a 1x1 convolution to `value_channels`; keys and values are
    max-pooled 2x2 (stride 2) when `pool_keys`. The attention is the softmax
    over key positions of the unscaled `f_i . g_j` (computed in float32), and
    the output is `x + gamma * v(sum_j a_ij h_j)`, with `v` a 1x1 convolution
    back to C and `gamma` a learned scalar initialised to 0, so a fresh block is
    the identity. All four convolutions are `Conv2D(kernel_size=1,
    use_bias=False)`, as in BigGAN (its `SNConv2d(..., bias=False)`).

    Args:
        key_channels: width of queries and keys; default C // 8.
        value_channels: width of values; default C // 2.
        pool_keys: max-pool keys and values 2x2 (4x fewer key positions). Needs
            even H and W (a ValueError names the odd size otherwise).
        spectral_normalization: make every convolution a `SpectralConv2D`
            (kernel divided by its largest singular value on every call; one
            power iteration per training call updates its `u` vector). Keras's
            own `SpectralNormalization` is not used: it writes `W / sigma` into
            the kernel while training, a write JAX's stateless `fit` drops, so
            JAX inference would see the raw kernel.

    Memory: the attention matrix is `(batch, H*W, H*W / 4)` with `pool_keys`,
    `(batch, H*W, H*W)` without.

    Shape: `(batch, height, width, channels)` in and out.
    """

    def __init__(
        self,
        key_channels=None,
        value_channels=None,
        pool_keys=True,
        spectral_normalization=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("key_channels", key_channels), ("value_channels", value_channels)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"SelfAttention2D: {name} must be a positive int or None, got {value!r}.")
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.pool_keys = bool(pool_keys)
        self.spectral_normalization = bool(spectral_normalization)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"SelfAttention2D expects (batch, height, width, channels) input, "
                f"got rank {len(input_shape)} shape {tuple(input_shape)}."
            )
        _, height, width, channels = input_shape
        if channels is None:
            raise ValueError("SelfAttention2D needs a known channel count (the last axis of the input).")
        key_channels = self.key_channels or channels // 8
        value_channels = self.value_channels or channels // 2
        if key_channels < 1 or value_channels < 1:
            raise ValueError(
                f"SelfAttention2D: {channels} input channel(s) give key_channels = C // 8 = {channels // 8} and "
                f"value_channels = C // 2 = {channels // 2}. Use at least 8 channels or pass key_channels "
                "and value_channels."
            )
        if self.pool_keys:
            for axis, size in (("height", height), ("width", width)):
                if size is not None and size % 2:
                    raise ValueError(
                        f"SelfAttention2D: pool_keys pools 2x2, but the {axis} is {size} (odd). "
                        "Use an even size or pool_keys=False."
                    )
        self.resolved_key_channels = key_channels
        self.resolved_value_channels = value_channels

        def conv(filters, name, shape):
            conv_class = SpectralConv2D if self.spectral_normalization else keras.layers.Conv2D
            layer = conv_class(filters, 1, use_bias=False, dtype=self.dtype_policy, name=name)
            layer.build(shape)
            return layer

        self.query = conv(key_channels, "query", input_shape)  # f
        self.key = conv(key_channels, "key", input_shape)  # g
        self.value = conv(value_channels, "value", input_shape)  # h
        self.output_conv = conv(channels, "output_conv", (None, height, width, value_channels))  # v
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")
        self.built = True

    def _apply(self, conv, x, training):
        return conv(x, training=training) if self.spectral_normalization else conv(x)

    def _pool(self, x):
        if not self.pool_keys:
            return x
        return ops.max_pool(x, 2, strides=2, padding="valid", data_format="channels_last")

    def call(self, inputs, training=False):
        batch = ops.shape(inputs)[0]

        def flatten(x):
            return ops.reshape(x, (batch, -1, x.shape[-1]))

        queries = flatten(self._apply(self.query, inputs, training))  # (B, N, key_channels)
        keys = flatten(self._pool(self._apply(self.key, inputs, training)))  # (B, N', key_channels)
        values = flatten(self._pool(self._apply(self.value, inputs, training)))  # (B, N', value_channels)
        logits = ops.cast(ops.matmul(queries, ops.transpose(keys, (0, 2, 1))), "float32")
        weights = ops.cast(ops.softmax(logits, axis=-1), values.dtype)
        attended = ops.matmul(weights, values)  # (B, N, value_channels)
        attended = ops.reshape(attended, tuple(ops.shape(inputs)[:-1]) + (self.resolved_value_channels,))
        outputs = self._apply(self.output_conv, attended, training)
        return inputs + ops.cast(self.gamma, outputs.dtype) * outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_channels": self.key_channels,
                "value_channels": self.value_channels,
                "pool_keys": self.pool_keys,
                "spectral_normalization": self.spectral_normalization,
            }
        )
        return config
