"""Input pipelines (tf.data + TFDS) and the offline `shapes` datasets.

Importing this package registers the `shapes` and `shapes_detection` TFDS
builders.
"""

from keras_vit.data.augment import Augmentation
from keras_vit.data.augment import randaugment_factor
from keras_vit.data.coco import find_coco_files
from keras_vit.data.coco import read_coco_annotations
from keras_vit.data.detection import DetectionInfo
from keras_vit.data.detection import load_detection_dataset
from keras_vit.data.detection import tfds_detection_record
from keras_vit.data.open_vocabulary import DEFAULT_UNSEEN
from keras_vit.data.open_vocabulary import SHAPES_CATEGORIES
from keras_vit.data.open_vocabulary import CaptionInfo
from keras_vit.data.open_vocabulary import OpenVocabularyInfo
from keras_vit.data.open_vocabulary import load_caption_dataset
from keras_vit.data.open_vocabulary import load_open_vocabulary_dataset
from keras_vit.data.palette import fit_palette
from keras_vit.data.palette import load_palette
from keras_vit.data.palette import quantize_numpy
from keras_vit.data.palette import quantize_tf
from keras_vit.data.palette import save_palette
from keras_vit.data.pipeline import DatasetInfo
from keras_vit.data.pipeline import default_min_crop_scale
from keras_vit.data.pipeline import image_side
from keras_vit.data.pipeline import load_dataset
from keras_vit.data.pipeline import load_epochs
from keras_vit.data.pixels import PixelDatasetInfo
from keras_vit.data.pixels import fit_dataset_palette
from keras_vit.data.pixels import load_pixel_dataset
from keras_vit.data.shapes import COLOR_NAMES
from keras_vit.data.shapes import SHAPE_NAMES
from keras_vit.data.shapes import Shapes
from keras_vit.data.shapes import render_example
from keras_vit.data.shapes_detection import ShapesDetection
from keras_vit.data.shapes_detection import render_detection_example
from keras_vit.data.tokenizer import CLIPTokenizer
from keras_vit.data.tokenizer import train_clip_tokenizer
