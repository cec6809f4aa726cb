"""Constants (masks, gather indices) that layers precompute in NumPy."""

import keras
from keras import ops


def device_constant(array):
    """`array` in the form that costs nothing per call on the current backend.

    TensorFlow and JAX embed a NumPy array as a constant of the traced graph
    once. Torch runs eagerly and would copy it to the device on every call, so
    it is converted once here.
    """
    if keras.backend.backend() == "torch":
        return ops.convert_to_tensor(array)
    return array
