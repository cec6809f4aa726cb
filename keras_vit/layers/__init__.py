"""Keras layers of keras-vit: reusable building blocks in pure `keras.ops`.

The blocks shared by several families live here. Layers that belong to one family
live in that family's folder (`keras_vit/applications/<family>/`) and are
re-exported below under their usual names, resolved on first use so that this
package never imports a model family at import time.
"""

import importlib

from keras_vit.layers.attention import MultiHeadAttention, MultiHeadSelfAttention
from keras_vit.layers.blockwise_attention import blockwise_attention
from keras_vit.layers.causal_attention import CausalSelfAttention
from keras_vit.layers.drop_path import StochasticDepth
from keras_vit.layers.mlp import Mlp
from keras_vit.layers.non_local import NonLocalBlock
from keras_vit.layers.patch_embedding import PatchEmbedding, resize_position_embedding
from keras_vit.layers.position_bias import ContinuousPositionBias, RelativePositionBias
from keras_vit.layers.preprocessing import ImageNormalization
from keras_vit.layers.self_attention_2d import SelfAttention2D
from keras_vit.layers.sine_position_embedding import SinePositionEmbedding2D
from keras_vit.layers.spectral_conv import SpectralConv2D
from keras_vit.layers.token_embedding import TokenAndPositionEmbedding
from keras_vit.layers.token_pooling import TokenPooling
from keras_vit.layers.transformer_block import TransformerBlock

# Family layers: public name -> the module that defines it.
_FAMILY_LAYERS = {
    "Bottleneck": "keras_vit.applications.resnet.bottleneck",
    "LocalRelation": "keras_vit.applications.resnet.local_relation",
    "CausalPaddingMask": "keras_vit.applications.clip.layers",
    "ContrastiveLogits": "keras_vit.applications.clip.layers",
    "EndOfTextPooling": "keras_vit.applications.clip.layers",
    "CosineAttention": "keras_vit.applications.swin.cosine_attention",
    "DetrDecoderLayer": "keras_vit.applications.detr.layers",
    "DetrEncoderLayer": "keras_vit.applications.detr.layers",
    "MultiScaleAttention": "keras_vit.applications.mvit.attention",
    "MultiScaleBlock": "keras_vit.applications.mvit.block",
    "MViTPatchEmbedding": "keras_vit.applications.mvit.block",
    "GridBoxes": "keras_vit.applications.owl_vit.layers",
    "OwlClassHead": "keras_vit.applications.owl_vit.layers",
    "PredictionMlp": "keras_vit.applications.owl_vit.layers",
    "UnflattenQueries": "keras_vit.applications.owl_vit.layers",
    "PatchMerging": "keras_vit.applications.swin.patch_merging",
    "SwinTransformerBlock": "keras_vit.applications.swin.block",
    "WindowAttention": "keras_vit.applications.swin.window_attention",
    "window_partition": "keras_vit.applications.swin.window_attention",
    "window_reverse": "keras_vit.applications.swin.window_attention",
    "ResNetV2Bottleneck": "keras_vit.applications.vit.resnet_v2",
    "StandardizedConv2D": "keras_vit.applications.vit.resnet_v2",
}


def __getattr__(name):
    if name in _FAMILY_LAYERS:
        return getattr(importlib.import_module(_FAMILY_LAYERS[name]), name)
    raise AttributeError(f"module 'keras_vit.layers' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


__all__ = [
    "CausalSelfAttention",
    "ContinuousPositionBias",
    "ImageNormalization",
    "Mlp",
    "MultiHeadAttention",
    "MultiHeadSelfAttention",
    "NonLocalBlock",
    "PatchEmbedding",
    "RelativePositionBias",
    "SelfAttention2D",
    "SinePositionEmbedding2D",
    "SpectralConv2D",
    "StochasticDepth",
    "TokenAndPositionEmbedding",
    "TokenPooling",
    "TransformerBlock",
    "blockwise_attention",
    "resize_position_embedding",
    *_FAMILY_LAYERS,
]
