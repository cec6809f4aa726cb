"""The Swin transformer block: a `TransformerBlock` given window attention."""

import keras

from keras_vit.applications.swin.window_attention import WindowAttention
from keras_vit.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_vit")
class SwinTransformerBlock(TransformerBlock):
    """`TransformerBlock(attention=WindowAttention(...), mlp_ratio=...)` over a feature map.

    `x + drop_path(window_attention(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`;
    with `post_norm` (Swin-V2) `x + drop_path(norm1(window_attention(x)))`,
    `x + drop_path(norm2(mlp(x)))`. Only the constructor is Swin's: it composes the
    generic block with a `WindowAttention` and keeps Swin's arguments in its config.

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
        self.swin_config = dict(
            num_heads=num_heads,
            window_size=window_size,
            shift_size=shift_size,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            mask_padding=mask_padding,
            cosine_attention=cosine_attention,
            position_bias=position_bias,
            pretrained_window_size=pretrained_window_size,
            post_norm=post_norm,
        )
        attention = WindowAttention(
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
            dtype=kwargs.get("dtype"),
            name="window_attention",
        )
        super().__init__(
            attention=attention,
            mlp_ratio=mlp_ratio,
            dropout_rate=dropout_rate,
            drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            post_norm=post_norm,
            **kwargs,
        )
        for key, value in self.swin_config.items():  # window_size, shift_size, cosine_attention, ...
            setattr(self, key, value)

    def get_config(self):
        base = keras.layers.Layer.get_config(self)
        return {**base, **self.swin_config}
