"""Evaluating and showing a set-prediction detector (DETR).

`post_process_detections` turns model outputs into pixel boxes, scores and labels
per image; `DetectionEvaluator` and `evaluate_detector` compute COCO mAP over a
detection dataset, and `CocoEvaluationCallback` does it during `fit`, writing
`val_AP`, `val_AP50`, ... into the epoch logs. `draw_detections`,
`save_prediction_grid` and `write_detections_json` write the results to disk;
every write goes to a temporary file renamed into place, so a failure leaves
no partial file.
"""

import json
import os

import keras
import numpy as np

from keras_vit.data.files import atomic_path
from keras_vit.evaluation.classification import _num_batches, save_figure
from keras_vit.evaluation.coco_metrics import (
    CocoGroundTruth,
    center_to_corners,
    coco_evaluate,
    ground_truth_from_batch,
    load_ground_truth,
    scale_boxes,
)

PREDICTION_COLOR = "tab:red"
GROUND_TRUTH_COLOR = "lime"


def post_process_detections(outputs, image_sizes, threshold=0.0, top_k=None):
    """Pixel boxes, scores and labels per image, as transformers'
    `DetrImageProcessor.post_process_object_detection`: softmax over the classes, the
    last (no-object) dropped, each query's best class kept when its score > `threshold`;
    no NMS.

    Args:
        outputs: dict with "logits" `(B, Q, classes + 1)` and "pred_boxes" `(B, Q, 4)`
            normalized cxcywh (NumPy arrays or backend tensors).
        image_sizes: `(B, 2)` (height, width) of the original images.
        threshold: minimum score, in [0, 1].
        top_k: keep at most this many detections per image, highest scores first
            (None: every query above the threshold, in query order).

    Returns a list of B dicts: "boxes" float32 `(n, 4)` pixel xyxy, "scores" float32
    `(n,)`, "labels" int64 `(n,)`.
    """
    logits, boxes = _output_arrays(outputs)
    sizes = _image_sizes(image_sizes, len(logits))
    _check_threshold(threshold, top_k)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    scores, labels = probabilities[..., :-1].max(axis=-1), probabilities[..., :-1].argmax(axis=-1)
    corners = scale_boxes(center_to_corners(boxes), sizes)
    results = []
    for score, label, box in zip(scores, labels, corners):
        keep = np.flatnonzero(score > threshold)
        if top_k is not None:
            keep = keep[np.argsort(-score[keep], kind="stable")[:top_k]]
        results.append({"boxes": box[keep], "scores": score[keep], "labels": label[keep].astype(np.int64)})
    return results


def post_process_open_vocabulary(outputs, image_sizes, threshold=0.0, top_k=100):
    """Pixel boxes, scores and query labels per image of an open-vocabulary detector (OWL-ViT).

    Every (token, query) pair is a candidate scored `sigmoid(logit)`, so a box may be kept for
    several queries (COCO / LVIS evaluation scores each category on its own; transformers'
    `post_process_object_detection` keeps only each token's best query, which hides a
    category under a better-scored one). Padded queries score 0.

    Args:
        outputs: dict with "logits" `(B, tokens, queries)` and "pred_boxes" `(B, tokens, 4)`.
        image_sizes: `(B, 2)` (height, width) the normalized boxes refer to.
        threshold: minimum score, in [0, 1].
        top_k: at most this many detections per image, highest scores first (COCO counts 100).

    Returns a list of B dicts: "boxes" float32 `(n, 4)` pixel xyxy, "scores" float32 `(n,)`,
    "labels" int64 `(n,)` query indices.
    """
    logits, boxes = _output_arrays(outputs, open_vocabulary=True)
    sizes = _image_sizes(image_sizes, len(logits))
    _check_threshold(threshold, top_k)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
    corners = scale_boxes(center_to_corners(boxes), sizes)
    queries = logits.shape[-1]
    results = []
    for score, box in zip(scores.reshape(len(scores), -1), corners):
        keep = np.flatnonzero(score > threshold)
        keep = keep[np.argsort(-score[keep], kind="stable")]
        if top_k is not None:
            keep = keep[:top_k]
        results.append({"boxes": box[keep // queries], "scores": score[keep], "labels": (keep % queries).astype(np.int64)})
    return results


def _output_arrays(outputs, open_vocabulary=False):
    """float32 logits `(B, Q, C + 1)` and boxes `(B, Q, 4)` of a model's output dict."""
    if not isinstance(outputs, dict) or "logits" not in outputs or "pred_boxes" not in outputs:
        got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ValueError(
            f"Detection outputs must be a dict with 'logits' and 'pred_boxes' (a DETR model's output), got {got}."
        )
    logits = np.asarray(keras.ops.convert_to_numpy(outputs["logits"]), np.float32)
    boxes = np.asarray(keras.ops.convert_to_numpy(outputs["pred_boxes"]), np.float32)
    if logits.ndim != 3 or logits.shape[-1] < (1 if open_vocabulary else 2) or boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(
            f"Detection outputs must be logits (batch, queries, classes + 1) and pred_boxes (batch, queries, 4); "
            f"got shapes {logits.shape} and {boxes.shape}."
        )
    return logits, boxes


def _image_sizes(image_sizes, batch):
    sizes = np.asarray(keras.ops.convert_to_numpy(image_sizes), np.float32)
    if sizes.shape != (batch, 2) or not np.all(sizes > 0):
        raise ValueError(
            f"image_sizes must be (batch, 2) positive (height, width) of the original images, one row per image of "
            f"the batch of {batch}; got shape {sizes.shape}. Pass y['image_size'] of the batch."
        )
    return sizes


def _check_threshold(threshold, top_k):
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a score in [0, 1], got {threshold!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive int, got {top_k!r}.")


class DetectionEvaluator:
    """COCO mAP accumulated over detection batches.

    Args:
        ground_truth: None to build the ground truth from the batches' `y` (boxes,
            labels, valid, image_size); or a COCO instances JSON path / pycocotools
            `COCO` (COCO folders: original areas and crowd regions), whose images are
            matched by `y["image_id"]`. Only the images seen are evaluated.
        label_to_category: with a COCO file, the category id of each label (a dict
            or a sequence indexed by label); None for the identity.
        num_classes: with ground_truth None, the number of classes (else the labels seen).
        threshold: the minimum score kept by `post_process`.
        verbose: print pycocotools' summary table.
        post_process: outputs -> detections, `post_process_detections` (DETR) or
            `post_process_open_vocabulary` (OWL-ViT: labels are query indices).
        label_groups: optional {name: labels}; `result()` then also gives each group's
            metrics, prefixed `{name}_` (e.g. AP on the categories seen in training and on
            the unseen ones).
    """

    def __init__(self, ground_truth=None, label_to_category=None, num_classes=None, threshold=0.0, verbose=False,
                 post_process=None, label_groups=None):
        if ground_truth is None and label_to_category is not None:
            raise ValueError(
                "label_to_category maps labels to the category ids of a COCO annotation file; without ground_truth "
                "the ground truth is built from the batches' labels, so leave label_to_category unset."
            )
        _check_threshold(threshold, None)
        self.ground_truth = None if ground_truth is None else load_ground_truth(ground_truth)
        self.label_to_category = label_to_category
        self.num_classes = num_classes
        self.threshold = threshold
        self.verbose = verbose
        self.post_process = post_process or post_process_detections
        self.label_groups = {name: [int(label) for label in labels] for name, labels in (label_groups or {}).items()}
        self.reset()

    def reset(self):
        """Forgets every batch seen."""
        self._predictions = {}
        self._built_truth = CocoGroundTruth(self.num_classes) if self.ground_truth is None else None

    def update(self, y, outputs):
        """Adds a batch: its `y` (see `keras_vit.data` detection batches) and the model's outputs on its `x`."""
        image_ids = [int(i) for i in np.asarray(y["image_id"]).reshape(-1)]
        detections = self.post_process(outputs, y["image_size"], self.threshold)
        if len(image_ids) != len(detections):
            raise ValueError(f"y has {len(image_ids)} image ids but the outputs {len(detections)} images.")
        repeated = sorted({i for i in image_ids if i in self._predictions or image_ids.count(i) > 1})
        if repeated:
            raise ValueError(
                f"Image ids {repeated[:10]} were seen twice. Each image must be evaluated once: iterate the "
                "validation dataset without .repeat(), or pass steps= to stop after one pass."
            )
        if self._built_truth is not None:
            self._built_truth.add_batch(y)
        self._predictions.update(zip(image_ids, detections))

    def result(self):
        """The COCO metrics (see `coco_evaluate`) of every image seen."""
        if not self._predictions:
            raise ValueError("No batch was evaluated: the dataset is empty. Check the validation split.")
        truth = self._built_truth if self.ground_truth is None else self.ground_truth
        images = list(self._predictions)
        metrics = coco_evaluate(self._predictions, truth, self.label_to_category, images, self.verbose)
        for name, labels in self.label_groups.items():
            categories = [self._category(label) for label in labels]
            group = coco_evaluate(self._predictions, truth, self.label_to_category, images, self.verbose, categories)
            metrics.update({f"{name}_{key}": value for key, value in group.items()})
        return metrics

    def _category(self, label):
        mapping = self.label_to_category
        return label if mapping is None else int(mapping[label])


def evaluate_detector(model, dataset, ground_truth=None, label_to_category=None, num_classes=None, threshold=0.0,
                      steps=None, progress=False, verbose=False, post_process=None, label_groups=None):
    """COCO mAP of `model` on a detection dataset of `(x, y)` batches (see `DetectionEvaluator`
    for the other arguments; `steps` stops after that many batches). Returns `coco_evaluate`'s dict."""
    evaluator = DetectionEvaluator(ground_truth, label_to_category, num_classes, threshold, verbose, post_process,
                                   label_groups)
    bar = keras.utils.Progbar(steps or _num_batches(dataset), unit_name="batch") if progress else None
    for step, (x, y) in enumerate(_batches(dataset, steps), start=1):
        evaluator.update(y, model.predict_on_batch(x))
        if bar is not None:
            bar.update(step)
    return evaluator.result()


def _batches(dataset, steps=None):
    """`(x, y)` NumPy batches of a tf.data dataset or an iterable, at most `steps` of them."""
    batches = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset
    for step, batch in enumerate(batches):
        if steps is not None and step >= steps:
            return
        if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not isinstance(batch[1], dict):
            raise ValueError(
                f"A detection dataset yields (x, y) batches with y a dict of boxes, labels, valid, image_id and "
                f"image_size; got a batch of type {type(batch).__name__}. Use keras_vit.data's detection pipeline."
            )
        yield batch[0], batch[1]


class CocoEvaluationCallback(keras.callbacks.Callback):
    """Computes COCO mAP on a validation detection dataset at the end of epochs and writes it into the
    epoch logs as `val_AP`, `val_AP50`, `val_AP75`, `val_APs`, `val_APm`, `val_APl` (and the AR numbers),
    so History, CSVLogger, ModelCheckpoint and EarlyStopping listed after it see them.

    Args:
        dataset: `(x, y)` detection batches (a finite tf.data dataset or an iterable).
        every: evaluate every this many epochs, and after the last one; other epochs
            get no `val_AP*` keys (like `fit(validation_freq=...)`).
        ground_truth, label_to_category, num_classes, threshold, post_process,
            label_groups: see `DetectionEvaluator`.
        steps: batches per evaluation (None: the whole dataset).
        prefix: prepended to the metric names in the logs.
        verbose: print pycocotools' summary table.
    """

    def __init__(self, dataset, every=1, ground_truth=None, label_to_category=None, num_classes=None,
                 threshold=0.0, steps=None, prefix="val_", verbose=False, post_process=None, label_groups=None):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be a positive int (epochs between evaluations), got {every!r}.")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise ValueError(f"steps must be None or a positive int, got {steps!r}.")
        self.dataset = dataset
        self.every = int(every)
        self.steps = steps
        self.prefix = prefix
        self.verbose = verbose
        self._evaluator = DetectionEvaluator(ground_truth, label_to_category, num_classes, threshold, verbose,
                                             post_process, label_groups)

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and epoch + 1 != last:
            return
        metrics = self.evaluate()
        if logs is not None:
            logs.update({f"{self.prefix}{name}": value for name, value in metrics.items()})

    def evaluate(self):
        """The COCO metrics of the current model on the dataset."""
        model = self.model
        self._evaluator.reset()
        for x, y in _batches(self.dataset, self.steps):
            self._evaluator.update(y, model.predict_on_batch(x))
        return self._evaluator.result()


def draw_detections(image, detections, class_names, path, ground_truth=None, title=""):
    """Writes a PNG of `image` with its detected boxes, labels and scores (and the true boxes).

    Args:
        image: `(height, width, 3)` pixels in [0, 255].
        detections: {"boxes": `(n, 4)` pixel xyxy in that image, "scores", "labels"}
            (filter with `post_process_detections(threshold=...)` first).
        class_names: the name of each label, or None to show the label numbers.
        path: the PNG to write.
        ground_truth: optional {"boxes", "labels"} drawn dashed in green.
        title: optional figure title.
    """
    image = _check_image(image)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = image.shape[:2]
    scale = 8.0 / max(height, width)
    figure, axes = plt.subplots(figsize=(max(width * scale, 2.0), max(height * scale, 2.0) + 0.4))
    try:
        _draw(axes, image, detections, ground_truth, class_names)
        if title:
            axes.set_title(title)
        _save_figure_atomically(figure, path)
    finally:
        plt.close(figure)
    return path


def save_prediction_grid(images, detections, class_names, path, ground_truth=None, columns=4, title=""):
    """Writes a PNG grid of images with their predicted boxes (red) and, when given, the true ones
    (dashed green). `images`: a list of `(height, width, 3)` arrays in [0, 255] (sizes may differ);
    `detections` / `ground_truth`: one dict per image (see `draw_detections`)."""
    images = [_check_image(image) for image in images]
    if len(detections) != len(images) or (ground_truth is not None and len(ground_truth) != len(images)):
        raise ValueError(
            f"save_prediction_grid needs one detections dict (and ground-truth dict) per image: {len(images)} images, "
            f"{len(detections)} detections, {'no' if ground_truth is None else len(ground_truth)} ground truths."
        )
    if not images or isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(
            f"save_prediction_grid needs at least one image and an int columns >= 1, got {len(images)} images "
            f"and columns={columns!r}."
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows + 0.4), squeeze=False)
    try:
        for index, axes in enumerate(grid.flat):
            if index < len(images):
                truth = None if ground_truth is None else ground_truth[index]
                _draw(axes, images[index], detections[index], truth, class_names, font=7)
            else:
                axes.axis("off")
        if title:
            figure.suptitle(title)
        _save_figure_atomically(figure, path)
    finally:
        plt.close(figure)
    return path


def plot_validation_predictions(model, dataset, class_names, path, count=8, threshold=0.5, columns=4, post_process=None):
    """Writes `save_prediction_grid` of the model's detections on the first `count` images of a
    detection dataset (as the model sees them: resized, padding cut off), true boxes dashed.
    `post_process`: `post_process_detections` (default) or `post_process_open_vocabulary`."""
    post_process = post_process or post_process_detections
    images, detections, truths = [], [], []
    for x, y in _batches(dataset):
        pixels = np.asarray(x["images"] if isinstance(x, dict) else x, np.float32)
        mask = np.asarray(x["pixel_mask"]) if isinstance(x, dict) and "pixel_mask" in x else np.ones(pixels.shape[:3])
        sizes = np.stack([mask.max(axis=2).sum(axis=1), mask.max(axis=1).sum(axis=1)], axis=1)
        detections += post_process(model.predict_on_batch(x), sizes, threshold)
        truths += ground_truth_from_batch(y, image_sizes=sizes)
        images += [image[: int(h), : int(w)] for image, (h, w) in zip(pixels, sizes)]
        if len(images) >= count:
            break
    return save_prediction_grid(images[:count], detections[:count], class_names, path, truths[:count], columns,
                                title=f"predictions (score > {threshold:g}) and true boxes (dashed)")


def _check_image(image):
    image = np.asarray(keras.ops.convert_to_numpy(image), np.float32)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"An image to draw must be (height, width, 3) pixels in [0, 255], got shape {image.shape}.")
    return image


def _draw(axes, image, detections, ground_truth, class_names, font=9):
    axes.imshow(np.clip(image / 255.0, 0.0, 1.0))
    axes.axis("off")
    if ground_truth is not None:
        for box in np.asarray(ground_truth["boxes"], np.float32).reshape(-1, 4):
            _box(axes, box, GROUND_TRUTH_COLOR, linestyle="--", linewidth=1.2)
    boxes = np.asarray(detections["boxes"], np.float32).reshape(-1, 4)
    scores, labels = np.asarray(detections["scores"]).reshape(-1), np.asarray(detections["labels"]).reshape(-1)
    for box, score, label in zip(boxes, scores, labels):
        _box(axes, box, PREDICTION_COLOR, linewidth=1.5)
        axes.text(box[0], box[1], f"{_class_name(label, class_names)} {score:.2f}", fontsize=font, color="white",
                  va="bottom", clip_on=True, bbox={"facecolor": PREDICTION_COLOR, "alpha": 0.8, "pad": 1, "linewidth": 0})
    axes.set_xlim(-0.5, image.shape[1] - 0.5)  # boxes reaching outside the image do not widen the view
    axes.set_ylim(image.shape[0] - 0.5, -0.5)


def _box(axes, box, color, **style):
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = box
    axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, **style))


def _class_name(label, class_names):
    label = int(label)
    if class_names is None:
        return str(label)
    if not 0 <= label < len(class_names):
        raise ValueError(f"Label {label} has no name among the {len(class_names)} class names; pass one per class.")
    return str(class_names[label])


def _save_figure_atomically(figure, path):
    """`save_figure` to a temporary PNG beside `path`, renamed into place: `path` is whole or untouched."""
    with atomic_path(path, suffix=".png") as temporary:
        save_figure(figure, temporary)


def detection_records(detections, class_names=None, image_names=None):
    """JSON-ready records of `post_process_detections` results: one dict per image,
    {"image": name, "detections": [{"label", "class", "score", "box": [x1, y1, x2, y2]}, ...]}
    ("image" only with `image_names`, "class" only with `class_names`), highest scores first."""
    if image_names is not None and len(image_names) != len(detections):
        raise ValueError(f"{len(image_names)} image names for {len(detections)} images; pass one name per image.")
    records = []
    for index, detection in enumerate(detections):
        scores = np.asarray(detection["scores"]).reshape(-1)
        entries = []
        for i in np.argsort(-scores, kind="stable"):
            label = int(np.asarray(detection["labels"]).reshape(-1)[i])
            entry = {"label": label}
            if class_names is not None:
                entry["class"] = _class_name(label, class_names)
            entry["score"] = float(scores[i])
            entry["box"] = [float(v) for v in np.asarray(detection["boxes"]).reshape(-1, 4)[i]]
            entries.append(entry)
        record = {} if image_names is None else {"image": os.fspath(image_names[index])}
        records.append({**record, "detections": entries})
    return records


def write_detections_json(records, path):
    """Writes `records` (e.g. `detection_records`; NumPy values allowed) as JSON to `path`, through a
    temporary file, fsync and rename: `path` is whole or untouched."""
    text = json.dumps(records, indent=1, default=_json_value)
    with atomic_path(path) as temporary, open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    return path


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Detections JSON cannot hold a {type(value).__name__} ({value!r}).")
