"""Non-local block (Wang et al., CVPR 2018) for sequences, images and videos."""

import keras
from keras import ops

NON_LOCAL_MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")

# Key/value max pooling for `sub_sample=True`, by input rank: 2 over T for
# sequences, 2x2 over (H, W) for images, 1x2x2 (H, W only) for videos.
_POOL_SIZES = {3: (2,), 4: (2, 2), 5: (1, 2, 2)}


@keras.saving.register_keras_serializable(package="keras_vit")
class NonLocalBlock(keras.layers.Layer):
    """Non-local block: `z = x + BN(W_z y)`, `y_i = sum_j f(x_i, x_j) g(x_j)`.

    Every position attends to every (optionally max-pooled) position of the
    same sample. `theta`, `phi`, `g` and `W_z` are 1x1 convolutions, written as
    `Dense` layers over the channel axis (the same map, and the same weights
    layout as a 1x1 conv kernel without its two leading unit axes).

    Pairwise functions `f` (`mode`):
        "embedded_gaussian": `softmax_j(theta_i . phi_j)`.
        "gaussian": `softmax_j(x_i . x_j)` on the raw input; no `theta`/`phi`
            are created, and `sub_sample` pools `x` itself for the keys.
        "dot_product": `theta_i . phi_j / N`, N the number of key positions.
        "concatenation": `ReLU(w . [theta_i, phi_j]) / N`, `w` a learned
            `(2 * bottleneck, 1)` kernel without bias (as the reference
            implementation's `Conv2d(2 * inter, 1, 1, bias=False)`). Computed as
            `w_theta . theta_i + w_phi . phi_j`, a sum of two broadcast vectors,
            so the `(Nq, Nk, 2 * bottleneck)` concatenation is never formed.

    A fresh block is the identity: the batch norm's gamma starts at 0 or, with
    `use_batch_norm=False`, `W_z`'s kernel and bias do. The batch norm uses
    PyTorch's defaults (momentum 0.1, i.e. Keras `momentum=0.9`; epsilon 1e-5)
    like the reference implementations. The softmax runs in float32 under
    mixed precision.

    Memory: the pairwise matrix is `(batch, Nq, Nk)` with Nq the number of
    positions (T, H*W or T*H*W) and Nk = Nq, or about Nq / 4 for images and
    videos and Nq / 2 for sequences with `sub_sample`.

    Args:
        mode: one of `NON_LOCAL_MODES`.
        bottleneck_channels: width of `theta`, `phi` and `g`; default C // 2.
        sub_sample: max-pool the keys and values (`phi` and `g` outputs; `x` for
            the keys in "gaussian" mode) with pool 2 over T (sequences), 2x2
            over (H, W) (images) or 1x2x2 over (T, H, W) (videos), stride equal
            to the pool. Odd sizes drop the last row/column/frame (floor, like
            `torch.nn.MaxPool2d`); pooled axes must have size >= 2.
        use_batch_norm: batch-normalize `W_z y` before the residual sum.

    Shape: `(batch, T, C)`, `(batch, H, W, C)` or `(batch, T, H, W, C)` in,
    the same shape out.
    """

    def __init__(
        self,
        mode="embedded_gaussian",
        bottleneck_channels=None,
        sub_sample=False,
        use_batch_norm=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in NON_LOCAL_MODES:
            raise ValueError(
                f"NonLocalBlock: unknown mode {mode!r}. Use one of {', '.join(repr(m) for m in NON_LOCAL_MODES)}."
            )
        if bottleneck_channels is not None and (
            not isinstance(bottleneck_channels, int) or isinstance(bottleneck_channels, bool) or bottleneck_channels < 1
        ):
            raise ValueError(
                f"NonLocalBlock: bottleneck_channels must be a positive int or None (C // 2), "
                f"got {bottleneck_channels!r}."
            )
        self.mode = mode
        self.bottleneck_channels = bottleneck_channels
        self.sub_sample = bool(sub_sample)
        self.use_batch_norm = bool(use_batch_norm)

    def build(self, input_shape):
        rank = len(input_shape)
        if rank not in _POOL_SIZES:
            raise ValueError(
                f"NonLocalBlock expects (batch, T, C), (batch, H, W, C) or (batch, T, H, W, C) input, "
                f"got rank {rank} shape {tuple(input_shape)}."
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("NonLocalBlock needs a known channel count (the last axis of the input).")
        bottleneck = self.bottleneck_channels or channels // 2
        if bottleneck < 1:
            raise ValueError(
                f"NonLocalBlock: {channels} input channel(s) give a bottleneck of C // 2 = 0. "
                "Use at least 2 channels or pass bottleneck_channels."
            )
        if self.sub_sample:
            pool = _POOL_SIZES[rank]
            for axis, size in zip(range(1, rank - 1), input_shape[1:-1]):
                if pool[axis - 1] > 1 and size is not None and size < pool[axis - 1]:
                    raise ValueError(
                        f"NonLocalBlock: sub_sample pools axis {axis} by {pool[axis - 1]}, but its size is {size}. "
                        "Use sub_sample=False or a larger input."
                    )
        self.bottleneck = bottleneck
        self.pool_size = _POOL_SIZES[rank]

        def dense(units, name, **kw):
            layer = keras.layers.Dense(units, dtype=self.dtype_policy, name=name, **kw)
            layer.build(input_shape)
            return layer

        if self.mode != "gaussian":
            self.theta = dense(bottleneck, "theta")
            self.phi = dense(bottleneck, "phi")
        self.g = dense(bottleneck, "g")
        if self.mode == "concatenation":
            self.concat_kernel = self.add_weight(
                shape=(2 * bottleneck, 1), initializer="glorot_uniform", name="concat_kernel"
            )
        bottleneck_shape = tuple(input_shape[:-1]) + (bottleneck,)
        if self.use_batch_norm:
            self.w_z = keras.layers.Dense(channels, dtype=self.dtype_policy, name="w_z")
            self.w_z.build(bottleneck_shape)
            self.batch_norm = keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-5, gamma_initializer="zeros", dtype=self.dtype_policy, name="batch_norm"
            )
            self.batch_norm.build(tuple(input_shape))
        else:
            self.w_z = keras.layers.Dense(
                channels, kernel_initializer="zeros", dtype=self.dtype_policy, name="w_z"
            )
            self.w_z.build(bottleneck_shape)
        self.built = True

    def _pool(self, x):
        if not self.sub_sample:
            return x
        return ops.max_pool(x, self.pool_size, strides=self.pool_size, padding="valid", data_format="channels_last")

    def _flatten(self, x):
        """`(batch, ..., channels)` -> `(batch, positions, channels)`."""
        return ops.reshape(x, (ops.shape(x)[0], -1, x.shape[-1]))

    def call(self, inputs, training=False):
        x = inputs
        values = self._flatten(self._pool(self.g(x)))  # (B, Nk, bottleneck)
        if self.mode == "gaussian":
            queries, keys = self._flatten(x), self._flatten(self._pool(x))
        else:
            queries, keys = self._flatten(self.theta(x)), self._flatten(self._pool(self.phi(x)))
        pairwise = self._pairwise(queries, keys)  # (B, Nq, Nk), float32
        y = ops.matmul(ops.cast(pairwise, values.dtype), values)  # (B, Nq, bottleneck)
        y = ops.reshape(y, tuple(ops.shape(x)[:-1]) + (self.bottleneck,))
        z = self.w_z(y)
        if self.use_batch_norm:
            z = self.batch_norm(z, training=training)
        return x + z

    def _pairwise(self, queries, keys):
        """`f(i, j)` as a float32 `(batch, Nq, Nk)` tensor."""
        if self.mode == "concatenation":
            kernel = ops.cast(self.concat_kernel, queries.dtype)
            query_part = ops.matmul(queries, kernel[: self.bottleneck])  # (B, Nq, 1)
            key_part = ops.matmul(keys, kernel[self.bottleneck :])  # (B, Nk, 1)
            logits = ops.cast(query_part, "float32") + ops.transpose(ops.cast(key_part, "float32"), (0, 2, 1))
            return ops.relu(logits) / ops.cast(ops.shape(keys)[1], "float32")
        logits = ops.cast(ops.matmul(queries, ops.transpose(keys, (0, 2, 1))), "float32")
        if self.mode == "dot_product":
            return logits / ops.cast(ops.shape(keys)[1], "float32")
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "bottleneck_channels": self.bottleneck_channels,
                "sub_sample": self.sub_sample,
                "use_batch_norm": self.use_batch_norm,
            }
        )
        return config
