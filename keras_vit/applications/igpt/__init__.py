"""The iGPT family: a GPT-2 style transformer on palette-quantized pixels, with cached sampling."""

from keras_vit.applications.igpt import convert  # noqa: F401  (registers the transformers ImageGPT converter)
from keras_vit.applications.igpt.model import (
    IGPT_VARIANTS,
    ImageGPT,
    ImageGPTLarge,
    ImageGPTMedium,
    ImageGPTPico,
    ImageGPTSmall,
)
