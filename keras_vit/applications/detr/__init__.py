"""The DETR family: set-prediction detection with a transformer."""

from keras_vit.applications.detr import convert  # noqa: F401  (registers the DETR converters)
from keras_vit.applications.detr.loss import DETRLoss
from keras_vit.applications.detr.layers import DetrDecoderLayer, DetrEncoderLayer, ObjectQueries, ResizeMask
from keras_vit.applications.detr.model import DETR, DETR_VARIANTS, DETRPico, DETRResNet50, DETRResNet101, DetrDetector
