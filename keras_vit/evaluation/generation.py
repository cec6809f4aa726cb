"""Images from a generative pixel model: unconditional samples and completions as PNG grids."""

import numpy as np

from keras_vit.applications.igpt.generate import generate
from keras_vit.data.files import atomic_path


def tokens_to_images(tokens, palette):
    """uint8 `(batch, side, side, 3)` images from int `(batch, side * side)` palette indices."""
    palette = np.asarray(palette, "float32")
    tokens = np.asarray(tokens)
    side = int(round(tokens.shape[1] ** 0.5))
    if side * side != tokens.shape[1]:
        raise ValueError(f"tokens_to_images: {tokens.shape[1]} tokens per image is not a square image.")
    if tokens.min() < 0 or tokens.max() >= len(palette):
        raise ValueError(f"tokens_to_images: tokens must index the palette's {len(palette)} colors, got {tokens.min()}..{tokens.max()}.")
    rgb = (palette[tokens] + 1.0) * 127.5
    return np.clip(np.round(rgb), 0, 255).astype("uint8").reshape(len(tokens), side, side, 3)


def image_grid(rows, scale=4, gap=2):
    """Tiles a list of rows (each a uint8 `(n, h, w, 3)` array of equal h, w) into one image,
    each image enlarged `scale` times (nearest neighbour) with a `gap`-pixel white border."""
    rows = [np.repeat(np.repeat(np.asarray(row), scale, axis=1), scale, axis=2) for row in rows]
    columns = max(len(row) for row in rows)
    height, width = rows[0].shape[1:3]
    grid = np.full((len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, "uint8")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            grid[top : top + height, left : left + width] = image
    return grid


def write_png(path, image):
    """Writes a uint8 `(h, w, 3)` array as a PNG, atomically (a temporary file, then a rename)."""
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(np.asarray(image, "uint8")).save(temporary, format="PNG")


def sample_grid(model, palette, num_samples=8, seed=0, temperature=1.0, top_k=None):
    """uint8 grid of `num_samples` unconditional samples (one row)."""
    tokens = generate(model, num_samples=num_samples, temperature=temperature, top_k=top_k, seed=seed)
    return image_grid([tokens_to_images(tokens, palette)])


def completion_grid(model, palette, images_tokens, seed=0, temperature=1.0, top_k=None, completions=2):
    """uint8 grid: a row of the given images' top halves, `completions` rows of sampled bottom
    halves, and a row of the originals (the iGPT paper's Figure 1 layout).

    `images_tokens`: int `(batch, T)` palette indices of the images to complete.
    """
    images_tokens = np.asarray(images_tokens, "int32")
    tokens = images_tokens.shape[1]
    side = int(round(tokens**0.5))
    half = (side // 2) * side
    prompts = images_tokens[:, :half]
    masked = tokens_to_images(images_tokens, palette)
    masked[:, side // 2 :] = 128
    rows = [masked]
    for index in range(completions):
        sampled = generate(model, prompt=prompts, temperature=temperature, top_k=top_k, seed=seed + index)
        rows.append(tokens_to_images(sampled, palette))
    rows.append(tokens_to_images(images_tokens, palette))
    return image_grid(rows)
