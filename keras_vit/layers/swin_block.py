"""The Swin transformer block."""

import keras

from keras_vit.layers.transformer_block import TransformerBlock
from keras_vit.layers.window_attention import WindowAttention


@keras.saving.register_keras_serializable(package="keras_vit")
class SwinTransformerBlock(TransformerBlock):
    """A `TransformerBlock` over a feature map with (shifted) window attention.

    `x + drop_path(window_attention(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`;
    with `post_norm` (Swin-V2) `x + drop_path(norm1(window_attention(x)))`,
    `x + drop_path(norm2(mlp(x)))`.

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
        super().__init__(
            num_heads,
            mlp_dim=None,
            qkv_bias=qkv_bias,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            post_norm=post_norm,
            **kwargs,
        )
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        self.mask_padding = mask_padding
        self.cosine_attention = cosine_attention
        self.position_bias = position_bias
        self.pretrained_window_size = pretrained_window_size

    def make_attention(self):
        return WindowAttention(
            self.num_heads,
            window_size=self.window_size,
            shift_size=self.shift_size,
            qkv_bias=self.qkv_bias,
            attention_dropout_rate=self.attention_dropout_rate,
            projection_dropout_rate=self.dropout_rate,
            mask_padding=self.mask_padding,
            cosine_attention=self.cosine_attention,
            position_bias=self.position_bias,
            pretrained_window_size=self.pretrained_window_size,
            dtype=self.dtype_policy,
            name="window_attention",
        )

    def mlp_width(self, channels):
        return int(channels * self.mlp_ratio)

    def get_config(self):
        config = super().get_config()
        del config["mlp_dim"], config["activation"]
        config.update(
            {
                "window_size": self.window_size,
                "shift_size": self.shift_size,
                "mlp_ratio": self.mlp_ratio,
                "mask_padding": self.mask_padding,
                "cosine_attention": self.cosine_attention,
                "position_bias": self.position_bias,
                "pretrained_window_size": self.pretrained_window_size,
            }
        )
        return config
