"""Relative position bias of window attention (Swin)."""

import keras
import numpy as np
from keras import ops

from keras_vit.layers.constant import device_constant
from keras_vit.layers.patch_embedding import interpolation_matrix


def relative_position_index(window_size):
    """`(M*M, M*M)` int array: row-major index into the `(2M-1)^2` bias table
    of the offset between every pair of positions in an M x M window."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")).reshape(2, -1)
    offsets = coords[:, :, None] - coords[:, None, :] + (window_size - 1)  # (2, M^2, M^2), in [0, 2M-2]
    return (offsets[0] * (2 * window_size - 1) + offsets[1]).astype("int32")


@keras.saving.register_keras_serializable(package="keras_vit")
class RelativePositionBias(keras.layers.Layer):
    """A learned bias per head for every relative offset inside an M x M window.

    The table holds `(2M - 1)^2 x heads` entries (Liu et al., 2021); the index
    that expands it to an `(M^2, M^2)` bias per head is computed once, in NumPy,
    when the layer is created.

    Args:
        window_size: M.
        num_heads: attention heads.

    `relative_bias()` returns the `(heads, M^2, M^2)` bias.
    """

    def __init__(self, window_size, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.window_size = window_size
        self.num_heads = num_heads
        self.index = device_constant(relative_position_index(window_size).reshape(-1))

    def build(self, input_shape=None):
        self.table = self.add_weight(
            shape=((2 * self.window_size - 1) ** 2, self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="relative_position_bias_table",
        )
        self.built = True

    def relative_bias(self):
        """The bias `(heads, M^2, M^2)` gathered from the table."""
        area = self.window_size * self.window_size
        bias = ops.take(self.table, self.index, axis=0)
        return ops.transpose(ops.reshape(bias, (area, area, self.num_heads)), (2, 0, 1))

    def set_table(self, table, method="bicubic"):
        """Loads a table, resizing it when it was trained for another window size."""
        self.table.assign(resize_bias_table(table, self.window_size, method))

    def get_config(self):
        config = super().get_config()
        config.update({"window_size": self.window_size, "num_heads": self.num_heads})
        return config


def log_spaced_offsets(window_size, pretrained_window_size=0):
    """`((2M-1)^2, 2)` float32 relative offsets of an M x M window, row-major, scaled
    to [-8, 8] by `M - 1` (or `pretrained_window_size - 1`) and log-spaced:
    `sign(x) * log2(|x| + 1) / log2(8)` (Swin-V2)."""
    span = np.arange(-(window_size - 1), window_size, dtype=np.float64)
    offsets = np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2)
    reference = pretrained_window_size if pretrained_window_size > 0 else window_size
    if reference > 1:
        offsets = offsets / (reference - 1)
    offsets = offsets * 8.0
    return (np.sign(offsets) * np.log2(np.abs(offsets) + 1.0) / np.log2(8.0)).astype("float32")


@keras.saving.register_keras_serializable(package="keras_vit")
class ContinuousPositionBias(keras.layers.Layer):
    """Swin-V2's position bias: a small MLP of the (log-spaced) relative offset.

    `16 * sigmoid(MLP(offset))` per head, with the MLP `2 -> hidden_dim (ReLU)
    -> heads (no bias)`. Because the bias is a function of the offset rather
    than a table entry, the same weights serve any window size.

    Args:
        window_size: M.
        num_heads: attention heads.
        pretrained_window_size: the window the weights were trained with, when
            they are used at a larger one (offsets are scaled by it); 0 means M.
        hidden_dim: width of the MLP (512).

    `relative_bias()` returns the `(heads, M^2, M^2)` bias.
    """

    def __init__(self, window_size, num_heads, pretrained_window_size=0, hidden_dim=512, **kwargs):
        super().__init__(**kwargs)
        self.window_size = window_size
        self.num_heads = num_heads
        self.pretrained_window_size = pretrained_window_size
        self.hidden_dim = hidden_dim
        self.index = device_constant(relative_position_index(window_size).reshape(-1))
        self.offsets = device_constant(log_spaced_offsets(window_size, pretrained_window_size))
        self.hidden = keras.layers.Dense(hidden_dim, activation="relu", dtype=self.dtype_policy, name="hidden")
        self.output_projection = keras.layers.Dense(num_heads, use_bias=False, dtype=self.dtype_policy, name="output")

    def build(self, input_shape=None):
        self.hidden.build((None, 2))
        self.output_projection.build((None, self.hidden_dim))
        self.built = True

    def relative_bias(self):
        """The bias `(heads, M^2, M^2)`, in (0, 16)."""
        table = self.output_projection(self.hidden(ops.cast(self.offsets, self.compute_dtype)))
        area = self.window_size * self.window_size
        bias = ops.take(table, self.index, axis=0)
        bias = ops.transpose(ops.reshape(bias, (area, area, self.num_heads)), (2, 0, 1))
        return 16.0 * ops.sigmoid(bias)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "window_size": self.window_size,
                "num_heads": self.num_heads,
                "pretrained_window_size": self.pretrained_window_size,
                "hidden_dim": self.hidden_dim,
            }
        )
        return config


def resize_bias_table(table, window_size, method="bicubic"):
    """Interpolates a `((2m-1)^2, heads)` table to `((2M-1)^2, heads)` for window M."""
    table = np.asarray(table, dtype=np.float32)
    side = int(round(np.sqrt(table.shape[0])))
    if side * side != table.shape[0]:
        raise ValueError(f"A relative position table needs (2M-1)^2 rows; got {table.shape[0]}.")
    target = 2 * window_size - 1
    if side == target:
        return table
    grid = table.reshape(side, side, -1)
    rows, cols = interpolation_matrix(side, target, method), interpolation_matrix(side, target, method)
    return np.einsum("ih,hwc,jw->ijc", rows, grid, cols).reshape(target * target, -1).astype(np.float32)
