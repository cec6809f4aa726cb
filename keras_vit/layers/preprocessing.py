"""In-model image normalization."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class ImageNormalization(keras.layers.Layer):
    """`(pixels - mean) / std` per channel, refusing images with the wrong channel count.

    Args:
        mean: per-channel means in the input's scale (e.g. 127.5 for [0, 255]).
        std: per-channel standard deviations.

    Shape: `(batch, height, width, len(mean))` in and out.
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        if len(mean) != len(std):
            raise ValueError(f"mean {mean} and std {std} need one value per channel each.")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, images):
        check_channels(images, len(self.mean), self.name)
        mean = ops.cast(self.mean, images.dtype)
        scale = ops.cast([1.0 / s for s in self.std], images.dtype)
        return (images - mean) * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config


def check_channels(images, expected, layer_name):
    """Raises ValueError when the static channel count of `images` is not `expected`."""
    channels = images.shape[-1]
    if channels is not None and channels != expected:
        raise ValueError(
            f"{layer_name}: images have {channels} channels but the model was built for {expected}. "
            f"Pass images of shape (batch, height, width, {expected}) (convert grayscale to RGB), or "
            f"build the model with input_shape=(height, width, {channels})."
        )
