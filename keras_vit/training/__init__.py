"""Training: recipes (AugReg, Swin), the optimizer and schedule, resumable checkpoints, and `train`."""

from keras_vit.training.callbacks import NonFiniteLossError, StopOnNonFiniteLoss, TrainingCheckpoint, restore_checkpoint
from keras_vit.training.recipes import RECIPES, Recipe, get_recipe, list_recipes
from keras_vit.training.train import TrainResult, build_optimizer, train, warmup_cosine_schedule

__all__ = [
    "NonFiniteLossError",
    "RECIPES",
    "Recipe",
    "StopOnNonFiniteLoss",
    "TrainResult",
    "TrainingCheckpoint",
    "build_optimizer",
    "get_recipe",
    "list_recipes",
    "restore_checkpoint",
    "train",
    "warmup_cosine_schedule",
]
