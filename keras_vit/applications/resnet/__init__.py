"""The ResNet family: ResNet v1.5, non-local / SAGAN attention ResNets and LR-Net (local relation)."""

from keras_vit.applications.resnet.bottleneck import Bottleneck
from keras_vit.applications.resnet.local_relation import LocalRelation
from keras_vit.applications.resnet.lrnet import LRNET_VARIANTS, LRNet26, LRNet50, LRNet101
from keras_vit.applications.resnet.model import (
    NL_5_BLOCKS,
    NL_10_BLOCKS,
    RESNET_VARIANTS,
    NonLocalResNet50,
    NonLocalResNet50Blocks10,
    NonLocalResNet101,
    ResNet,
    ResNet50,
    ResNetPico,
    ResNet101,
    SelfAttentionResNet50,
)
