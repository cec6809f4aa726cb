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

# Training at scale (strategies, keras.distribution, batch/lr scaling, precision): see distribute.py.
from keras_vit.training.distribute import (  # noqa: E402
    check_global_batch,
    compile_options,
    configure_jax_distribution,
    get_strategy,
    global_batch_size,
    num_replicas,
    read_tf_config,
    scale_learning_rate,
    set_precision,
    vit_layout_map,
)

__all__ += [
    "check_global_batch",
    "compile_options",
    "configure_jax_distribution",
    "get_strategy",
    "global_batch_size",
    "num_replicas",
    "read_tf_config",
    "scale_learning_rate",
    "set_precision",
    "vit_layout_map",
]
