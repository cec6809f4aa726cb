"""keras-vit: vision transformers and attention-augmented CNNs for Keras 3.

`create_model`, `list_models` and `model_info` cover the registry; every
subpackage is reachable from here (`keras_vit.training.train`, ...). The model
packages load at once (they register the models); the others on first use,
since they pull in TensorFlow datasets, KerasTuner or matplotlib.
"""

import importlib

__version__ = "0.1.0"

from keras_vit import applications, convert, layers, ops  # noqa: E402
from keras_vit.applications.registry import create_model, list_models, model_info  # noqa: E402

_LAZY_SUBPACKAGES = ("data", "evaluation", "training", "tuning")


def __getattr__(name):
    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f"keras_vit.{name}")
    raise AttributeError(f"module 'keras_vit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


__all__ = [
    "applications",
    "convert",
    "create_model",
    "data",
    "evaluation",
    "layers",
    "list_models",
    "model_info",
    "ops",
    "training",
    "tuning",
    "__version__",
]
