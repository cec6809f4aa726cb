"""The Swin transformer block."""

import keras

from keras_vit.layers.drop_path import StochasticDepth
from keras_vit.layers.mlp import Mlp
from keras_vit.layers.window_attention import WindowAttention


@keras.saving.register_keras_serializable(package="keras_vit")
class SwinTransformerBlock(keras.layers.Layer):
    """`x + drop_path(window_attention(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`.

    With `post_norm` (Swin-V2) the norms move after the branches:
    `x + drop_path(norm1(window_attention(x)))`, `x + drop_path(norm2(mlp(x)))`.

    Args:
        num_heads, window_size, shift_size, qkv_bias, mask_padding, cosine_attention,
            position_bias, pretrained_window_size: as in `WindowAttention`.
        post_norm: Swin-V2's residual post-normalization.
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
        cosine_attention=False,
        position_bias="table",
        pretrained_window_size=0,
        post_norm=False,
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
        self.cosine_attention = cosine_attention
        self.position_bias = position_bias
        self.pretrained_window_size = pretrained_window_size
        self.post_norm = post_norm
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
            cosine_attention=cosine_attention,
            position_bias=position_bias,
            pretrained_window_size=pretrained_window_size,
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
        if self.post_norm:
            x = inputs + self.drop_path(self.norm1(self.attention(inputs, training=training)), training=training)
            return x + self.drop_path(self.norm2(self.mlp(x, training=training)), training=training)
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
                "cosine_attention": self.cosine_attention,
                "position_bias": self.position_bias,
                "pretrained_window_size": self.pretrained_window_size,
                "post_norm": self.post_norm,
            }
        )
        return config
