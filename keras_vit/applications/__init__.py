"""keras.applications-style constructors and the model registry."""

from keras_vit.applications.attention_resnet import (
    NonLocalResNet50,
    NonLocalResNet50Blocks10,
    NonLocalResNet101,
    ResNet,
    ResNet50,
    ResNet101,
    SelfAttentionResNet50,
)
from keras_vit.applications.hybrid import (
    HybridVisionTransformer,
    ViTR26S32,
    ViTR50B16,
    ViTR50L32,
)
from keras_vit.applications.swin import (
    SwinBase,
    SwinBase384,
    SwinLarge,
    SwinSmall,
    SwinTiny,
    SwinTransformer,
)
from keras_vit.applications.swin_v2 import (
    SwinV2Base,
    SwinV2BaseWindow16,
    SwinV2Small,
    SwinV2SmallWindow16,
    SwinV2Tiny,
    SwinV2TinyWindow16,
)
from keras_vit.applications.lrnet import LRNet26, LRNet50, LRNet101
from keras_vit.applications.registry import create_model, get_constructor, list_models, register_model
from keras_vit.applications.vit import (
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
