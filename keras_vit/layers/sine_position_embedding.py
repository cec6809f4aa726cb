"""The 2-D sine position embedding of DETR, computed from a padding mask."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class SinePositionEmbedding2D(keras.layers.Layer):
    """Sine/cosine features of each pixel's (y, x) position (Carion et al., 2020).

    Positions are the cumulative sums of the mask along each axis, so padded
    pixels do not shift the positions of real ones. With `normalize` they are
    divided by the last value (`+ 1e-6`) and scaled by `scale` (2 pi), so every
    image spans the same range whatever its size. Each axis gets
    `num_features` channels, sin and cos interleaved, at frequencies
    `temperature ** (2 * (i // 2) / num_features)`; the output is
    `concat(y_features, x_features)`.

    Args:
        num_features: channels per axis (DETR: d_model / 2 = 128).
        temperature: the frequency base (10000).
        normalize: map positions to [0, scale] per image.
        scale: the normalized range (2 pi).

    Call arguments: `mask` `(batch, height, width)`, 1 on real pixels, 0 on padding.
    Returns `(batch, height, width, 2 * num_features)`, computed in float32 and cast to the
    layer's compute dtype.
    """

    def __init__(self, num_features=128, temperature=10000, normalize=True, scale=2 * math.pi, **kwargs):
        super().__init__(**kwargs)
        if num_features % 2:
            raise ValueError(f"num_features must be even (sin and cos pairs), got {num_features}.")
        self.num_features = num_features
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def call(self, mask):
        mask = ops.cast(mask, "float32")
        y_embed = ops.cumsum(mask, axis=1)
        x_embed = ops.cumsum(mask, axis=2)
        if self.normalize:
            y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * self.scale
        exponent = 2.0 * ops.floor(ops.arange(self.num_features, dtype="float32") / 2.0) / self.num_features
        frequencies = ops.power(ops.cast(self.temperature, "float32"), exponent)
        features = ops.concatenate([self._features(y_embed, frequencies), self._features(x_embed, frequencies)], axis=-1)
        return ops.cast(features, self.compute_dtype)

    def _features(self, positions, frequencies):
        angles = positions[..., None] / frequencies  # (batch, h, w, num_features)
        sin, cos = ops.sin(angles[..., 0::2]), ops.cos(angles[..., 1::2])
        interleaved = ops.stack([sin, cos], axis=-1)  # (batch, h, w, num_features / 2, 2)
        shape = ops.shape(positions)
        return ops.reshape(interleaved, (shape[0], shape[1], shape[2], self.num_features))

    def compute_output_shape(self, mask_shape):
        return tuple(mask_shape) + (2 * self.num_features,)

    def compute_output_spec(self, mask):
        return keras.KerasTensor(tuple(mask.shape) + (2 * self.num_features,), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_features": self.num_features, "temperature": self.temperature, "normalize": self.normalize, "scale": self.scale}
        )
        return config
