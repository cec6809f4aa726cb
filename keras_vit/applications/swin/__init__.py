"""The Swin family: Swin and Swin-V2, window attention, position biases, patch merging, converters."""

from keras_vit.applications.swin import convert  # noqa: F401  (registers the Swin converters)
from keras_vit.applications.swin.block import SwinTransformerBlock
from keras_vit.applications.swin.cosine_attention import CosineAttention
from keras_vit.applications.swin.model import (
    SWIN_V2_VARIANTS,
    SWIN_VARIANTS,
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
from keras_vit.applications.swin.patch_merging import PatchMerging
from keras_vit.applications.swin.window_attention import WindowAttention, window_partition, window_reverse
