"""Input pipelines (tf.data + TFDS) and the offline `shapes` dataset.

Importing this package registers the `shapes` TFDS builder.
"""

from keras_vit.data.augment import Augmentation
from keras_vit.data.augment import randaugment_factor
from keras_vit.data.pipeline import DatasetInfo
from keras_vit.data.pipeline import default_min_crop_scale
from keras_vit.data.pipeline import image_side
from keras_vit.data.pipeline import load_dataset
from keras_vit.data.pipeline import load_epochs
from keras_vit.data.shapes import COLOR_NAMES
from keras_vit.data.shapes import SHAPE_NAMES
from keras_vit.data.shapes import Shapes
from keras_vit.data.shapes import render_example
