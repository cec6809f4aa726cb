"""The CLIP family: a text and a vision tower joined by contrastive logits (OWL-ViT builds on it)."""

from keras_vit.applications.clip.layers import CausalPaddingMask, ContrastiveLogits, EndOfTextPooling
from keras_vit.applications.clip.model import (
    CLIP,
    CLIP_VARIANTS,
    CLIPBase16,
    CLIPBase32,
    CLIPContrastiveLoss,
    CLIPLarge14,
    CLIPPico16,
    CLIPTextEncoder,
    CLIPVisionEncoder,
    contrastive_model,
)
