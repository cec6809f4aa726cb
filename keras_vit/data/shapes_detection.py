"""The offline `shapes_detection` dataset: several colored shapes per image.

128x128 RGB images holding 1 to 6 shapes (circle, square, triangle, star,
cross, ring), drawn with `shapes`' renderer on its backgrounds. Each shape
is rotated, 11 to 70 pixels on its longer side (log-uniform: about 60% are
COCO "small", under 32x32 pixels, the rest "medium"), and in a palette
color that contrasts with the background. Shapes may overlap: later ones are drawn
over earlier ones, but each keeps at least half of its pixels visible, and
shapes of the same color never touch.

Boxes are the tight box of each shape's FULL extent (the pixels it covers by
half or more before anything is drawn over it), as DETR-style datasets keep
them. Features: `image`, `image_id` (the example's index), and `objects`, a
sequence of `bbox` (normalized `ymin, xmin, ymax, xmax`, TFDS's order),
`label` (the shape), `color` and `caption` ("red star"), kept for
open-vocabulary detection.

Every example is a pure function of its split and index, drawn with NumPy
only, so the dataset is generated locally (no download) and is identical on
every machine. After `import keras_vit.data`:

```python
ds = tfds.load("shapes_detection", split="train", data_dir=data_dir)  # 6000 / 1200
ds = tfds.load("shapes_detection/small", split="test", data_dir=data_dir)  # 240 / 48
```

Records are stored in index order, and `shapes_detection/small` holds the
first examples of each split of the default config.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from keras_vit.data import shapes

IMAGE_SIZE = 128
MAX_OBJECTS = 6
_SEED = 2718
_SPLIT_IDS = {"train": 0, "test": 1}
# Longer side of a shape's box in pixels, sampled log-uniformly.
_BOX_SIDE_RANGE = (11.0, 70.0)
# Pixels kept free between a shape's box and the image border.
_MARGIN = 2
# Share of a shape's pixels that must stay visible under later shapes.
_MIN_VISIBLE = 0.5
# Placements tried per shape before it is left out.
_MAX_TRIES = 20


def _sample_object(rng, background_colors):
    """A random shape: name, color, radius and rotation angle."""
    shape = shapes.SHAPE_NAMES[rng.integers(len(shapes.SHAPE_NAMES))]
    color = shapes._sample_color(rng, background_colors)
    angle = rng.uniform(0, 2 * np.pi)
    box = shapes.shape_box(shape, angle)
    side = np.exp(rng.uniform(*np.log(_BOX_SIDE_RANGE)))
    radius = side / np.max(box[2:] - box[:2])
    return {"shape": shape, "color": color, "angle": angle, "radius": radius, "box": box}


def _place(rng, spec):
    """A random center `(y, x)` that keeps the shape's box `_MARGIN` pixels
    inside the image, and that box `(ymin, xmin, ymax, xmax)` in pixels."""
    low = _MARGIN - spec["box"][:2] * spec["radius"]
    high = IMAGE_SIZE - _MARGIN - spec["box"][2:] * spec["radius"]
    center = rng.uniform(low, high)
    return center, np.concatenate([center, center]) + spec["box"] * spec["radius"]


def _apart(box, color, placed):
    """Whether pixel `box` is at least `_MARGIN` pixels away from the boxes
    of the placed shapes of `color` (same-colored shapes never merge)."""
    return not any(
        np.all(box[:2] < other["pixel_box"][2:] + _MARGIN)
        and np.all(other["pixel_box"][:2] < box[2:] + _MARGIN)
        for other in placed
        if other["color"] == color
    )


def _visible(coverage, placed):
    """Whether every placed shape stays at least `_MIN_VISIBLE` visible
    under a new shape of `coverage`."""
    return all(
        (other["visible"] * (1.0 - coverage)).sum() >= _MIN_VISIBLE * other["area"]
        for other in placed
    )


def sample_scene(index, split="train"):
    """The background and shapes of example `index` of `split`.

    Returns:
        `(background, objects)`: float array `(128, 128, 3)` in `[0, 255]`,
        and 1 to 6 dicts in drawing order, each with `shape`, `color`,
        `center` `(y, x)` and `radius` (circumradius) in pixels, `angle`
        (radians), and `coverage`, the shape's anti-aliased coverage of
        each pixel, float32 `(128, 128)` in `[0, 1]`.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(
            f"Unknown split {split!r} for the shapes_detection dataset. "
            f"Expected one of {sorted(_SPLIT_IDS)}."
        )
    rng = np.random.default_rng([_SEED, _SPLIT_IDS[split], index])
    background, background_colors = shapes._sample_background(rng, IMAGE_SIZE)
    placed = []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        spec = _sample_object(rng, background_colors)
        for _ in range(_MAX_TRIES):
            center, pixel_box = _place(rng, spec)
            if not _apart(pixel_box, spec["color"], placed):
                continue
            coverage = shapes.shape_coverage(
                spec["shape"], center, spec["radius"], spec["angle"], IMAGE_SIZE
            )
            if _visible(coverage, placed):
                break
        else:
            continue  # No room left for this shape: leave it out.
        for other in placed:
            other["visible"] = other["visible"] * (1.0 - coverage)
        placed.append(
            {
                **spec,
                "center": center,
                "coverage": coverage,
                "pixel_box": pixel_box,
                "visible": coverage,
                "area": coverage.sum(),
            }
        )
    keys = ("shape", "color", "center", "radius", "angle", "coverage")
    return background, [{key: spec[key] for key in keys} for spec in placed]


def render_scene(background, objects):
    """Draws `objects` (see `sample_scene`) over `background` in order.

    Returns:
        `(image, boxes)`: uint8 array `(size, size, 3)` and float32
        `(len(objects), 4)` normalized `[ymin, xmin, ymax, xmax]`, the
        tight box of each shape's full extent.
    """
    image = np.asarray(background, np.float64)
    for spec in objects:
        alpha = spec["coverage"][..., None]
        image = image * (1.0 - alpha) + np.asarray(shapes.PALETTE[spec["color"]]) * alpha
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    boxes = [shapes.tight_bbox(spec["coverage"]) for spec in objects]
    return image, np.array(boxes, np.float32).reshape(-1, 4)


def render_detection_example(index, split="train"):
    """Renders example `index` of `split` ("train" or "test").

    Returns:
        dict of NumPy values: `image` uint8 `(128, 128, 3)`, `image_id`
        (`index`), and `objects`: `bbox` float32 `(n, 4)` normalized
        `[ymin, xmin, ymax, xmax]`, `label` int64 `(n,)` (index in
        `SHAPE_NAMES`), `color` int64 `(n,)` (index in `COLOR_NAMES`),
        `caption` list of n strings such as "red star"; n in 1..6.
    """
    background, objects = sample_scene(index, split)
    image, boxes = render_scene(background, objects)
    return {
        "image": image,
        "image_id": index,
        "objects": {
            "bbox": boxes,
            "label": np.array([shapes.SHAPE_NAMES.index(o["shape"]) for o in objects], np.int64),
            "color": np.array([shapes.COLOR_NAMES.index(o["color"]) for o in objects], np.int64),
            "caption": [f"{o['color']} {o['shape']}" for o in objects],
        },
    }


@dataclasses.dataclass
class ShapesDetectionConfig(tfds.core.BuilderConfig):
    """Split sizes of a `ShapesDetection` config."""

    train_examples: int = 0
    test_examples: int = 0


class ShapesDetection(tfds.core.GeneratorBasedBuilder):
    """Procedurally generated multi-object detection: 6 classes, 128x128 RGB, no download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    TRAIN_EXAMPLES = 6000
    TEST_EXAMPLES = 1200
    BUILDER_CONFIGS = [
        ShapesDetectionConfig(
            name="default",
            description="Full size.",
            train_examples=TRAIN_EXAMPLES,
            test_examples=TEST_EXAMPLES,
        ),
        ShapesDetectionConfig(
            name="small",
            description="First 1/25 of each split, for quick tests.",
            train_examples=TRAIN_EXAMPLES // 25,
            test_examples=TEST_EXAMPLES // 25,
        ),
    ]
    # Nothing is downloaded: no checksums to look up (see `shapes.Shapes`).
    url_infos = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                    "image_id": np.int64,
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=shapes.SHAPE_NAMES),
                            "color": tfds.features.ClassLabel(names=shapes.COLOR_NAMES),
                            "caption": tfds.features.Text(),
                        }
                    ),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.train_examples),
            "test": self._generate_examples("test", config.test_examples),
        }

    def _generate_examples(self, split, num_examples):
        for index in range(num_examples):
            yield index, render_detection_example(index, split)
