"""Training: recipes (AugReg, Swin), the detection trainer (DETR), the open-vocabulary trainer (OWL-ViT), the generative trainer (iGPT), the optimizer and schedule, distribution and precision,
resumable checkpoints, and `train`."""

from keras_vit.training.callbacks import NonFiniteLossError, StopOnNonFiniteLoss, TrainingCheckpoint, restore_checkpoint
from keras_vit.training.distribute import (
    check_global_batch,
    compile_options,
    configure_jax_distribution,
    get_strategy,
    global_batch_size,
    model_layout_map,
    num_replicas,
    read_tf_config,
    scale_learning_rate,
    select_distribution,
    set_precision,
    vit_layout_map,
)
from keras_vit.training.detection import AdamWWithMultipliers, load_backbone_weights, train_detector
from keras_vit.training.generation import bits_per_dim, train_generator
from keras_vit.training.open_vocabulary import train_open_vocabulary_detector
from keras_vit.training.recipes import RECIPES, Recipe, get_recipe, list_recipes
from keras_vit.training.train import (
    TrainResult,
    build_optimizer,
    default_image_size,
    register_trainer,
    train,
    train_classifier,
    warmup_cosine_schedule,
)

__all__ = [
    "AdamWWithMultipliers",
    "load_backbone_weights",
    "train_detector",
    "train_open_vocabulary_detector",
    "train_generator",
    "bits_per_dim",
    "NonFiniteLossError",
    "check_global_batch",
    "compile_options",
    "configure_jax_distribution",
    "get_strategy",
    "global_batch_size",
    "model_layout_map",
    "num_replicas",
    "read_tf_config",
    "scale_learning_rate",
    "select_distribution",
    "set_precision",
    "vit_layout_map",
    "RECIPES",
    "Recipe",
    "StopOnNonFiniteLoss",
    "TrainResult",
    "TrainingCheckpoint",
    "build_optimizer",
    "default_image_size",
    "get_recipe",
    "list_recipes",
    "restore_checkpoint",
    "register_trainer",
    "train",
    "train_classifier",
    "warmup_cosine_schedule",
]
