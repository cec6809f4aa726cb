"""The ViT family: `VisionTransformer`, the ResNet+ViT hybrids, their layers and converters."""

from keras_vit.applications.vit import convert  # noqa: F401  (registers the ViT converters)
from keras_vit.applications.vit.hybrid import (
    HYBRID_VARIANTS,
    HybridVisionTransformer,
    ViTR26S32,
    ViTR50B16,
    ViTR50L32,
    resnet_v2_stem,
)
from keras_vit.applications.vit.model import (
    VIT_VARIANTS,
    ViTBase8,
    ViTBase16,
    ViTBase32,
    ViTHuge14,
    ViTLarge16,
    ViTLarge32,
    ViTPico8,
    ViTSmall16,
    ViTSmall32,
    ViTTiny16,
    VisionTransformer,
)
from keras_vit.applications.vit.resnet_v2 import ResNetV2Bottleneck, StandardizedConv2D
