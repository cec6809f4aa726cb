"""The transformer feed-forward block."""

import keras


@keras.saving.register_keras_serializable(package="keras_vit")
class Mlp(keras.layers.Layer):
    """Two dense layers with an activation and dropout: `fc2(drop(act(fc1(x))))`.

    Args:
        hidden_dim: width of the hidden layer (ViT's "MLP size").
        output_dim: width of the output; defaults to the input width.
        activation: hidden activation; "gelu" is the exact (erf) GELU used by
            ViT, "gelu_tanh" the tanh approximation, "quick_gelu" `x * sigmoid(1.702 x)`
            (CLIP, iGPT).
        dropout_rate: dropout after the activation and after `fc2`.
        use_bias: whether `fc1` and `fc2` have biases (iGPT's original layout has none).

    Shape: `(..., channels)` in, `(..., output_dim or channels)` out.
    """

    def __init__(self, hidden_dim, output_dim=None, activation="gelu", dropout_rate=0.0, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.use_bias = use_bias
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.activation = activation
        self.dropout_rate = dropout_rate
        self.fc1 = keras.layers.Dense(hidden_dim, use_bias=use_bias, dtype=self.dtype_policy, name="fc1")
        self.fc2 = None
        self.act = keras.layers.Activation(_activation(activation), dtype=self.dtype_policy, name="act")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy, name="dropout")

    def build(self, input_shape):
        channels = input_shape[-1]
        self.fc1.build(input_shape)
        out_dim = self.output_dim or channels
        self.fc2 = keras.layers.Dense(out_dim, use_bias=self.use_bias, dtype=self.dtype_policy, name="fc2")
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden_dim,))
        self.built = True

    def call(self, inputs, training=False):
        x = self.act(self.fc1(inputs))
        x = self.dropout(x, training=training)
        x = self.fc2(x)
        return self.dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "output_dim": self.output_dim,
                "activation": self.activation,
                "dropout_rate": self.dropout_rate,
                "use_bias": self.use_bias,
            }
        )
        return config


def _activation(name):
    if name == "gelu":
        return lambda x: keras.activations.gelu(x, approximate=False)
    if name in ("gelu_tanh", "gelu_new", "gelu_pytorch_tanh"):
        return lambda x: keras.activations.gelu(x, approximate=True)
    if name == "quick_gelu":
        return quick_gelu
    return keras.activations.get(name)


def quick_gelu(x):
    """`x * sigmoid(1.702 x)`, the sigmoid approximation of GELU used by CLIP and iGPT."""
    return x * keras.ops.sigmoid(1.702 * x)
