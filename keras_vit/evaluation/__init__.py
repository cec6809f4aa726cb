"""Evaluating models: their cost (parameters, multiply-adds, attention memory) per image."""

from keras_vit.evaluation.complexity import Complexity, measure

__all__ = ["Complexity", "measure"]
