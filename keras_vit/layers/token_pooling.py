"""Reduces a token sequence to one vector."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenPooling(keras.layers.Layer):
    """Takes the class token, or averages the patch tokens.

    Args:
        mode: "token" (the first token) or "gap" (mean of the tokens after the
            first `num_prefix_tokens`).
        num_prefix_tokens: leading non-patch tokens skipped by "gap".

    Shape: `(batch, tokens, channels)` in, `(batch, channels)` out.
    """

    def __init__(self, mode="token", num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("token", "gap"):
            raise ValueError(f"TokenPooling mode must be 'token' or 'gap', got {mode!r}.")
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, inputs):
        if self.mode == "token":
            return inputs[:, 0]
        return ops.mean(inputs[:, self.num_prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "num_prefix_tokens": self.num_prefix_tokens})
        return config
