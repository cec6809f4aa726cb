"""The offline `shapes` dataset: one colored geometric shape per image.

64x64 RGB images of a circle, square, triangle, star, cross or ring (the
label), rotated, 35%-75% of the image wide, in one of 8 palette colors, on a
dark or light background (solid, two-color gradient or light noise texture)
whose luma differs from the shape's by at least 80. Features: `image`,
`label`, `color`, `bbox` (tight box of the shape) and `caption` ("red star").

Every example is a pure function of its split and index, drawn with NumPy
only, so the dataset is generated locally (no download) and is identical on
every machine. After `import keras_vit.data`:

```python
ds = tfds.load("shapes", split="train", data_dir=data_dir)  # 6000 / 1200
ds = tfds.load("shapes/small", split="test", data_dir=data_dir)  # 600 / 120
```

Records are stored in index order, and `shapes/small` holds the first
examples of each split of the default config.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 64
SHAPE_NAMES = ("circle", "square", "triangle", "star", "cross", "ring")
PALETTE = {
    "red": (220, 38, 38),
    "green": (34, 160, 60),
    "blue": (37, 84, 220),
    "yellow": (245, 215, 35),
    "orange": (245, 135, 20),
    "purple": (135, 55, 190),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOR_NAMES = tuple(PALETTE)

_SEED = 1729
_SPLIT_IDS = {"train": 0, "test": 1}
# Longer side of the shape's box, as a fraction of the image side.
_BOX_SIDE_RANGE = (0.35, 0.75)
# Pixels kept free between the shape and the border, so that the default
# 0.875 center crop of the eval pipeline never cuts a shape.
_MARGIN = 5
_SUPERSAMPLING = 4
# ITU-R BT.601 luma weights (they sum to 1).
_LUMA = np.array([0.299, 0.587, 0.114])
# Backgrounds are dark or light: white and yellow always contrast with a
# dark one, black with a light one.
_BACKGROUND_LUMA_BANDS = ((10.0, 75.0), (180.0, 245.0))
# Minimum luma difference between the shape and every background color.
_MIN_LUMA_CONTRAST = 80.0
# Light noise texture: smooth blotches plus a fine grain.
_TEXTURE_STD_RANGE = (10.0, 25.0)
_TEXTURE_CELLS = 4
_GRAIN_STD = 3.0

_STAR_INNER_RADIUS = 0.45
_RING_INNER_RADIUS = 0.55
_CROSS_HALF_WIDTH = 0.32
_CROSS_HALF_LENGTH = 0.94
_SQUARE_HALF_SIDE = 0.707


def _star(u, v):
    # Fold the plane into the half sector between a tip (angle pi/5) and an
    # inner vertex (angle 0), then test the side of the edge joining them.
    sector = 2 * np.pi / 5
    angle = np.abs(np.mod(np.arctan2(v, u), sector) - sector / 2)
    rho = np.hypot(u, v)
    x, y = rho * np.cos(angle), rho * np.sin(angle)
    dx = np.cos(sector / 2) - _STAR_INNER_RADIUS
    dy = np.sin(sector / 2)
    return dx * y - dy * (x - _STAR_INNER_RADIUS) >= 0


def _triangle(u, v):
    inside = np.ones(u.shape, bool)
    for k in range(3):
        angle = np.pi / 2 + 2 * np.pi * k / 3
        inside &= u * np.cos(angle) + v * np.sin(angle) >= -0.5
    return inside


def _cross(u, v):
    u, v = np.abs(u), np.abs(v)
    bar = (u <= _CROSS_HALF_LENGTH) & (v <= _CROSS_HALF_WIDTH)
    return bar | ((v <= _CROSS_HALF_LENGTH) & (u <= _CROSS_HALF_WIDTH))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= _RING_INNER_RADIUS**2)


def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= _SQUARE_HALF_SIDE


# Indicator functions of each shape inscribed in the unit circle.
_SHAPES = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
    "ring": _ring,
}


def _polygon(radius, angles):
    """Points at `radius` from the origin, at each of `angles`."""
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def _mirrored(u, v):
    """The 4 points `(+-u, +-v)`."""
    return np.array([[u, v], [u, -v], [-u, v], [-u, -v]])


# Extreme points `(u, v)` of each shape, to size it by its bounding box.
_CORNERS = {
    "circle": _polygon(1.0, np.linspace(0, 2 * np.pi, 360, endpoint=False)),
    "square": _mirrored(_SQUARE_HALF_SIDE, _SQUARE_HALF_SIDE),
    "triangle": _polygon(1.0, np.pi / 2 + 2 * np.pi * np.arange(3) / 3),
    "star": _polygon(1.0, 2 * np.pi * np.arange(5) / 5),
    "cross": np.concatenate(
        [
            _mirrored(_CROSS_HALF_LENGTH, _CROSS_HALF_WIDTH),
            _mirrored(_CROSS_HALF_WIDTH, _CROSS_HALF_LENGTH),
        ]
    ),
}
_CORNERS["ring"] = _CORNERS["circle"]


def shape_box(shape, angle):
    """`(ymin, xmin, ymax, xmax)` of a rotated shape of unit circumradius."""
    u, v = _CORNERS[shape].T
    x = u * np.cos(angle) - v * np.sin(angle)
    y = u * np.sin(angle) + v * np.cos(angle)
    return np.array([y.min(), x.min(), y.max(), x.max()])


def shape_coverage(shape, center, radius, angle, image_size=IMAGE_SIZE):
    """Anti-aliased coverage of a shape, by supersampling each pixel.

    Args:
        shape: one of `SHAPE_NAMES`.
        center: `(y, x)` in pixels (pixel `i` spans `[i, i + 1)`).
        radius: circumradius in pixels.
        angle: rotation in radians.
        image_size: side of the square image.

    Returns:
        float32 array `(image_size, image_size)` in `[0, 1]`.
    """
    inside = _SHAPES[shape]
    cy, cx = center
    top = int(np.clip(np.floor(cy - radius - 1), 0, image_size))
    bottom = int(np.clip(np.ceil(cy + radius + 1), 0, image_size))
    left = int(np.clip(np.floor(cx - radius - 1), 0, image_size))
    right = int(np.clip(np.ceil(cx + radius + 1), 0, image_size))
    s = _SUPERSAMPLING
    offsets = (np.arange(s) + 0.5) / s
    ys = (np.arange(top, bottom)[:, None] + offsets).reshape(-1, 1) - cy
    xs = (np.arange(left, right)[:, None] + offsets).reshape(1, -1) - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xs * cos + ys * sin) / radius
    v = (ys * cos - xs * sin) / radius
    samples = inside(u, v).reshape(bottom - top, s, right - left, s)
    coverage = np.zeros((image_size, image_size), np.float32)
    coverage[top:bottom, left:right] = samples.mean(axis=(1, 3))
    return coverage


def tight_bbox(coverage):
    """Normalized `[ymin, xmin, ymax, xmax]` of the pixels half covered or more.

    Args:
        coverage: array `(height, width)` in `[0, 1]`.

    Returns:
        float32 array `(4,)`, box edges on pixel boundaries.
    """
    height, width = coverage.shape
    mask = coverage >= 0.5
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array(
        [
            rows[0] / height,
            cols[0] / width,
            (rows[-1] + 1) / height,
            (cols[-1] + 1) / width,
        ],
        np.float32,
    )


def render_shape(shape, color, background, *, center, radius, angle=0.0):
    """Draws one shape over a background.

    Args:
        shape: one of `SHAPE_NAMES`.
        color: one of `COLOR_NAMES`.
        background: array `(size, size, 3)` with values in `[0, 255]`.
        center: `(y, x)` in pixels.
        radius: circumradius in pixels.
        angle: rotation in radians.

    Returns:
        `(image, bbox)`: uint8 array `(size, size, 3)` and the float32
        normalized tight box `(4,)` of the shape.
    """
    coverage = shape_coverage(shape, center, radius, angle, len(background))
    alpha = coverage[..., None]
    image = background * (1.0 - alpha) + np.asarray(PALETTE[color]) * alpha
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image, tight_bbox(coverage)


def _random_color(rng, band):
    """A random RGB color, float `(3,)`, whose luma lies in `band`."""
    luma = rng.uniform(*band)
    chroma = rng.uniform(-1.0, 1.0, 3)
    chroma -= chroma @ _LUMA  # Adding it to gray keeps the luma.
    headroom = np.where(chroma > 0, 255.0 - luma, luma)
    saturation = np.min(headroom / np.maximum(np.abs(chroma), 1e-9))
    return luma + rng.uniform() * saturation * chroma


def _smooth_noise(rng, size, std):
    """Bilinearly upsampled Gaussian noise, float `(size, size, 3)`."""
    coarse = rng.normal(0.0, std, (_TEXTURE_CELLS + 1, _TEXTURE_CELLS + 1, 3))
    grid = np.linspace(0, _TEXTURE_CELLS, size)
    nodes = np.arange(_TEXTURE_CELLS + 1)
    weights = np.maximum(0.0, 1.0 - np.abs(grid[:, None] - nodes))
    return np.einsum("yi,ijc,xj->yxc", weights, coarse, weights)


def _sample_background(rng, size):
    """A solid, gradient or textured background, dark or light.

    Returns:
        `(background, colors)`: float array `(size, size, 3)` in
        `[0, 255]`, and the colors whose lumas bound the background's.
    """
    band = _BACKGROUND_LUMA_BANDS[rng.integers(2)]
    kind = rng.integers(3)
    start = _random_color(rng, band)
    if kind == 0:  # Solid color.
        return np.broadcast_to(start, (size, size, 3)), [start]
    if kind == 1:  # Two-color linear gradient.
        end = _random_color(rng, band)
        theta = rng.uniform(0, 2 * np.pi)
        grid = (np.arange(size) + 0.5) / size - 0.5
        t = np.cos(theta) * grid[None, :] + np.sin(theta) * grid[:, None]
        t = (t - t.min()) / (t.max() - t.min())
        return start + t[..., None] * (end - start), [start, end]
    texture = _smooth_noise(rng, size, rng.uniform(*_TEXTURE_STD_RANGE))
    texture += rng.normal(0.0, _GRAIN_STD, (size, size, 3))
    return np.clip(start + texture, 0, 255), [start]


def _sample_color(rng, background_colors):
    """A palette color whose luma is far from all `background_colors`."""
    palette_luma = np.array(list(PALETTE.values())) @ _LUMA
    background_luma = np.array(background_colors) @ _LUMA
    contrast = np.abs(palette_luma[:, None] - background_luma).min(axis=1)
    candidates = np.flatnonzero(contrast >= _MIN_LUMA_CONTRAST)
    return COLOR_NAMES[int(rng.choice(candidates))]


def render_example(index, split="train"):
    """Renders example `index` of `split` ("train" or "test").

    Returns:
        dict of NumPy values: `image` uint8 `(64, 64, 3)`, `label` (index in
        `SHAPE_NAMES`), `color` (index in `COLOR_NAMES`), `bbox` float32
        `(4,)` normalized `[ymin, xmin, ymax, xmax]`, `caption` such as
        "red circle".
    """
    if split not in _SPLIT_IDS:
        raise ValueError(
            f"Unknown split {split!r} for the shapes dataset. "
            f"Expected one of {sorted(_SPLIT_IDS)}."
        )
    rng = np.random.default_rng([_SEED, _SPLIT_IDS[split], index])
    label = index % len(SHAPE_NAMES)
    background, background_colors = _sample_background(rng, IMAGE_SIZE)
    color = _sample_color(rng, background_colors)
    shape = SHAPE_NAMES[label]
    angle = rng.uniform(0, 2 * np.pi)
    box = shape_box(shape, angle)
    side = rng.uniform(*_BOX_SIDE_RANGE) * IMAGE_SIZE
    radius = side / np.max(box[2:] - box[:2])
    center = rng.uniform(
        _MARGIN - box[:2] * radius, IMAGE_SIZE - _MARGIN - box[2:] * radius
    )
    image, bbox = render_shape(
        shape,
        color,
        background,
        center=center,
        radius=radius,
        angle=angle,
    )
    return {
        "image": image,
        "label": label,
        "color": COLOR_NAMES.index(color),
        "bbox": bbox,
        "caption": f"{color} {shape}",
    }


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """Split sizes of a `Shapes` config."""

    train_examples: int = 0
    test_examples: int = 0


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Procedurally generated shapes: 6 classes, 64x64 RGB, no download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    TRAIN_EXAMPLES = 6000
    TEST_EXAMPLES = 1200
    BUILDER_CONFIGS = [
        ShapesConfig(
            name="default",
            description="Full size.",
            train_examples=TRAIN_EXAMPLES,
            test_examples=TEST_EXAMPLES,
        ),
        ShapesConfig(
            name="small",
            description="First tenth of each split, for quick tests.",
            train_examples=TRAIN_EXAMPLES // 10,
            test_examples=TEST_EXAMPLES // 10,
        ),
    ]
    # Nothing is downloaded, so there are no checksums to look up. This also
    # sidesteps the lookup that needs the `importlib_resources` package on
    # Python >= 3.9 (tensorflow/datasets#11212).
    url_infos = None

    def _info(self):
        size = (IMAGE_SIZE, IMAGE_SIZE, 3)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=size),
                    "label": tfds.features.ClassLabel(names=SHAPE_NAMES),
                    "color": tfds.features.ClassLabel(names=COLOR_NAMES),
                    "bbox": tfds.features.BBoxFeature(),
                    "caption": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {
            "train": self._generate_examples(
                "train", self.builder_config.train_examples
            ),
            "test": self._generate_examples(
                "test", self.builder_config.test_examples
            ),
        }

    def _generate_examples(self, split, num_examples):
        for index in range(num_examples):
            yield index, render_example(index, split)
