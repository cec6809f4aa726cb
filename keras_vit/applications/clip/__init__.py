"""CLIP's text and vision towers (shared by OWL-ViT), the contrastive model and the tokenizer."""

from keras_vit.applications.clip.layers import CausalPaddingMask, ContrastiveLogits, EndOfTextPooling
from keras_vit.applications.clip.model import CLIP, CLIPContrastiveLoss, CLIPTextEncoder, CLIPVisionEncoder
from keras_vit.applications.clip.tokenizer import CLIPTokenizer
