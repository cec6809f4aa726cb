"""The ResNet bottleneck block, with a pluggable spatial layer (conv or local relation)."""

import keras

from keras_vit.applications.resnet.local_relation import LocalRelation


@keras.saving.register_keras_serializable(package="keras_vit")
class Bottleneck(keras.layers.Layer):
    """`relu(shortcut(x) + bn3(conv3(relu(bn2(spatial(relu(bn1(conv1(x)))))))))`.

    The ResNet-50 bottleneck (He et al., 2016) with the stride on the spatial
    layer (ResNet v1.5, as torchvision and timm). The spatial layer is a 3x3
    conv, or LR-Net's `LocalRelation` (Hu et al., 2019) of `kernel_size` with
    `channels_per_group` channels sharing one aggregation. The shortcut is a
    strided 1x1 conv + BatchNorm when the shape changes. Convs have no bias.

    Args:
        filters: output channels.
        width: bottleneck channels (ResNet-50: filters // 4; LR-Net: 100, 200, 400, 800).
        strides: 1 or 2.
        spatial: "conv" or "local_relation".
        kernel_size: of the spatial layer (3 for conv, 7 for LR-Net).
        channels_per_group: m of `LocalRelation` (8).
        zero_init_residual: start the last BatchNorm's gamma at 0 (each block the identity).
        norm_epsilon, norm_momentum: BatchNorm settings (1e-5, 0.9 as in torchvision).

    Shape: `(batch, h, w, c)` in, `(batch, ceil(h / strides), ceil(w / strides), filters)` out.
    """

    def __init__(
        self,
        filters,
        width,
        strides=1,
        spatial="conv",
        kernel_size=3,
        channels_per_group=8,
        zero_init_residual=False,
        norm_epsilon=1e-5,
        norm_momentum=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if spatial not in ("conv", "local_relation"):
            raise ValueError(f"spatial must be 'conv' or 'local_relation', got {spatial!r}.")
        if strides not in (1, 2):
            raise ValueError(f"strides must be 1 or 2, got {strides}.")
        self.filters = filters
        self.width = width
        self.strides = strides
        self.spatial = spatial
        self.kernel_size = kernel_size
        self.channels_per_group = channels_per_group
        self.zero_init_residual = zero_init_residual
        self.norm_epsilon = norm_epsilon
        self.norm_momentum = norm_momentum

    def _norm(self, name, gamma="ones"):
        return keras.layers.BatchNormalization(
            epsilon=self.norm_epsilon,
            momentum=self.norm_momentum,
            gamma_initializer=gamma,
            dtype=self.dtype_policy,
            name=name,
        )

    def _conv(self, filters, name, strides=1):
        return keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_initializer="he_normal", dtype=self.dtype_policy, name=name
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        self.conv1 = self._conv(self.width, "conv1")
        self.bn1 = self._norm("bn1")
        if self.spatial == "conv":
            self.conv2 = keras.layers.Conv2D(
                self.width,
                self.kernel_size,
                strides=self.strides,
                padding="same" if self.strides == 1 else "valid",
                use_bias=False,
                kernel_initializer="he_normal",
                dtype=self.dtype_policy,
                name="conv2",
            )
        else:
            self.conv2 = LocalRelation(
                self.width,
                kernel_size=self.kernel_size,
                strides=self.strides,
                channels_per_group=self.channels_per_group,
                dtype=self.dtype_policy,
                name="local_relation",
            )
        self.bn2 = self._norm("bn2")
        self.conv3 = self._conv(self.filters, "conv3")
        self.bn3 = self._norm("bn3", "zeros" if self.zero_init_residual else "ones")
        self.shortcut = None
        if self.strides != 1 or channels != self.filters:
            self.shortcut = self._conv(self.filters, "shortcut_conv", strides=self.strides)
            self.shortcut_bn = self._norm("shortcut_bn")
        hidden = (None, None, None, self.width)
        self.conv1.build(input_shape)
        self.bn1.build(hidden)
        spatial_input = (None, input_shape[1], input_shape[2], self.width)
        if self.spatial == "conv" and self.strides != 1:
            spatial_input = (None, None, None, self.width)  # padded in call
        self.conv2.build(spatial_input)
        self.bn2.build(hidden)
        self.conv3.build(hidden)
        self.bn3.build((None, None, None, self.filters))
        if self.shortcut is not None:
            self.shortcut.build(input_shape)
            self.shortcut_bn.build((None, None, None, self.filters))
        self.built = True

    def call(self, inputs, training=False):
        x = keras.ops.relu(self.bn1(self.conv1(inputs), training=training))
        if self.spatial == "conv" and self.strides != 1:
            # torch-style symmetric padding for the strided 3x3 conv (TF's SAME pads bottom/right only).
            pad = self.kernel_size // 2
            x = keras.ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        x = keras.ops.relu(self.bn2(self.conv2(x), training=training))
        x = self.bn3(self.conv3(x), training=training)
        shortcut = inputs
        if self.shortcut is not None:
            shortcut = self.shortcut_bn(self.shortcut(inputs), training=training)
        return keras.ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.strides == 1:
            return (batch, height, width, self.filters)
        shrink = (lambda side: None if side is None else -(-side // 2))
        return (batch, shrink(height), shrink(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "width": self.width,
                "strides": self.strides,
                "spatial": self.spatial,
                "kernel_size": self.kernel_size,
                "channels_per_group": self.channels_per_group,
                "zero_init_residual": self.zero_init_residual,
                "norm_epsilon": self.norm_epsilon,
                "norm_momentum": self.norm_momentum,
            }
        )
        return config
