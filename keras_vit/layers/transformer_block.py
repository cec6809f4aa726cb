"""The pre-norm transformer encoder block."""

import keras

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.drop_path import StochasticDepth
from keras_vit.layers.mlp import Mlp


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerBlock(keras.layers.Layer):
    """`x + drop_path(attn(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`.

    Args:
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        qkv_bias: bias on the qkv projection.
        dropout_rate: dropout inside the MLP and after the attention projection.
        attention_dropout_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth rate of this block.
        layer_norm_epsilon: LayerNorm epsilon (1e-6 in ViT).
        activation: MLP activation ("gelu" is exact GELU).

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
        policy = self.dtype_policy
        self.norm1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm1")
        self.attention = MultiHeadSelfAttention(
            num_heads,
            qkv_bias=qkv_bias,
            attention_dropout_rate=attention_dropout_rate,
            projection_dropout_rate=dropout_rate,
            dtype=policy,
            name="attention",
        )
        self.norm2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm2")
        self.mlp = Mlp(mlp_dim, activation=activation, dropout_rate=dropout_rate, dtype=policy, name="mlp")
        self.drop_path = StochasticDepth(drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
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
        attended = self.attention(
            self.norm1(inputs),
            attention_bias=attention_bias,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if return_attention_scores:
            attended, scores = attended
        x = inputs + self.drop_path(attended, training=training)
        x = x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)
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
            }
        )
        return config
