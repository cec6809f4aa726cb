"""The keras.applications arguments, implemented once for every family.

`include_top`, `pooling`, `classes`, `classifier_activation`, `input_shape`,
`include_preprocessing` and `weights` mean the same thing in every constructor;
the helpers below check and apply them.
"""

import numbers

import keras
import numpy as np

from keras_vit import convert
from keras_vit.layers.preprocessing import ImageNormalization
from keras_vit.layers.token_pooling import POOLING_ALIASES, TokenPooling

# Inputs in [0, 255] -> [-1, 1] (the ViTs) or ImageNet statistics (Swin, ResNets).
INCEPTION_MEAN = INCEPTION_STD = (127.5, 127.5, 127.5)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# CLIP's image statistics (CLIP, OWL-ViT).
CLIP_MEAN = (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255)
CLIP_STD = (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255)


def as_int(value):
    """`value` as a Python int when it is an integer (NumPy integers included, bools not);
    anything else unchanged, for the caller's check to refuse."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return value


def check_head_arguments(model_name, include_top, pooling, classes, supported):
    """Validates `include_top` / `pooling` / `classes` (an int; NumPy integers too); returns the
    canonical pooling.

    `supported` is the family's pooling modes out of "avg", "max", "token";
    "gap" is accepted as "avg". None means no pooling (features), which needs
    `include_top=False`.
    """
    pooling = POOLING_ALIASES.get(pooling, pooling)
    modes = ", ".join(repr(mode) for mode in supported)
    if pooling is not None and pooling not in supported:
        raise ValueError(
            f"{model_name}: pooling must be one of {modes} (or None with include_top=False for the features), "
            f"got {pooling!r}."
        )
    if include_top and pooling is None:
        raise ValueError(
            f"{model_name}: include_top=True needs pooling={modes.replace(', ', ' or ')} to feed the head; "
            "use include_top=False to get the features."
        )
    if include_top and (not isinstance(as_int(classes), int) or classes < 1):
        raise ValueError(f"{model_name}: classes must be a positive int, got {classes!r}.")
    return pooling


def image_input_shape(model_name, input_shape, default_size, multiple_of=1, unit="the patch size", any_size=False):
    """`input_shape` as a `(height, width, channels)` tuple of positive Python ints (NumPy
    integers converted; default `(default_size, default_size, 3)`), with height and width
    multiples of `multiple_of`. With `any_size` (convolutional models), height and width
    may be None: the model then takes images of every size."""
    if input_shape is None:
        return (default_size, default_size, 3)
    if any_size and input_shape is not None and len(input_shape) == 3 and None in tuple(input_shape)[:2]:
        channels = as_int(input_shape[2])
        sides = tuple(None if side is None else as_int(side) for side in input_shape[:2])
        if not isinstance(channels, int) or channels < 1 or any(side is not None and (not isinstance(side, int) or side < 1) for side in sides):
            raise ValueError(f"{model_name}: input_shape {input_shape}: height and width must be positive ints or None, channels a positive int.")
        return (*sides, channels)
    try:
        sides = tuple(as_int(side) for side in input_shape)
    except TypeError:  # not a sequence
        sides = ()
    if len(sides) != 3:
        raise ValueError(
            f"{model_name}: input_shape must be (height, width, channels), got {input_shape}; images are channels_last."
        )
    input_shape = sides
    if not all(isinstance(side, int) and not isinstance(side, bool) for side in input_shape):
        raise ValueError(
            f"{model_name}: input_shape {input_shape}: the model needs a fixed height and width, e.g. "
            f"({default_size}, {default_size}, 3). Build one model per image size; models of other "
            "sizes share weights through get_weights/set_weights."
        )
    height, width, channels = input_shape
    rule = f"height and width must be positive multiples of {unit} {multiple_of}"
    suggestion = max(multiple_of, round(height / multiple_of) * multiple_of)
    if channels < 1 or min(height, width) < multiple_of:
        raise ValueError(f"{model_name}: input_shape {input_shape}: {rule}, e.g. {suggestion}, and channels positive.")
    if height % multiple_of or width % multiple_of:
        raise ValueError(
            f"{model_name}: Image size {height}x{width} is not divisible by {unit} {multiple_of}: {rule}, e.g. {suggestion}."
        )
    return input_shape


def preprocess(x, include_preprocessing, mean, std):
    """Maps raw [0, 255] pixels to the model's input range when `include_preprocessing`."""
    if not include_preprocessing:
        return x
    channels = x.shape[-1]
    per_channel = lambda values: list(values) if channels == len(values) else [float(np.mean(values))] * channels
    return ImageNormalization(per_channel(mean), per_channel(std), name="preprocessing")(x)


def pool(x, pooling, num_prefix_tokens=0):
    """Pools a feature map `(batch, h, w, c)` or a token sequence `(batch, tokens, c)`
    to `(batch, c)`; None returns `x` unchanged."""
    if pooling is None:
        return x
    if len(x.shape) == 3:
        return TokenPooling(pooling, num_prefix_tokens=num_prefix_tokens, name="pooling")(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    return keras.layers.GlobalMaxPooling2D(name="pooling")(x)


def classification_head(x, include_top, classes, classifier_activation, dropout_rate=None, **dense_kwargs):
    """The `head` Dense layer (after an optional `head_dropout`) when `include_top`."""
    if not include_top:
        return x
    if dropout_rate is not None:
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
    return keras.layers.Dense(as_int(classes), activation=classifier_activation, name="head", **dense_kwargs)(x)


def load_weights(model, weights, family):
    """Loads `weights` (None, or a local checkpoint path) into a freshly built `model`."""
    if weights is not None:
        convert.load_weights(model, weights, family=family)
    return model


def feature_extractor(model, stage_outputs, out_indices=None):
    """`model`'s stage outputs as a multi-scale feature extractor (timm's `features_only`).

    `model` is the headless model whose graph holds the `stage_outputs` tensors (weights
    already loaded); `out_indices` picks stages (default all; negative counts from the end).
    Returns a `keras.Model` sharing `model`'s layers whose output is a list of
    `(batch, h_i, w_i, channels_i)` maps, one per chosen stage, strides doubling per stage.
    """
    count = len(stage_outputs)
    indices = tuple(range(count)) if out_indices is None else tuple(as_int(i) for i in out_indices)
    if not indices or any(not isinstance(i, int) or not -count <= i < count for i in indices):
        raise ValueError(
            f"{model.name}: out_indices {out_indices!r} must name stages among 0..{count - 1} (or -{count}..-1); "
            f"the model has {count} stages."
        )
    indices = tuple(i % count for i in indices)
    if len(set(indices)) != len(indices):
        raise ValueError(f"{model.name}: out_indices {out_indices!r} names a stage twice.")
    return keras.Model(model.input, [stage_outputs[i] for i in sorted(indices)], name=f"{model.name}_features")
