"""The OWL-ViT family: open-vocabulary detection from text or image queries on CLIP towers."""

from keras_vit.applications.owl_vit.loss import OWLViTLoss
from keras_vit.applications.owl_vit.model import (
    OWL_VIT_VARIANTS,
    OWLViT,
    OWLViTBase16,
    OWLViTBase32,
    OWLViTLarge14,
    OWLViTPico,
    OWLv2Base16,
    OWLv2Large14,
    OwlViTDetector,
)
from keras_vit.applications.owl_vit import convert  # noqa: F401,E402  (registers the transformers converters)
