"""The MViT family: MViTv2 and MViTv1 (images), pooling attention, the timm converter."""

from keras_vit.applications.mvit import convert  # noqa: F401  (registers the MViT converter)
from keras_vit.applications.mvit.attention import MultiScaleAttention
from keras_vit.applications.mvit.block import MultiScaleBlock, MViTPatchEmbedding
from keras_vit.applications.mvit.model import (
    MVIT_VARIANTS,
    MViTBase16,
    MViTv2,
    MViTv2Base,
    MViTv2Large,
    MViTv2Small,
    MViTv2Tiny,
)
