"""ResNet-v2 pieces with GroupNorm and weight standardization, the ViT hybrids' stem."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class StandardizedConv2D(keras.layers.Conv2D):
    """`Conv2D` whose kernel is standardized per output channel before use.

    `w_hat = (w - mean(w)) / sqrt(var(w) + epsilon)`, the moments taken over
    the kernel's spatial and input axes (Qiao et al., 2019; Big Transfer).
    Accepts every `keras.layers.Conv2D` argument; `padding="same"` is
    TensorFlow's SAME (extra row/column at the bottom/right), as the
    reference hybrids use.

    Args:
        epsilon: added to the kernel variance (1e-8 in the ViT hybrids).
    """

    def __init__(self, *args, epsilon=1e-8, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon = epsilon

    def convolution_op(self, inputs, kernel):
        kernel = ops.cast(kernel, "float32")
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        variance = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) * ops.rsqrt(variance + self.epsilon)
        return super().convolution_op(inputs, ops.cast(kernel, inputs.dtype))

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class ResNetV2Bottleneck(keras.layers.Layer):
    """Non-pre-activation bottleneck with GroupNorm and standardized convs.

    `relu(shortcut(x) + gn3(conv3(relu(gn2(conv2(relu(gn1(conv1(x)))))))))`,
    the stride on the 3x3 conv; the shortcut is a strided 1x1 conv + GroupNorm
    when the shape changes. This is the block of the ViT-hybrid backbones
    (timm `ResNetV2(preact=False)`, `transformers` `BitModel(layer_type="bottleneck")`).

    Args:
        filters: output channels; the bottleneck is `filters // 4`.
        strides: stride of the 3x3 conv (and the projection shortcut).
        groups: GroupNorm groups (32).
        norm_epsilon: GroupNorm epsilon (1e-5).
        conv_epsilon: weight-standardization epsilon (1e-8).

    Shape: `(batch, h, w, c)` in, `(batch, h / strides, w / strides, filters)` out.
    """

    def __init__(self, filters, strides=1, groups=32, norm_epsilon=1e-5, conv_epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.groups = groups
        self.norm_epsilon = norm_epsilon
        self.conv_epsilon = conv_epsilon
        mid = filters // 4

        def conv(width, kernel, stride, name):
            return StandardizedConv2D(
                width, kernel, strides=stride, padding="same", use_bias=False,
                epsilon=conv_epsilon, kernel_initializer="he_normal", dtype=self.dtype_policy, name=name,
            )

        def norm(name):
            return keras.layers.GroupNormalization(groups, epsilon=norm_epsilon, dtype=self.dtype_policy, name=name)

        self.conv1, self.norm1 = conv(mid, 1, 1, "conv1"), norm("norm1")
        self.conv2, self.norm2 = conv(mid, 3, strides, "conv2"), norm("norm2")
        self.conv3, self.norm3 = conv(filters, 1, 1, "conv3"), norm("norm3")
        self.downsample_conv = conv(filters, 1, strides, "downsample_conv")
        self.downsample_norm = norm("downsample_norm")

    def build(self, input_shape):
        self.has_projection = self.strides != 1 or input_shape[-1] != self.filters
        shape = tuple(input_shape)
        for conv_layer, norm_layer in ((self.conv1, self.norm1), (self.conv2, self.norm2), (self.conv3, self.norm3)):
            conv_layer.build(shape)
            shape = conv_layer.compute_output_shape(shape)
            norm_layer.build(shape)
        if self.has_projection:
            self.downsample_conv.build(input_shape)
            self.downsample_norm.build(shape)
        else:
            self.downsample_conv = self.downsample_norm = None
        self.built = True

    def call(self, inputs):
        shortcut = inputs
        if self.has_projection:
            shortcut = self.downsample_norm(self.downsample_conv(inputs))
        x = ops.relu(self.norm1(self.conv1(inputs)))
        x = ops.relu(self.norm2(self.conv2(x)))
        x = self.norm3(self.conv3(x))
        return ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        shape = self.conv2.compute_output_shape(tuple(input_shape[:-1]) + (self.filters // 4,))
        return tuple(shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "groups": self.groups,
                "norm_epsilon": self.norm_epsilon,
                "conv_epsilon": self.conv_epsilon,
            }
        )
        return config
