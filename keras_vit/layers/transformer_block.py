"""The pre-norm transformer encoder block."""

import keras

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.drop_path import StochasticDepth
from keras_vit.layers.mlp import Mlp


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerBlock(keras.layers.Layer):
    """`x + drop_path(attn(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`.

    With `post_norm` the norms move after the branches (Swin-V2):
    `x + drop_path(norm1(attn(x)))`, then `x + drop_path(norm2(mlp(x)))`.
    Subclasses change the attention by overriding `make_attention` (Swin's
    window attention) and the MLP width by overriding `mlp_width`.

    Args:
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        qkv_bias: bias on the qkv projection.
        dropout_rate: dropout inside the MLP and after the attention projection.
        attention_dropout_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth rate of this block.
        layer_norm_epsilon: LayerNorm epsilon (1e-6 in ViT).
        activation: MLP activation ("gelu" is exact GELU).
        post_norm: residual post-normalization.

    Call arguments: `inputs` `(batch, tokens, channels)`; `attention_bias`,
    `attention_mask` and `return_attention_scores` as in `MultiHeadSelfAttention`.
    Returns `(batch, tokens, channels)` (and the attention weights when asked).
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        qkv_bias=True,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        post_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.qkv_bias = qkv_bias
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.post_norm = post_norm
        policy = self.dtype_policy
        self.norm1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm1")
        self.norm2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm2")
        self.drop_path = StochasticDepth(drop_path_rate, dtype=policy, name="drop_path")

    def make_attention(self):
        """The attention sublayer (created in `build`, after subclasses' own attributes)."""
        return MultiHeadSelfAttention(
            self.num_heads,
            qkv_bias=self.qkv_bias,
            attention_dropout_rate=self.attention_dropout_rate,
            projection_dropout_rate=self.dropout_rate,
            dtype=self.dtype_policy,
            name="attention",
        )

    def mlp_width(self, channels):
        """Hidden width of the MLP for `channels` inputs."""
        return self.mlp_dim

    def build(self, input_shape):
        self.attention = self.make_attention()
        self.mlp = Mlp(
            self.mlp_width(input_shape[-1]),
            activation=self.activation,
            dropout_rate=self.dropout_rate,
            dtype=self.dtype_policy,
            name="mlp",
        )
        self.norm1.build(input_shape)
        self.attention.build(input_shape)
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def call(
        self,
        inputs,
        attention_bias=None,
        attention_mask=None,
        return_attention_scores=False,
        training=False,
    ):
        # Only what was asked is passed on: window attention takes no bias, mask or scores.
        options = dict(attention_bias=attention_bias, attention_mask=attention_mask)
        options = {key: value for key, value in options.items() if value is not None}
        if return_attention_scores:
            options["return_attention_scores"] = True
        attended = self.attention(inputs if self.post_norm else self.norm1(inputs), training=training, **options)
        if return_attention_scores:
            attended, scores = attended
        if self.post_norm:
            attended = self.norm1(attended)
        x = inputs + self.drop_path(attended, training=training)
        hidden = self.mlp(x if self.post_norm else self.norm2(x), training=training)
        x = x + self.drop_path(self.norm2(hidden) if self.post_norm else hidden, training=training)
        if return_attention_scores:
            return x, scores
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "qkv_bias": self.qkv_bias,
                "dropout_rate": self.dropout_rate,
                "attention_dropout_rate": self.attention_dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
                "post_norm": self.post_norm,
            }
        )
        return config
