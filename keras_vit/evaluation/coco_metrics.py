"""COCO box mAP through pycocotools.

`coco_evaluate` scores detections (pixel `(x1, y1, x2, y2)` boxes, scores and
labels per image, as `post_process_detections` returns them) against a COCO
ground truth: an instances JSON file (its areas and `iscrowd` flags are used as
they are) or one built in memory from detection batches by `CocoGroundTruth`.
"""

import contextlib
import io
import json
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# The names of `COCOeval.stats`, in order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class CocoGroundTruth:
    """A COCO box ground truth built in memory, image by image or from detection batches.

    Category ids are the labels themselves. Areas are box areas in pixels of the
    original image (there are no masks); no object is a crowd.

    Args:
        num_classes: when given, categories `0 .. num_classes - 1` (a class without
            objects is then simply skipped by COCO's mean); else the labels seen.
    """

    def __init__(self, num_classes=None):
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}.")
        self.num_classes = None if num_classes is None else int(num_classes)
        self._images = {}
        self._annotations = []

    @property
    def image_ids(self):
        """The ids of the images added, in order."""
        return list(self._images)

    def add_image(self, image_id, image_size, boxes=(), labels=()):
        """Adds one image and its objects.

        Args:
            image_id: int id, unique in this ground truth.
            image_size: `(height, width)` of the original image in pixels.
            boxes: `(n, 4)` pixel `(x1, y1, x2, y2)` in that image.
            labels: `(n,)` int class indices.
        """
        image_id = int(image_id)
        if image_id in self._images:
            raise ValueError(
                f"Image id {image_id} was added twice. Each image must be evaluated once: iterate the validation "
                "dataset without .repeat(), or pass steps= to stop after one pass."
            )
        height, width = (int(v) for v in np.asarray(image_size).reshape(2))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        labels = np.asarray(labels).reshape(-1)
        if len(boxes) != len(labels):
            raise ValueError(f"Image {image_id}: {len(boxes)} boxes but {len(labels)} labels; pass one label per box.")
        self._check_labels(image_id, labels)
        self._images[image_id] = {"id": image_id, "height": height, "width": width}
        for box, label in zip(boxes, labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            self._annotations.append({
                "id": len(self._annotations) + 1,  # COCOeval reads id 0 as "unmatched"
                "image_id": image_id,
                "category_id": int(label),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            })

    def _check_labels(self, image_id, labels):
        if labels.size and (labels.min() < 0 or (self.num_classes is not None and labels.max() >= self.num_classes)):
            raise ValueError(
                f"Image {image_id} has labels from {labels.min()} to {labels.max()}, outside "
                f"[0, {self.num_classes if self.num_classes is not None else 'classes'}). Check the dataset's labels "
                "and the number of classes."
            )

    def add_batch(self, y):
        """Adds the images of a detection batch's `y` (see `ground_truth_from_batch`)."""
        for image_id, size, truth in zip(np.asarray(y["image_id"]).reshape(-1), np.asarray(y["image_size"]),
                                         ground_truth_from_batch(y)):
            self.add_image(image_id, size, truth["boxes"], truth["labels"])

    @classmethod
    def from_batches(cls, batches, num_classes=None):
        """A ground truth from an iterable of detection `y` dicts, or of `(x, y)` batches."""
        truth = cls(num_classes)
        for batch in batches:
            truth.add_batch(batch[1] if isinstance(batch, (tuple, list)) else batch)
        return truth

    def to_dict(self):
        """The COCO instances dict: "images", "annotations", "categories"."""
        if self.num_classes is not None:
            ids = range(self.num_classes)
        else:
            ids = sorted({annotation["category_id"] for annotation in self._annotations})
        return {
            "images": list(self._images.values()),
            "annotations": [dict(annotation) for annotation in self._annotations],
            "categories": [{"id": int(i), "name": str(i)} for i in ids],
        }

    def to_coco(self):
        """A pycocotools `COCO` object of this ground truth."""
        return _coco_from_dict(self.to_dict())


def ground_truth_from_batch(y, image_sizes=None):
    """Pixel boxes and labels of each image of a detection batch's `y`.

    Args:
        y: dict with "boxes" `(B, T, 4)` normalized cxcywh, "labels" `(B, T)`,
            "valid" `(B, T)` and "image_size" `(B, 2)` (height, width).
        image_sizes: `(B, 2)` sizes to scale to instead of `y["image_size"]`
            (e.g. the resized, unpadded image that is drawn).

    Returns a list of dicts {"boxes": float32 `(n, 4)` xyxy, "labels": int64 `(n,)`}.
    """
    missing = [key for key in ("boxes", "labels", "valid", "image_size") if key not in y]
    if missing:
        raise ValueError(
            f"A detection batch's y needs the keys boxes, labels, valid and image_size; {missing} are missing "
            f"(got {sorted(y)}). Use a dataset from keras_vit.data's detection pipeline."
        )
    boxes = np.asarray(y["boxes"], np.float32)
    sizes = np.asarray(y["image_size"] if image_sizes is None else image_sizes, np.float32).reshape(-1, 2)
    labels, valid = np.asarray(y["labels"]), np.asarray(y["valid"]) > 0
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:2] or valid.shape != boxes.shape[:2]:
        raise ValueError(
            f"y['boxes'] must be (batch, objects, 4) with labels and valid (batch, objects); got shapes "
            f"{boxes.shape}, {labels.shape} and {valid.shape}."
        )
    corners = scale_boxes(center_to_corners(boxes), sizes)
    return [{"boxes": corners[i][valid[i]], "labels": labels[i][valid[i]].astype(np.int64)} for i in range(len(boxes))]


def center_to_corners(boxes):
    """`(..., 4)` (cx, cy, w, h) -> (x1, y1, x2, y2), in the boxes' dtype."""
    boxes = np.asarray(boxes)
    center, size = boxes[..., :2], boxes[..., 2:]
    return np.concatenate([center - 0.5 * size, center + 0.5 * size], axis=-1)


def scale_boxes(boxes, image_sizes):
    """Normalized `(B, n, 4)` xyxy boxes times each image's `(height, width)` `(B, 2)`."""
    sizes = np.asarray(image_sizes, boxes.dtype)
    scale = np.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], axis=1)
    return boxes * scale[:, None, :]


def coco_evaluate(predictions, ground_truth, label_to_category=None, image_ids=None, verbose=False, category_ids=None):
    """COCO box AP and AR of `predictions` against `ground_truth`, via pycocotools' `COCOeval`.

    Args:
        predictions: dict image id -> {"boxes": `(n, 4)` pixel xyxy, "scores":
            `(n,)`, "labels": `(n,)`} (see `post_process_detections`).
        ground_truth: a COCO instances JSON path, a pycocotools `COCO`, a COCO
            instances dict, or a `CocoGroundTruth`.
        label_to_category: the COCO category id of each label: a dict or a
            sequence indexed by label; None for the identity (labels are ids).
        image_ids: the images to evaluate; None for every image of the ground truth
            (an image without predictions then counts as all missed).
        verbose: print pycocotools' messages and summary table.
        category_ids: evaluate only these categories (e.g. those held out in training);
            None for every category of the ground truth.

    Returns a dict of floats: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs,
    ARm, ARl; -1.0 where the ground truth has no object of that kind (COCO's convention).
    """
    printing = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with printing:
        truth = load_ground_truth(ground_truth)
        image_ids = _image_ids(truth, predictions, image_ids)
        results = to_coco_results(predictions, label_to_category)
        detections = truth.loadRes(results) if results else _empty_results(truth)
        evaluator = COCOeval(truth, detections, iouType="bbox")
        evaluator.params.imgIds = image_ids
        if category_ids is not None:
            evaluator.params.catIds = sorted(int(category) for category in category_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats)}


def load_ground_truth(ground_truth):
    """A pycocotools `COCO` from a JSON path, a `COCO`, a dict or a `CocoGroundTruth`."""
    if isinstance(ground_truth, COCO):
        return ground_truth
    if isinstance(ground_truth, CocoGroundTruth):
        return ground_truth.to_coco()
    if isinstance(ground_truth, dict):
        return _coco_from_dict(_with_defaults(ground_truth, "The ground-truth dict"))
    if isinstance(ground_truth, (str, os.PathLike)):
        return _coco_from_dict(_read_instances(os.fspath(ground_truth)))
    raise ValueError(
        f"ground_truth must be a COCO instances JSON path, a pycocotools COCO, a dict or a CocoGroundTruth; "
        f"got {type(ground_truth).__name__}."
    )


def _read_instances(path):
    try:
        with open(path) as file:
            data = json.load(file)
    except FileNotFoundError:
        raise ValueError(f"COCO annotation file {path!r} does not exist. Pass the split's instances_*.json.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"COCO annotation file {path!r} cannot be read ({error}). Pass a COCO JSON.") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path!r} is not a COCO instances file: it has no 'images' list.")
    if not data.get("annotations"):
        raise ValueError(
            f"COCO annotation file {path!r} has no annotations, so there is nothing to score detections against. "
            "Pass the instances file with boxes (e.g. instances_val2017.json, not image_info_test2017.json), or "
            "leave ground_truth unset to build it from the dataset's labels."
        )
    return _with_defaults(data, f"COCO annotation file {path!r}")


def _with_defaults(data, what):
    """The instances dict with COCOeval's required fields filled: "area" (box area) and "iscrowd" (0)
    where missing, "categories" from the annotations when absent."""
    annotations = []
    for index, annotation in enumerate(data.get("annotations", [])):
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4) or {"image_id", "category_id"} - set(annotation):
            raise ValueError(
                f"{what}: annotation {index} needs an 'image_id', a 'category_id' and a 'bbox' [x, y, width, height], "
                f"got {annotation!r}."
            )
        annotations.append({"area": float(bbox[2]) * float(bbox[3]), "iscrowd": 0, **annotation})
        annotations[-1].setdefault("id", index + 1)
    categories = data.get("categories") or [
        {"id": i, "name": str(i)} for i in sorted({a["category_id"] for a in annotations})
    ]
    return {**data, "annotations": annotations, "categories": categories}


def _coco_from_dict(data):
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _image_ids(truth, predictions, image_ids):
    known = set(truth.getImgIds())
    unknown = sorted({int(i) for i in predictions} - known)
    if unknown:
        raise ValueError(
            f"Predictions name images {unknown[:10]} that the ground truth does not have. Evaluate against the "
            "annotation file of the same split, and key predictions by the dataset's image_id."
        )
    if image_ids is None:
        return sorted(known)
    image_ids = sorted({int(i) for i in image_ids})
    if set(image_ids) - known:
        raise ValueError(f"image_ids {sorted(set(image_ids) - known)[:10]} are not images of the ground truth.")
    return image_ids


def to_coco_results(predictions, label_to_category=None):
    """COCO result records [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}] of
    `predictions` (dict image id -> pixel xyxy "boxes", "scores", "labels")."""
    records = []
    for image_id, detections in predictions.items():
        boxes, scores, labels = _detection_arrays(image_id, detections)
        for box, score, label in zip(boxes, scores, labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            records.append({
                "image_id": int(image_id),
                "category_id": _category(label, label_to_category),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            })
    return records


def _detection_arrays(image_id, detections):
    try:
        boxes = np.asarray(detections["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(detections["scores"], np.float64).reshape(-1)
        labels = np.asarray(detections["labels"]).reshape(-1)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"Predictions for image {image_id} must be a dict of 'boxes' (n, 4), 'scores' (n,) and 'labels' (n,) "
            f"as post_process_detections returns ({error!r})."
        ) from None
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"Predictions for image {image_id}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels; "
            "they must have one row per detection."
        )
    return boxes, scores, labels


def _category(label, label_to_category):
    label = int(label)
    if label_to_category is None:
        return label
    try:
        return int(label_to_category[label])
    except (KeyError, IndexError):
        raise ValueError(
            f"Label {label} has no COCO category id in label_to_category ({len(label_to_category)} entries). "
            "Pass one category id per class, indexed by label."
        ) from None


def _empty_results(truth):
    """A results `COCO` with no detections (pycocotools' loadRes fails on an empty list)."""
    return _coco_from_dict({
        "images": list(truth.dataset["images"]),
        "annotations": [],
        "categories": list(truth.dataset.get("categories", [])),
    })
