"""Reading COCO-format detection annotations (an instances JSON + images).

Accepted layouts, for `find_coco_files(path, split)`:

- a folder laid out as COCO itself: `path/annotations/instances_<name>.json`
  with the images in `path/<name>/` (e.g. `instances_val2017.json` and
  `val2017/`). `<name>` is `split`, else the first that exists of its
  aliases: `"train"` also reads `train2017`; `"validation"` and `"val"`
  read `val`, `validation` or `val2017`; `"test"` reads `test`, then the
  validation names.
- the path of an instances JSON: the images are in `<root>/<name>/` when
  the file is `<root>/annotations/instances_<name>.json` and that folder
  exists, else next to the JSON. The file is the whole dataset: `split` is
  not used.

Each image's `file_name` is relative to the image folder. Labels are the
COCO category ids themselves, as DETR uses them: the number of classes is
the largest id + 1 (91 for COCO) and ids without a category are named
"N/A". Crowd annotations (`iscrowd: 1`) and boxes of zero width or height
are left out, as DETR does; images without boxes are kept. Everything is
checked when the file is read, before any batch: a ValueError names the
image or annotation and the fix.
"""

import dataclasses
import functools
import json
import math
import os

import numpy as np

from keras_vit.data import pipeline

PLACEHOLDER_NAME = "N/A"
# Boxes may pass the image border by this many pixels (rounding in the
# annotation tools); they are clipped to the image.
BORDER_TOLERANCE = 1.0
_SPLIT_ALIASES = {
    "train": ("train", "train2017"),
    "validation": ("validation", "val", "val2017"),
    "val": ("val", "validation", "val2017"),
    "test": ("test", "val", "validation", "val2017"),
}
_MAX_LISTED = 5


@dataclasses.dataclass(frozen=True)
class CocoAnnotations:
    """The checked content of an instances JSON, one entry per image.

    Attributes:
        files: image paths, sorted by image id.
        image_ids: int64 `(num_images,)`.
        sizes: int32 `(num_images, 2)` `(height, width)` from the JSON.
        boxes: one float32 `(n, 4)` per image, normalized
            `(x1, y1, x2, y2)`.
        labels: one int32 `(n,)` per image, category ids.
        class_names: names indexed by category id.
    """

    files: list
    image_ids: np.ndarray
    sizes: np.ndarray
    boxes: list
    labels: list
    class_names: list


def find_coco_files(path, split):
    """`(json_path, image_dir)` of split `split` of `path` (see the module
    docstring for the layouts)."""
    path = os.path.expanduser(str(path))
    if os.path.isfile(path):
        folder, file_name = os.path.split(os.path.abspath(path))
        stem = os.path.splitext(file_name)[0]
        if os.path.basename(folder) == "annotations" and stem.startswith("instances_"):
            images = os.path.join(os.path.dirname(folder), stem[len("instances_") :])
            if os.path.isdir(images):
                return path, images
        return path, folder
    names = (split,) + tuple(n for n in _SPLIT_ALIASES.get(split, ()) if n != split)
    for name in names:
        json_path = os.path.join(path, "annotations", f"instances_{name}.json")
        if os.path.isfile(json_path):
            images = os.path.join(path, name)
            if not os.path.isdir(images):
                raise ValueError(
                    f"Found {json_path!r} but no image folder {images!r}. Put the "
                    f"images of split {name!r} there (COCO's layout: "
                    "annotations/instances_val2017.json + val2017/), or pass the "
                    "JSON's path to read images next to it."
                )
            return json_path, images
    annotations = os.path.join(path, "annotations")
    found = sorted(os.listdir(annotations)) if os.path.isdir(annotations) else []
    raise ValueError(
        f"Folder {path!r} has no annotations for split {split!r}: looked for "
        f"{[os.path.join('annotations', f'instances_{n}.json') for n in names]}; "
        f"annotations/ holds {found}. Expected COCO's layout "
        "(annotations/instances_<split>.json + <split>/ images), or pass the "
        "path of an instances JSON."
    )


def read_coco_annotations(json_path, image_dir, max_objects):
    """Reads and checks an instances JSON; returns `CocoAnnotations`.

    The result is kept for the process while the file is unchanged (same
    size and modification time), so the trainer's per-epoch pipelines read
    COCO's 450 MB train2017 JSON once.

    Raises ValueError for a file without images or annotations, an image
    without a positive width and height or whose file is missing, an
    annotation of an unknown image or category, a box with a negative
    width or height or outside its image, and an image with more than
    `max_objects` boxes.
    """
    stat = os.stat(json_path)
    return _read_coco_annotations(os.path.realpath(json_path), stat.st_size, stat.st_mtime_ns, image_dir, max_objects)


@functools.lru_cache(maxsize=4)
def _read_coco_annotations(json_path, size, mtime_ns, image_dir, max_objects):
    data = _load_json(json_path)
    for key in ("images", "annotations", "categories"):
        if not data.get(key):
            raise ValueError(
                f"{json_path!r} has no {key!r} (an empty annotation file?). A COCO "
                "instances JSON lists its images, their box annotations and the "
                "categories; point to the instances file of a labeled split."
            )
    class_names, category_ids = _categories(data["categories"], json_path)
    for image in data["images"]:
        _check_image_entry(image, json_path)
    images = sorted(data["images"], key=lambda image: image["id"])
    index = {}
    for i, image in enumerate(images):
        if image["id"] in index:
            raise ValueError(
                f"{json_path!r} lists image id {image['id']} twice. Give each "
                "image its own id."
            )
        index[image["id"]] = i
    sizes = [_image_size(image, json_path) for image in images]
    boxes = [[] for _ in images]
    labels = [[] for _ in images]
    for annotation in data["annotations"]:
        if annotation.get("iscrowd", 0):
            continue
        i = _annotated_image(annotation, index, json_path)
        label = annotation.get("category_id")
        if label not in category_ids:
            raise ValueError(
                f"Annotation {annotation.get('id')} of {json_path!r} (image "
                f"{images[i]['file_name']!r}) has category_id={label!r}, which is not "
                f"among the categories of the file (ids {sorted(category_ids)}), "
                f"so its label would reach or pass the number of classes "
                f"({len(class_names)}). Add the category to 'categories' or fix "
                "the annotation."
            )
        box = _normalized_box(annotation, images[i], sizes[i], json_path)
        if box is not None:
            boxes[i].append(box)
            labels[i].append(label)
    _check_counts(labels, images, max_objects, json_path)
    files = [os.path.join(image_dir, image["file_name"]) for image in images]
    _check_files(files, image_dir)
    return CocoAnnotations(
        files=files,
        image_ids=np.array([image["id"] for image in images], np.int64),
        sizes=np.array(sizes, np.int32),
        boxes=[np.array(b, np.float32).reshape(-1, 4) for b in boxes],
        labels=[np.array(y, np.int32) for y in labels],
        class_names=class_names,
    )


def _load_json(json_path):
    try:
        with open(json_path) as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{json_path!r} is not valid JSON ({error}). Expected a COCO instances "
            "file with 'images', 'annotations' and 'categories'."
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{json_path!r} holds a {type(data).__name__}, not a COCO instances "
            "object with 'images', 'annotations' and 'categories'."
        )
    return data


def _categories(categories, json_path):
    """`(names, ids)`: names indexed by category id ("N/A" where no category
    has the id) and the set of ids."""
    ids = [category.get("id") for category in categories]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(
            f"The category ids of {json_path!r} must be integers >= 0, got "
            f"{ids}. Fix the 'categories' list."
        )
    names = [PLACEHOLDER_NAME] * (max(ids) + 1)
    for category in categories:
        names[category["id"]] = str(category.get("name", category["id"]))
    return names, set(ids)


def _check_image_entry(image, json_path):
    for field in ("id", "file_name"):
        if field not in image:
            raise ValueError(
                f"An image entry of {json_path!r} has no {field!r}: {image}. "
                "Each image needs 'id', 'file_name', 'width' and 'height'."
            )


def _image_size(image, json_path):
    height, width = image.get("height"), image.get("width")
    if not all(isinstance(v, (int, float)) and v > 0 for v in (height, width)):
        raise ValueError(
            f"Image {image['file_name']!r} of {json_path!r} has height={height!r} "
            f"and width={width!r}; both must be positive numbers of pixels. Add "
            "them to its entry in 'images'."
        )
    return height, width


def _annotated_image(annotation, index, json_path):
    image_id = annotation.get("image_id")
    if image_id not in index:
        raise ValueError(
            f"Annotation {annotation.get('id')} of {json_path!r} refers to image_id="
            f"{image_id!r}, which is not in 'images'. Add the image or remove the "
            "annotation."
        )
    return index[image_id]


def _normalized_box(annotation, image, size, json_path):
    """Normalized `(x1, y1, x2, y2)` of a COCO `[x, y, width, height]` box,
    clipped to the image; None for a box of zero width or height."""
    bbox = annotation.get("bbox")

    def where():
        return (
            f"Annotation {annotation.get('id')} of {json_path!r} (image "
            f"{image['file_name']!r}, {size[1]}x{size[0]})"
        )

    if (
        not isinstance(bbox, (list, tuple))
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
    ):
        raise ValueError(
            f"{where()} has bbox={bbox!r}. COCO boxes are 4 numbers [x, y, width, "
            "height] in pixels."
        )
    x, y, w, h = bbox
    if w < 0 or h < 0:
        raise ValueError(
            f"{where()} has bbox={bbox} with a negative width or height (x2 < x1 or "
            "y2 < y1). COCO boxes are [x, y, width, height], not [x1, y1, x2, y2]: "
            "convert them, or fix the annotation."
        )
    height, width = size
    tol = BORDER_TOLERANCE
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise ValueError(
            f"{where()} has bbox={bbox} (x1={x}, y1={y}, x2={x + w}, y2={y + h}), "
            "outside the image. Fix the box, or the image's width and height in "
            "'images'; boxes are [x, y, width, height] in pixels of the original "
            "image."
        )
    if w == 0 or h == 0:
        return None
    x1, x2 = (min(max(v, 0), width) / width for v in (x, x + w))
    y1, y2 = (min(max(v, 0), height) / height for v in (y, y + h))
    return (x1, y1, x2, y2)


def _check_counts(labels, images, max_objects, json_path):
    counts = np.array([len(y) for y in labels])
    worst = int(np.argmax(counts))
    if counts[worst] > max_objects:
        raise ValueError(
            f"Image {images[worst]['file_name']!r} (id {images[worst]['id']}) of "
            f"{json_path!r} has {counts[worst]} boxes, more than "
            f"max_objects={max_objects} ({int((counts > max_objects).sum())} images "
            f"do). Raise max_objects to at least {counts.max()} (it must stay <= "
            "the model's number of queries)."
        )


def _check_files(files, image_dir):
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        listed = ", ".join(repr(path) for path in missing[:_MAX_LISTED])
        if len(missing) > _MAX_LISTED:
            listed += f" and {len(missing) - _MAX_LISTED} more"
        raise ValueError(
            f"{len(missing)} of the {len(files)} images listed in the annotations are "
            f"missing from {image_dir!r}: {listed}. Copy them there (each "
            "'file_name' is relative to the image folder), or remove their entries."
        )
    pipeline._check_image_headers(files, image_dir)
