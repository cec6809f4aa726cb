"""Classification metrics of a trained model on a labelled dataset, and a confusion-matrix plot.

`evaluate_classifier` runs the model over every batch once and returns a
`ClassificationReport`: accuracy, top-5 accuracy, per-class accuracy and the
confusion matrix (rows: true class, columns: predicted class).
`plot_confusion_matrix` draws the matrix to a PNG.
"""

import dataclasses
import os

import keras
import numpy as np

TOP_K = 5
# Cells are annotated with their counts up to this many classes.
MAX_ANNOTATED_CLASSES = 30


@dataclasses.dataclass(frozen=True, eq=False)
class ClassificationReport:
    """Accuracy figures of a classifier on one dataset.

    Attributes:
        accuracy: fraction of examples whose highest-scoring class is the label.
        top5_accuracy: fraction whose label is among the `top_k` highest scores.
        top_k: the k of `top5_accuracy`: min(5, number of classes).
        per_class_accuracy: class name -> accuracy on that class's examples
            (None for a class without examples).
        confusion_matrix: int64 `(classes, classes)`, rows the true class,
            columns the predicted class.
        num_examples: examples evaluated.
        class_names: class names, indexed by label.
    """

    accuracy: float
    top5_accuracy: float
    top_k: int
    per_class_accuracy: dict
    confusion_matrix: np.ndarray
    num_examples: int
    class_names: list

    def to_dict(self):
        """A JSON-serializable dict (the matrix as nested lists of ints)."""
        return {
            "num_examples": self.num_examples,
            "accuracy": self.accuracy,
            "top5_accuracy": self.top5_accuracy,
            "top_k": self.top_k,
            "per_class_accuracy": dict(self.per_class_accuracy),
            "class_names": list(self.class_names),
            "confusion_matrix": self.confusion_matrix.tolist(),
        }


def evaluate_classifier(model, dataset, class_names, progress=False):
    """Evaluates `model` on every example of `dataset`.

    Args:
        model: a Keras model mapping images to `(batch, classes)` logits or
            probabilities (only their order matters).
        dataset: an iterable of `(images, labels)` batches (a `tf.data.Dataset`
            from `keras_vit.data.load_dataset`, or NumPy pairs); labels are ints
            `(batch,)` or one-hot `(batch, classes)`. Extra items (sample
            weights) are ignored.
        class_names: the name of each output, in order.
        progress: show a progress bar over the batches.

    Returns a `ClassificationReport`.
    """
    class_names = [str(name) for name in class_names]
    scores, labels = _predict_dataset(model, dataset, len(class_names), progress)
    return _report(scores, labels, class_names)


def _predict_dataset(model, dataset, num_classes, progress):
    """`(scores (n, classes), int labels (n,))` over every batch of `dataset`."""
    batches = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset
    bar = keras.utils.Progbar(_num_batches(dataset), unit_name="batch") if progress else None
    all_scores, all_labels = [], []
    for step, batch in enumerate(batches, start=1):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                "evaluate_classifier needs a dataset of (images, labels) batches, got a batch of "
                f"type {type(batch).__name__}. Pass e.g. keras_vit.data.load_dataset(..., training=False)[0]."
            )
        scores = np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(np.asarray(batch[0]))))
        _check_scores(scores, num_classes)
        all_scores.append(scores)
        all_labels.append(_int_labels(np.asarray(batch[1]), num_classes))
        if bar is not None:
            bar.update(step)
    if not all_scores:
        raise ValueError("The dataset has no batches: nothing to evaluate. Check the split and the data folder.")
    return np.concatenate(all_scores), np.concatenate(all_labels)


def _num_batches(dataset):
    """The number of batches when known, else None (an open-ended progress bar)."""
    if hasattr(dataset, "cardinality"):
        count = int(dataset.cardinality())
        return count if count >= 0 else None
    try:
        return len(dataset)
    except TypeError:
        return None


def _check_scores(scores, num_classes):
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(
            f"The model outputs shape {scores.shape} but {num_classes} class names were given: "
            "pass one class name per model output (the model's classes, in order)."
        )


def _int_labels(labels, num_classes):
    """Int labels `(batch,)` from int `(batch,)` / `(batch, 1)` or one-hot `(batch, classes)`."""
    if labels.ndim == 2 and labels.shape[1] == num_classes and num_classes > 1:
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1)
    if labels.size and (not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Labels must be ints in [0, {num_classes}) or one-hot rows of {num_classes} classes; got values "
            f"from {labels.min()} to {labels.max()}. Check that the class names match the dataset's."
        )
    return labels.astype(np.int64)


def _report(scores, labels, class_names):
    """`ClassificationReport` of scores `(n, classes)` against int labels `(n,)`."""
    num_classes = len(class_names)
    predicted = scores.argmax(axis=1)
    top_k = min(TOP_K, num_classes)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    matrix = confusion_matrix(labels, predicted, num_classes)
    totals = matrix.sum(axis=1)
    per_class = {
        name: (float(matrix[i, i] / totals[i]) if totals[i] else None) for i, name in enumerate(class_names)
    }
    return ClassificationReport(
        accuracy=float(np.mean(predicted == labels)),
        top5_accuracy=float(np.mean(np.any(top == labels[:, None], axis=1))),
        top_k=top_k,
        per_class_accuracy=per_class,
        confusion_matrix=matrix,
        num_examples=int(labels.size),
        class_names=list(class_names),
    )


def confusion_matrix(labels, predicted, num_classes):
    """int64 `(classes, classes)` counts: `[i, j]` = examples of class i predicted as j."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def plot_confusion_matrix(matrix, class_names, path, title=""):
    """Writes the confusion matrix `(classes, classes)` (rows true, columns predicted) as a PNG.

    Cells hold their counts when there are at most 30 classes; the colour is the
    row-normalized fraction, so rare classes stay readable.
    """
    matrix = np.asarray(matrix)
    count = len(class_names)
    if matrix.shape != (count, count):
        raise ValueError(
            f"The confusion matrix has shape {matrix.shape} but {count} class names were given: "
            "pass one name per row."
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = min(4.0 + 0.45 * count, 40.0)
    figure, axes = plt.subplots(figsize=(side + 1.5, side))
    try:
        fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
        _label_axes(axes, class_names, title)
        if count <= MAX_ANNOTATED_CLASSES:
            _annotate_counts(axes, matrix, fractions)
        save_figure(figure, path)
    finally:
        plt.close(figure)
    return path


def save_figure(figure, path):
    """Lays out `figure` and writes it as a PNG to `path`, creating its folder."""
    figure.tight_layout()
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    figure.savefig(path, dpi=100)


def _label_axes(axes, class_names, title):
    ticks = np.arange(len(class_names))
    font = 10 if len(class_names) <= 20 else max(4, 10 - len(class_names) // 20)
    axes.set_xticks(ticks)
    axes.set_yticks(ticks)
    axes.set_xticklabels(class_names, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
    axes.set_yticklabels(class_names, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)


def _annotate_counts(axes, matrix, fractions):
    for (row, column), value in np.ndenumerate(matrix):
        color = "white" if fractions[row, column] > 0.5 else "black"
        axes.text(column, row, str(int(value)), ha="center", va="center", color=color, fontsize=8)
