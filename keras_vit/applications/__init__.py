"""keras.applications-style constructors, one folder per model family, and the model registry.

Importing this package imports every family, which registers its models
(`keras_vit.list_models()`) and its checkpoint converters.
"""

from keras_vit.applications.registry import (
    ModelSpec,
    create_model,
    get_constructor,
    list_models,
    model_info,
    register_model,
)
from keras_vit.applications.clip import CLIP, CLIPBase16, CLIPBase32, CLIPLarge14, CLIPPico16
from keras_vit.applications.detr import DETR, DETRPico, DETRResNet50, DETRResNet101, DetrDetector
from keras_vit.applications.igpt import ImageGPT, ImageGPTLarge, ImageGPTMedium, ImageGPTPico, ImageGPTSmall
from keras_vit.applications.owl_vit import (
    OWLViT,
    OWLViTBase16,
    OWLViTBase32,
    OWLViTLarge14,
    OWLViTPico,
    OWLv2Base16,
    OWLv2Large14,
    OwlViTDetector,
)
from keras_vit.applications.mvit import MViTBase16, MViTv2, MViTv2Base, MViTv2Large, MViTv2Small, MViTv2Tiny
from keras_vit.applications.resnet import (
    LRNet26,
    LRNet50,
    LRNet101,
    NonLocalResNet50,
    NonLocalResNet50Blocks10,
    NonLocalResNet101,
    ResNet,
    ResNet50,
    ResNetPico,
    ResNet101,
    SelfAttentionResNet50,
)
from keras_vit.applications.swin import (
    SwinBase,
    SwinBase384,
    SwinLarge,
    SwinSmall,
    SwinTiny,
    SwinTransformer,
    SwinV2Base,
    SwinV2BaseWindow16,
    SwinV2Small,
    SwinV2SmallWindow16,
    SwinV2Tiny,
    SwinV2TinyWindow16,
)
from keras_vit.applications.vit import (
    HybridVisionTransformer,
    ViTBase8,
    ViTBase16,
    ViTBase32,
    ViTHuge14,
    ViTLarge16,
    ViTLarge32,
    ViTPico8,
    ViTR26S32,
    ViTR50B16,
    ViTR50L32,
    ViTSmall16,
    ViTSmall32,
    ViTTiny16,
    VisionTransformer,
)
