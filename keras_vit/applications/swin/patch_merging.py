"""2x2 patch merging between Swin stages."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchMerging(keras.layers.Layer):
    """Concatenates each 2x2 neighbourhood (4C), normalizes and projects to 2C.

    Odd heights/widths are zero-padded at the bottom/right first. The
    concatenation order is (0,0), (1,0), (0,1), (1,1) as in the reference code.

    Args:
        norm_after: Swin-V2 order (reduce, then normalize) instead of V1's
            (normalize, then reduce).
        layer_norm_epsilon: LayerNorm epsilon (1e-5).

    Shape: `(batch, h, w, C)` in, `(batch, ceil(h/2), ceil(w/2), 2C)` out.
    """

    def __init__(self, norm_after=False, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.norm_after = norm_after
        self.layer_norm_epsilon = layer_norm_epsilon
        self.norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="norm")

    def build(self, input_shape):
        channels = input_shape[-1]
        self.reduction = keras.layers.Dense(2 * channels, use_bias=False, dtype=self.dtype_policy, name="reduction")
        self.reduction.build((None, 4 * channels))
        self.norm.build((None, 2 * channels if self.norm_after else 4 * channels))
        self.built = True

    def call(self, inputs):
        _, height, width, _ = inputs.shape
        if height % 2 or width % 2:
            inputs = ops.pad(inputs, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
        x = ops.concatenate(
            [inputs[:, 0::2, 0::2], inputs[:, 1::2, 0::2], inputs[:, 0::2, 1::2], inputs[:, 1::2, 1::2]], axis=-1
        )
        if self.norm_after:
            return self.norm(self.reduction(x))
        return self.reduction(self.norm(x))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, -(-height // 2), -(-width // 2), 2 * channels)

    def get_config(self):
        config = super().get_config()
        config.update({"norm_after": self.norm_after, "layer_norm_epsilon": self.layer_norm_epsilon})
        return config
