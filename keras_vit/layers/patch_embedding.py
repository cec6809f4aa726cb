"""Image to patch tokens: projection, class token and learned position embedding."""

import math

import keras
import numpy as np
from keras import ops

from keras_vit.layers.preprocessing import check_channels


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEmbedding(keras.layers.Layer):
    """Splits an image into patches and embeds them as tokens (Dosovitskiy et al., 2021).

    A convolution with kernel and stride `patch_size` projects each patch to
    `hidden_dim`; an optional learned class token is prepended and a learned
    position embedding added. The embedding belongs to the grid the layer
    was built for; `set_position_embedding` loads one trained on another
    grid by interpolating its grid part (the class token's entry is kept).

    Args:
        hidden_dim: token width.
        patch_size: int or (height, width) of a patch. The hybrids use 1 on a
            CNN feature map.
        use_class_token: prepend a learned class token.
        use_position_embedding: add a learned position embedding.
        use_bias: bias on the projection (CLIP's has none).

    Shape: `(batch, height, width, channels)` in,
        `(batch, class_token + (height / ph) * (width / pw), hidden_dim)` out.
    """

    def __init__(
        self,
        hidden_dim,
        patch_size,
        use_class_token=True,
        use_position_embedding=True,
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.use_bias = use_bias
        self.hidden_dim = hidden_dim
        self.patch_size = _pair(patch_size)
        self.use_class_token = use_class_token
        self.use_position_embedding = use_position_embedding
        self.num_prefix_tokens = int(use_class_token)
        self.projection = keras.layers.Conv2D(
            hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            use_bias=use_bias,
            kernel_initializer="lecun_normal",
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                "PatchEmbedding needs a fixed image size to size its position embedding; "
                f"got input shape {tuple(input_shape)}. Pass input_shape=(H, W, C)."
            )
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by the patch size {ph}x{pw}. "
                f"Use an image size that is a multiple of the patch size, e.g. "
                f"{_round_to(height, ph)}x{_round_to(width, pw)}."
            )
        self.channels = input_shape[-1]
        self.grid_size = (height // ph, width // pw)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.projection.build(input_shape)
        if self.use_class_token:
            self.class_token = self.add_weight(
                shape=(1, 1, self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=1e-6),
                name="class_token",
            )
        if self.use_position_embedding:
            self.position_embedding = self.add_weight(
                shape=(1, self.num_prefix_tokens + self.num_patches, self.hidden_dim),
                initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                name="position_embedding",
            )
        self.built = True

    def call(self, images):
        check_channels(images, self.channels, self.name)
        x = self.projection(images)
        batch = ops.shape(x)[0]
        x = ops.reshape(x, (batch, self.num_patches, self.hidden_dim))
        if self.use_class_token:
            class_token = ops.broadcast_to(
                ops.cast(self.class_token, x.dtype), (batch, 1, self.hidden_dim)
            )
            x = ops.concatenate([class_token, x], axis=1)
        if self.use_position_embedding:
            x = x + ops.cast(self.position_embedding, x.dtype)
        return x

    def set_position_embedding(self, embedding, source_grid=None, method="bicubic"):
        """Loads a position embedding, resizing it when it was trained on another grid.

        Args:
            embedding: array `(1, prefix + gh * gw, hidden_dim)` or without the
                leading 1.
            source_grid: `(gh, gw)` of `embedding`; inferred as square when None.
            method: "bicubic" or "bilinear" (PyTorch's `interpolate`
                convention, `align_corners=False`, as timm and transformers use).
        """
        embedding = np.asarray(embedding).reshape(1, -1, self.hidden_dim)
        resized = resize_position_embedding(
            embedding, self.grid_size, self.num_prefix_tokens, source_grid, method
        )
        self.position_embedding.assign(resized)

    def compute_output_shape(self, input_shape):
        ph, pw = self.patch_size
        tokens = None
        if input_shape[1] is not None and input_shape[2] is not None:
            tokens = self.num_prefix_tokens + (input_shape[1] // ph) * (input_shape[2] // pw)
        return (input_shape[0], tokens, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "patch_size": self.patch_size,
                "use_class_token": self.use_class_token,
                "use_position_embedding": self.use_position_embedding,
                "use_bias": self.use_bias,
            }
        )
        return config


def resize_position_embedding(embedding, target_grid, num_prefix_tokens=1, source_grid=None, method="bicubic"):
    """Interpolates the grid part of a position embedding to `target_grid`.

    Args:
        embedding: NumPy array `(1, num_prefix_tokens + gh * gw, dim)`.
        target_grid: `(height, width)` in patches.
        num_prefix_tokens: leading tokens (class token) copied unchanged.
        source_grid: `(gh, gw)`; a square grid is assumed when None.
        method: "bicubic" or "bilinear".

    Returns a NumPy array `(1, num_prefix_tokens + th * tw, dim)`.
    """
    embedding = np.asarray(embedding, dtype=np.float32)
    prefix, grid = embedding[:, :num_prefix_tokens], embedding[0, num_prefix_tokens:]
    if source_grid is None:
        side = math.isqrt(grid.shape[0])
        if side * side != grid.shape[0]:
            raise ValueError(
                f"Cannot infer the grid of a position embedding with {grid.shape[0]} patch "
                "tokens: it is not square. Pass source_grid=(height, width)."
            )
        source_grid = (side, side)
    source_grid, target_grid = tuple(source_grid), tuple(target_grid)
    if source_grid[0] * source_grid[1] != grid.shape[0]:
        raise ValueError(
            f"source_grid {source_grid} has {source_grid[0] * source_grid[1]} cells but the "
            f"embedding has {grid.shape[0]} patch tokens."
        )
    if source_grid == target_grid:
        return embedding
    grid = grid.reshape(source_grid[0], source_grid[1], -1)
    rows = interpolation_matrix(source_grid[0], target_grid[0], method)
    cols = interpolation_matrix(source_grid[1], target_grid[1], method)
    grid = np.einsum("ih,hwc,jw->ijc", rows, grid, cols).reshape(1, -1, grid.shape[-1])
    return np.concatenate([prefix, grid.astype(np.float32)], axis=1)


def interpolation_matrix(in_size, out_size, method="bicubic"):
    """`(out_size, in_size)` matrix of 1-D interpolation weights.

    Matches `torch.nn.functional.interpolate(..., align_corners=False)`:
    cubic convolution with a = -0.75 and indices clamped at the border.
    """
    if method not in ("bicubic", "bilinear"):
        raise ValueError(f"Unknown interpolation method {method!r}; use 'bicubic' or 'bilinear'.")
    scale = in_size / out_size
    centers = (np.arange(out_size) + 0.5) * scale - 0.5
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    if method == "bilinear":
        centers = np.maximum(centers, 0.0)
        base = np.floor(centers).astype(int)
        frac = centers - base
        taps = [(base, 1.0 - frac), (base + 1, frac)]
    else:
        base = np.floor(centers).astype(int)
        t = centers - base
        taps = [(base + k, _cubic(t - k)) for k in (-1, 0, 1, 2)]
    for index, weight in taps:
        np.add.at(weights, (np.arange(out_size), np.clip(index, 0, in_size - 1)), weight)
    return weights


def _cubic(x, a=-0.75):
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _round_to(size, multiple):
    return max(multiple, round(size / multiple) * multiple)
