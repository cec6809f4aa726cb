"""Pixel tokens of the iGPT colour palette, in `keras.ops` (they run in compiled steps on every
backend): `quantize` maps RGB pixels to the index of their nearest palette colour, `dequantize`
maps tokens back to colours. The palette is float `(K, 3)` in [-1, 1]
(`keras_vit.data.fit_palette` / `load_palette`); token `K` is the start-of-sequence / mask id,
not a colour.
"""

import keras
import numpy as np
from keras import ops

# Float images beyond +-this are not in [-1, 1] (a model's output may overshoot it a little).
_FLOAT_LIMIT = 2.0


def quantize(images, palette):
    """Tokens of `images`: each pixel's nearest palette colour, in raster order.

    The squared distance is summed over the three channels from per-channel differences in
    float32, not as a matrix product: it is exact to float32 rounding and no GPU runs it in
    TF32 (as one may a float32 matmul), so backends and devices pick the same colours as the
    `tf.data` quantizer but for pixels within rounding of a tie (ties go to the lower index).
    It needs `(..., H * W, K)` floats.

    Args:
        images: `(..., H, W, 3)` RGB: float in [-1, 1], or uint8 (any integer dtype) in
            [0, 255], scaled by `x / 127.5 - 1`. Concrete float images with values beyond
            +-2 (e.g. float images in [0, 255]) raise a ValueError; traced ones are not checked.
        palette: float `(K, 3)` in [-1, 1].

    Returns:
        int32 tokens `(..., H * W)` in [0, K).
    """
    palette = _palette_tensor(palette)
    images = ops.convert_to_tensor(images)
    shape = tuple(images.shape)
    if len(shape) < 3 or shape[-1] not in (3, None):
        raise ValueError(
            f"quantize expects RGB images of shape (..., height, width, 3), got shape {shape}. "
            "Convert grayscale or RGBA images to RGB first."
        )
    dtype = keras.backend.standardize_dtype(images.dtype)
    pixels = ops.cast(images, "float32")
    if "int" in dtype:
        pixels = pixels / 127.5 - 1.0
    elif "float" not in dtype:
        raise ValueError(f"quantize expects float images in [-1, 1] or uint8 in [0, 255], got dtype {dtype}.")
    else:
        _check_float_range(pixels)
    dynamic = ops.shape(images)
    height, width = dynamic[-3], dynamic[-2]
    leading = tuple(dynamic[:-3])
    pixels = ops.reshape(pixels, (-1, height * width, 1, 3))
    distances = None
    for channel in range(3):
        term = ops.square(pixels[..., channel] - palette[:, channel])
        distances = term if distances is None else distances + term
    tokens = ops.cast(ops.argmin(distances, axis=-1), "int32")
    return ops.reshape(tokens, leading + (height * width,) if len(leading) != 1 else (-1, height * width))


def dequantize(tokens, palette, image_size=None):
    """Colours of `tokens`: `palette[tokens]`.

    Tokens outside [0, K) raise a ValueError when they are concrete (eager calls); inside a
    traced function (`jit`, `tf.function`, a compiled train step) they are not checked and
    the result for them is undefined.

    Args:
        tokens: integer `(..., T)` in [0, K).
        palette: float `(K, 3)` in [-1, 1].
        image_size: None, or `(H, W)` (an int for square images) with `H * W == T`.

    Returns:
        float32 images in [-1, 1]: `(..., T, 3)`, or `(..., H, W, 3)` with `image_size`.
    """
    palette = _palette_tensor(palette)
    tokens = ops.convert_to_tensor(tokens)
    dtype = keras.backend.standardize_dtype(tokens.dtype)
    if "int" not in dtype:
        raise ValueError(
            f"dequantize expects integer tokens, got dtype {dtype}. Cast them to int32 "
            "(e.g. the argmax of the logits)."
        )
    if len(tokens.shape) < 1:
        raise ValueError("dequantize expects tokens of shape (..., T), got a scalar.")
    _check_token_range(tokens, int(palette.shape[0]))
    images = ops.take(palette, ops.cast(tokens, "int32"), axis=0)
    if image_size is None:
        return images
    height, width = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    length = tokens.shape[-1]
    if length is not None and height * width != length:
        raise ValueError(
            f"image_size={image_size} holds {height * width} pixels, but the tokens have "
            f"T={length} per image (shape {tuple(tokens.shape)}). Pass an (H, W) with "
            f"H * W = {length}, or image_size=None for (..., T, 3)."
        )
    leading = tuple(ops.shape(tokens)[:-1])
    return ops.reshape(images, leading + (height, width, 3) if len(leading) != 1 else (-1, height, width, 3))


def _palette_tensor(palette):
    shape = tuple(palette.shape) if hasattr(palette, "shape") else np.shape(palette)
    if len(shape) != 2 or shape[-1] != 3 or shape[0] == 0:
        raise ValueError(
            f"The palette has shape {shape}, expected (K, 3): K RGB colours in [-1, 1] "
            "(keras_vit.data.fit_palette or load_palette)."
        )
    return ops.cast(ops.convert_to_tensor(palette), "float32")


def _concrete(value):
    """`value` as NumPy, or None when it is symbolic (traced or a KerasTensor)."""
    if isinstance(value, keras.KerasTensor):
        return None
    try:
        return ops.convert_to_numpy(value)
    except Exception:  # a tracer (JAX), a graph tensor (TF): no value to check
        return None


def _check_float_range(pixels):
    if isinstance(pixels, keras.KerasTensor) or 0 in tuple(pixels.shape):
        return
    low, high = _concrete(ops.min(pixels)), _concrete(ops.max(pixels))
    if low is not None and high is not None and (low < -_FLOAT_LIMIT or high > _FLOAT_LIMIT):
        raise ValueError(
            f"quantize expects float images in [-1, 1], got values from {float(low):g} to "
            f"{float(high):g}. Pass uint8 images in [0, 255], or scale float ones in [0, 255] "
            "with x / 127.5 - 1."
        )


def _check_token_range(tokens, size):
    if isinstance(tokens, keras.KerasTensor) or 0 in tuple(tokens.shape):
        return
    low, high = _concrete(ops.min(tokens)), _concrete(ops.max(tokens))
    if low is None or high is None or (0 <= low and high < size):
        return
    bad = int(high) if high >= size else int(low)
    hint = (
        f" Id {size} is the start-of-sequence / mask id, not a colour: drop it (e.g. the first "
        "input token) before dequantizing."
        if bad == size
        else ""
    )
    raise ValueError(
        f"dequantize got token {bad}, outside [0, {size}) for a palette of {size} colours.{hint} "
        f"Check that the tokens come from this palette (or clip / mask them)."
    )
