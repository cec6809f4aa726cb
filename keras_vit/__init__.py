"""keras-vit: vision transformers and attention-augmented CNNs for Keras 3."""

__version__ = "0.1.0"

from keras_vit import applications, layers
from keras_vit.applications.registry import create_model, list_models


def __getattr__(name):
    # `convert` pulls in safetensors; import it on first use.
    if name == "convert":
        import importlib

        return importlib.import_module("keras_vit.convert")
    raise AttributeError(f"module 'keras_vit' has no attribute {name!r}")


__all__ = ["applications", "convert", "create_model", "layers", "list_models", "__version__"]
