"""Keras layers of keras-vit: building blocks in pure `keras.ops`."""

from keras_vit.layers.attention import CosineAttention, MultiHeadSelfAttention
from keras_vit.layers.bottleneck import Bottleneck
from keras_vit.layers.drop_path import StochasticDepth
from keras_vit.layers.local_relation import LocalRelation
from keras_vit.layers.non_local import NonLocalBlock
from keras_vit.layers.mlp import Mlp
from keras_vit.layers.preprocessing import ImageNormalization
from keras_vit.layers.patch_merging import PatchMerging
from keras_vit.layers.position_bias import ContinuousPositionBias, RelativePositionBias
from keras_vit.layers.patch_embedding import PatchEmbedding, resize_position_embedding
from keras_vit.layers.resnet_v2 import ResNetV2Bottleneck, StandardizedConv2D
from keras_vit.layers.self_attention_2d import SelfAttention2D
from keras_vit.layers.spectral_conv import SpectralConv2D
from keras_vit.layers.token_pooling import TokenPooling
from keras_vit.layers.swin_block import SwinTransformerBlock
from keras_vit.layers.transformer_block import TransformerBlock
from keras_vit.layers.window_attention import WindowAttention, window_partition, window_reverse

__all__ = [
    "Bottleneck",
    "LocalRelation",
    "NonLocalBlock",
    "SelfAttention2D",
    "SpectralConv2D",
    "ContinuousPositionBias",
    "CosineAttention",
    "ImageNormalization",
    "MultiHeadSelfAttention",
    "Mlp",
    "PatchEmbedding",
    "PatchMerging",
    "RelativePositionBias",
    "ResNetV2Bottleneck",
    "StandardizedConv2D",
    "StochasticDepth",
    "SwinTransformerBlock",
    "TokenPooling",
    "TransformerBlock",
    "WindowAttention",
    "resize_position_embedding",
    "window_partition",
    "window_reverse",
]
