"""Stochastic depth (per-sample drop path)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class StochasticDepth(keras.layers.Layer):
    """Drops the whole residual branch for a random subset of samples.

    During training each sample's input is zeroed with probability `rate` and
    the survivors are scaled by `1 / (1 - rate)`, so the expected value is
    unchanged; at inference the layer is the identity (Huang et al., 2016).

    Args:
        rate: float in [0, 1), the probability of dropping a sample's branch.
        seed: optional int seed for the random mask.

    Shape: any `(batch, ...)` in, same shape out.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(
                f"StochasticDepth rate must be in [0, 1), got {rate}. "
                "Use 0 to disable drop path."
            )
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        keep_prob = 1.0 - self.rate
        mask_shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        keep = keras.random.uniform(mask_shape, seed=self.seed_generator, dtype=inputs.dtype)
        keep = ops.floor(keep + ops.cast(keep_prob, inputs.dtype))
        return inputs * keep / ops.cast(keep_prob, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
