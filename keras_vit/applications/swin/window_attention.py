"""Self-attention inside (shifted) non-overlapping windows (Swin)."""

import keras
import numpy as np
from keras import ops

from keras_vit.applications.swin.cosine_attention import CosineAttention
from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.constant import device_constant
from keras_vit.layers.position_bias import ContinuousPositionBias, RelativePositionBias

# Logit offset between tokens of different shift regions (the reference value).
_REGION_MASK_VALUE = -100.0


def window_partition(x, window_size):
    """`(B, H, W, C)` -> `(B * H/M * W/M, M * M, C)`; H and W multiples of M."""
    _, height, width, channels = x.shape
    m = window_size
    x = ops.reshape(x, (-1, height // m, m, width // m, m, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, m * m, channels))


def window_reverse(windows, window_size, height, width):
    """Inverse of `window_partition`: `(B * nW, M * M, C)` -> `(B, H, W, C)`."""
    m, channels = window_size, windows.shape[-1]
    x = ops.reshape(windows, (-1, height // m, width // m, m, m, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, channels))


def shifted_window_mask(height, width, window_size, shift_size):
    """`(nW, M*M, M*M)` additive mask (0 or -100) keeping the regions a cyclic shift
    brings together from attending to each other. NumPy, computed once per shape."""
    def regions(size):
        index = np.arange(size)
        return (index >= size - window_size).astype(int) + (index >= size - shift_size).astype(int)

    labels = (regions(height)[:, None] * 3 + regions(width)[None, :]).astype("float32")
    m = window_size
    labels = labels.reshape(height // m, m, width // m, m).transpose(0, 2, 1, 3).reshape(-1, m * m)
    different = labels[:, None, :] != labels[:, :, None]
    return np.where(different, _REGION_MASK_VALUE, 0.0).astype("float32")


@keras.saving.register_keras_serializable(package="keras_vit")
class WindowAttention(keras.layers.Layer):
    """Multi-head self-attention within M x M windows, optionally shifted by `shift_size`.

    The feature map is padded at the bottom/right to a multiple of M, rolled by
    `-shift_size` (shifted windows), split into windows with reshapes, attended
    with a learned relative position bias (plus the region mask when shifted),
    and put back. The mask is built once per input shape, in `build`.

    Args:
        num_heads: attention heads.
        window_size: M. Clamped to the feature map when the map is smaller, in
            which case the shift is dropped (as the reference implementation does).
        shift_size: 0 or, typically, M // 2.
        qkv_bias, attention_dropout_rate, projection_dropout_rate: as in
            `MultiHeadSelfAttention`.
        mask_padding: also mask the zero tokens added to reach a multiple of M.
            False matches the reference implementations, which attend to them.
        cosine_attention: Swin-V2's scaled cosine attention (`CosineAttention`)
            instead of scaled dot products.
        position_bias: "table" (Swin's learned `(2M-1)^2 x heads` table) or
            "continuous" (Swin-V2's `ContinuousPositionBias` MLP).
        pretrained_window_size: for "continuous", the window the weights were
            trained with when it differs from M (0: the same).

    Shape: `(batch, height, width, channels)` in and out.
    """

    def __init__(
        self,
        num_heads,
        window_size=7,
        shift_size=0,
        qkv_bias=True,
        attention_dropout_rate=0.0,
        projection_dropout_rate=0.0,
        mask_padding=False,
        cosine_attention=False,
        position_bias="table",
        pretrained_window_size=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size={window_size}), got {shift_size}.")
        if position_bias not in ("table", "continuous"):
            raise ValueError(f"position_bias must be 'table' or 'continuous', got {position_bias!r}.")
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.qkv_bias = qkv_bias
        self.attention_dropout_rate = attention_dropout_rate
        self.projection_dropout_rate = projection_dropout_rate
        self.mask_padding = mask_padding
        self.cosine_attention = cosine_attention
        self.position_bias = position_bias
        self.pretrained_window_size = pretrained_window_size
        attention_class = CosineAttention if cosine_attention else MultiHeadSelfAttention
        self.attention = attention_class(
            num_heads,
            qkv_bias=qkv_bias,
            attention_dropout_rate=attention_dropout_rate,
            projection_dropout_rate=projection_dropout_rate,
            fused=False,  # 49-token windows: batched matmuls beat the fused kernel (see MultiHeadSelfAttention)
            dtype=self.dtype_policy,
            name="attention",
        )

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if height is None or width is None:
            raise ValueError("WindowAttention needs a static feature-map size to build its masks.")
        self.effective_window = min(self.window_size, height, width)
        self.effective_shift = 0 if min(height, width) <= self.window_size else self.shift_size
        m = self.effective_window
        self.padded_size = (-(-height // m) * m, -(-width // m) * m)
        if self.position_bias == "continuous":
            self.relative_position_bias = ContinuousPositionBias(
                m, self.num_heads, self.pretrained_window_size, dtype=self.dtype_policy, name="continuous_position_bias"
            )
        else:
            self.relative_position_bias = RelativePositionBias(
                m, self.num_heads, dtype=self.dtype_policy, name="relative_position_bias"
            )
        self.relative_position_bias.build()
        self.attention.build((None, m * m, channels))
        self.window_mask = self._window_mask(height, width)
        self.built = True

    def _window_mask(self, height, width):
        """`(nW, 1, M*M, M*M)` additive mask for shifted regions and padding, or None."""
        m, (padded_h, padded_w) = self.effective_window, self.padded_size
        mask = np.zeros(((padded_h // m) * (padded_w // m), m * m, m * m), "float32")
        if self.effective_shift:
            mask += shifted_window_mask(padded_h, padded_w, m, self.effective_shift)
        if self.mask_padding and (padded_h, padded_w) != (height, width):
            valid = np.zeros((padded_h, padded_w), "float32")
            valid[:height, :width] = 1.0
            valid = np.roll(valid, (-self.effective_shift, -self.effective_shift), axis=(0, 1))
            valid = valid.reshape(padded_h // m, m, padded_w // m, m).transpose(0, 2, 1, 3).reshape(-1, 1, m * m)
            mask = mask + np.where(valid > 0, 0.0, -1e4).astype("float32")
        return device_constant(mask[:, None]) if mask.any() else None

    def call(self, inputs, training=False, return_attention_scores=False):
        """`(batch, height, width, channels)` -> the same; with `return_attention_scores` also the
        softmax weights of every window, `(batch * windows, heads, M^2, M^2)` (windows of the
        padded, shifted map in `window_partition` order)."""
        _, height, width, channels = inputs.shape
        m, shift = self.effective_window, self.effective_shift
        padded_h, padded_w = self.padded_size
        x = inputs
        if (padded_h, padded_w) != (height, width):
            x = ops.pad(x, ((0, 0), (0, padded_h - height), (0, padded_w - width), (0, 0)))
        if shift:
            x = ops.roll(x, shift=(-shift, -shift), axis=(1, 2))
        windows = window_partition(x, m)
        bias = self.relative_position_bias.relative_bias()[None]  # (1, heads, M^2, M^2)
        grouped = self.window_mask is not None
        if grouped:
            bias = ops.cast(self.window_mask, bias.dtype) + bias  # (nW, heads, M^2, M^2), one per window
        windows = self.attention(
            windows, attention_bias=bias, grouped_bias=grouped, training=training,
            **({"return_attention_scores": True} if return_attention_scores else {}),
        )
        if return_attention_scores:
            windows, scores = windows
        x = window_reverse(windows, m, padded_h, padded_w)
        if shift:
            x = ops.roll(x, shift=(shift, shift), axis=(1, 2))
        if return_attention_scores:
            return x[:, :height, :width, :], scores
        return x[:, :height, :width, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "window_size": self.window_size,
                "shift_size": self.shift_size,
                "qkv_bias": self.qkv_bias,
                "attention_dropout_rate": self.attention_dropout_rate,
                "projection_dropout_rate": self.projection_dropout_rate,
                "mask_padding": self.mask_padding,
                "cosine_attention": self.cosine_attention,
                "position_bias": self.position_bias,
                "pretrained_window_size": self.pretrained_window_size,
            }
        )
        return config
