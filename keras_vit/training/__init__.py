"""Training: compile a model with the default recipe and fit it on a dataset."""

from keras_vit.training.train import TrainResult, build_optimizer, train, warmup_cosine_schedule

__all__ = ["TrainResult", "build_optimizer", "train", "warmup_cosine_schedule"]
