"""The Swin transformer block."""

import keras

from keras_vit.layers.drop_path import StochasticDepth
from keras_vit.layers.mlp import Mlp
from keras_vit.layers.window_attention import WindowAttention


@keras.saving.register_keras_serializable(package="keras_vit")
class SwinTransformerBlock(keras.layers.Layer):
    """`x + drop_path(window_attention(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`.

    Args:
        num_heads, window_size, shift_size, qkv_bias, mask_padding: as in `WindowAttention`.
        mlp_ratio: MLP width over the input width (4).
        dropout_rate, attention_dropout_rate, drop_path_rate: regularization.
        layer_norm_epsilon: LayerNorm epsilon (1e-5).

    Shape: `(batch, height, width, channels)` in and out.
    """

    def __init__(
        self,
        num_heads,
        window_size=7,
        shift_size=0,
        mlp_ratio=4.0,
        qkv_bias=True,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-5,
        mask_padding=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.mask_padding = mask_padding
        policy = self.dtype_policy
        self.norm1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm1")
        self.attention = WindowAttention(
            num_heads,
            window_size=window_size,
            shift_size=shift_size,
            qkv_bias=qkv_bias,
            attention_dropout_rate=attention_dropout_rate,
            projection_dropout_rate=dropout_rate,
            mask_padding=mask_padding,
            dtype=policy,
            name="window_attention",
        )
        self.norm2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm2")
        self.drop_path = StochasticDepth(drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
        channels = input_shape[-1]
        self.mlp = Mlp(int(channels * self.mlp_ratio), dropout_rate=self.dropout_rate, dtype=self.dtype_policy, name="mlp")
        self.norm1.build(input_shape)
        self.attention.build(input_shape)
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        x = inputs + self.drop_path(self.attention(self.norm1(inputs), training=training), training=training)
        return x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "window_size": self.window_size,
                "shift_size": self.shift_size,
                "mlp_ratio": self.mlp_ratio,
                "qkv_bias": self.qkv_bias,
                "dropout_rate": self.dropout_rate,
                "attention_dropout_rate": self.attention_dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "mask_padding": self.mask_padding,
            }
        )
        return config
