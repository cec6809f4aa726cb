"""Reduces a token sequence to one vector."""

import keras
from keras import ops

# The pooling vocabulary of every keras-vit model; "gap" is the old name of "avg",
# still accepted so that configs saved before it load.
POOLING_ALIASES = {"gap": "avg"}


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenPooling(keras.layers.Layer):
    """Takes the class token, or averages / max-pools the patch tokens.

    Args:
        mode: "token" (the first token), "avg" (mean of the tokens after the
            first `num_prefix_tokens`) or "max" (their maximum). "gap" = "avg".
        num_prefix_tokens: leading non-patch tokens (class token) skipped by "avg"/"max".

    Shape: `(batch, tokens, channels)` in, `(batch, channels)` out.
    """

    def __init__(self, mode="token", num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        mode = POOLING_ALIASES.get(mode, mode)
        if mode not in ("token", "avg", "max"):
            raise ValueError(f"TokenPooling mode must be 'token', 'avg' or 'max', got {mode!r}.")
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, inputs):
        if self.mode == "token":
            return inputs[:, 0]
        patches = inputs[:, self.num_prefix_tokens :]
        return ops.mean(patches, axis=1) if self.mode == "avg" else ops.max(patches, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "num_prefix_tokens": self.num_prefix_tokens})
        return config
