"""The residual transformer block, given its attention layer."""

import keras

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.drop_path import StochasticDepth
from keras_vit.layers.mlp import Mlp


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerBlock(keras.layers.Layer):
    """`x + drop_path(attention(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`.

    With `post_norm` the norms move after the branches (Swin-V2):
    `x + drop_path(norm1(attention(x)))`, then `x + drop_path(norm2(mlp(x)))`.

    The block is composed, not specialised: pass the attention layer it wraps
    (`WindowAttention`, `CosineAttention`, later cross or causal attention) as
    `attention`; without one it builds a `MultiHeadSelfAttention` from
    `num_heads`, `qkv_bias` and the dropout rates. Any attention layer that maps
    `(batch, ..., channels)` to the same shape fits.

    Args:
        num_heads: heads of the default attention (unused when `attention` is given).
        mlp_dim: hidden width of the MLP; or give `mlp_ratio` (width = ratio x channels).
        attention: the attention layer, or None for multi-head self-attention.
        mlp_ratio: MLP width over the input width, when `mlp_dim` is None.
        qkv_bias: bias on the default attention's qkv projection.
        dropout_rate: dropout inside the MLP (and after the default attention's projection).
        attention_dropout_rate: dropout on the default attention's weights.
        drop_path_rate: stochastic depth rate of this block.
        layer_norm_epsilon: LayerNorm epsilon (1e-6 in ViT).
        activation: MLP activation ("gelu" is exact GELU).
        post_norm: residual post-normalization.
        normalization: "layer_norm", or "rms_norm" (scale only, no mean subtraction: iGPT).
        mlp_bias: whether the MLP's dense layers have biases.
        remat: recompute the block's activations in the backward pass (`keras.remat`)
            instead of keeping them: less memory for long sequences, one more forward.

    Call arguments: `inputs` `(batch, ..., channels)`, and keyword arguments passed on
    to the attention layer (e.g. `attention_bias`, `attention_mask`,
    `return_attention_scores` of `MultiHeadSelfAttention`, `cache` and `cache_index`
    of `CausalSelfAttention`); None values are dropped.
    Returns the input shape (and the attention weights, or the updated cache, when asked).
    """

    def __init__(
        self,
        num_heads=None,
        mlp_dim=None,
        *,
        attention=None,
        mlp_ratio=None,
        qkv_bias=True,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        post_norm=False,
        normalization="layer_norm",
        mlp_bias=True,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (mlp_dim is None) == (mlp_ratio is None):
            raise ValueError(f"TransformerBlock needs exactly one of mlp_dim and mlp_ratio, got {mlp_dim!r} and {mlp_ratio!r}.")
        if attention is None and not num_heads:
            raise ValueError("TransformerBlock needs num_heads, or an attention layer passed as `attention`.")
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.post_norm = post_norm
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"TransformerBlock: normalization must be one of {', '.join(map(repr, _NORMALIZATIONS))}, got {normalization!r}."
            )
        self.normalization = normalization
        self.mlp_bias = mlp_bias
        self.remat = remat
        policy = self.dtype_policy
        self.given_attention = attention is not None
        if isinstance(attention, dict):  # from get_config
            # Left unbuilt: `build` builds it inside this block's name scope, so a loaded model's
            # variable paths ("block0/attention/qkv/kernel") are those of a freshly built one.
            attention = keras.saving.deserialize_keras_object({k: v for k, v in attention.items() if k != "build_config"})
        self.attention = attention or MultiHeadSelfAttention(
            num_heads,
            qkv_bias=qkv_bias,
            attention_dropout_rate=attention_dropout_rate,
            projection_dropout_rate=dropout_rate,
            dtype=policy,
            name="attention",
        )
        norm = _NORMALIZATIONS[normalization]
        self.norm1 = norm(epsilon=layer_norm_epsilon, dtype=policy, name="norm1")
        self.norm2 = norm(epsilon=layer_norm_epsilon, dtype=policy, name="norm2")
        self.drop_path = StochasticDepth(drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
        width = self.mlp_dim or int(input_shape[-1] * self.mlp_ratio)
        self.mlp = Mlp(
            width,
            activation=self.activation,
            dropout_rate=self.dropout_rate,
            use_bias=self.mlp_bias,
            dtype=self.dtype_policy,
            name="mlp",
        )
        self.norm1.build(input_shape)
        if not self.attention.built:  # a layer passed in may arrive built
            self.attention.build(input_shape)
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def call(self, inputs, training=False, cache=None, cache_index=None, **attention_kwargs):
        attention_kwargs.update(cache=cache, cache_index=cache_index)  # named: Keras refuses a dict mixing tensors and ints
        options = {key: value for key, value in attention_kwargs.items() if value is not None and value is not False}
        if self.remat and training and not options:
            # `training` stays a Python value: closed over, not an argument jax.checkpoint would trace.
            return keras.remat(lambda x: self._forward(x, training, {}))(inputs)
        return self._forward(inputs, training, options)

    def _forward(self, inputs, training, options):
        attended = self.attention(inputs if self.post_norm else self.norm1(inputs), training=training, **options)
        extra = None
        if options.get("return_attention_scores") or "cache" in options:
            attended, extra = attended  # the weights, or the updated cache
        if self.post_norm:
            attended = self.norm1(attended)
        x = inputs + self.drop_path(attended, training=training)
        hidden = self.mlp(x if self.post_norm else self.norm2(x), training=training)
        x = x + self.drop_path(self.norm2(hidden) if self.post_norm else hidden, training=training)
        return x if extra is None else (x, extra)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "mlp_ratio": self.mlp_ratio,
                "qkv_bias": self.qkv_bias,
                "dropout_rate": self.dropout_rate,
                "attention_dropout_rate": self.attention_dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
                "post_norm": self.post_norm,
                "normalization": self.normalization,
                "mlp_bias": self.mlp_bias,
                "remat": self.remat,
            }
        )
        if self.given_attention:
            config["attention"] = keras.saving.serialize_keras_object(self.attention)
        return config


_NORMALIZATIONS = {"layer_norm": keras.layers.LayerNormalization, "rms_norm": keras.layers.RMSNormalization}


def transformer_layout_map(device_mesh, model_axis="model"):
    """A `keras.distribution.LayoutMap` that shards the attention and MLP kernels of every
    `TransformerBlock` over `model_axis` (Megatron style: qkv and fc1 by columns, the
    output projections by rows); everything else is replicated, and optimizer slots
    follow their variable's layout. Fits every family built from `TransformerBlock`."""
    layout_map = keras.distribution.LayoutMap(device_mesh)
    column, row = (None, model_axis), (model_axis, None)
    layout_map[r"(.*/)?attention/qkv/kernel"] = column
    layout_map[r"(.*/)?attention/qkv/bias"] = (model_axis,)
    layout_map[r"(.*/)?attention/projection/kernel"] = row
    layout_map[r"(.*/)?attention/projection/bias"] = (None,)
    layout_map[r"(.*/)?mlp/fc1/kernel"] = column
    layout_map[r"(.*/)?mlp/fc1/bias"] = (model_axis,)
    layout_map[r"(.*/)?mlp/fc2/kernel"] = row
    layout_map[r"(.*/)?mlp/fc2/bias"] = (None,)
    return layout_map
