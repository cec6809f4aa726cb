"""evaluate_classifier against hand-computed accuracy, top-5, per-class accuracy and confusion
matrix, on an identity model whose inputs are the logits; and the confusion-matrix PNG."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit.evaluation import ClassificationReport, evaluate_classifier, plot_confusion_matrix

CLASSES = [f"c{i}" for i in range(7)]
# Per example: its label and the classes ranked by the logits, most likely first.
EXAMPLES = [
    (0, [0, 1, 2, 3, 4, 5, 6]),  # right
    (0, [1, 0, 2, 3, 4, 5, 6]),  # predicted 1, label 2nd: in the top 5
    (1, [1, 0, 2, 3, 4, 5, 6]),  # right
    (2, [3, 4, 5, 6, 0, 1, 2]),  # predicted 3, label 7th: not in the top 5
    (3, [3, 0, 1, 2, 4, 5, 6]),  # right
    (4, [2, 0, 1, 3, 5, 6, 4]),  # predicted 2, label 7th
    (5, [0, 1, 2, 3, 5, 4, 6]),  # predicted 0, label 5th: in the top 5
]  # class 6 has no example
EXPECTED_ACCURACY = 3 / 7
EXPECTED_TOP5 = 5 / 7
EXPECTED_PER_CLASS = {"c0": 0.5, "c1": 1.0, "c2": 0.0, "c3": 1.0, "c4": 0.0, "c5": 0.0, "c6": None}
EXPECTED_CELLS = {(0, 0): 1, (0, 1): 1, (1, 1): 1, (2, 3): 1, (3, 3): 1, (4, 2): 1, (5, 0): 1}


def _logits_and_labels():
    labels = np.array([label for label, _ in EXAMPLES], np.int32)
    logits = np.zeros((len(EXAMPLES), len(CLASSES)), np.float32)
    for row, (_, ranking) in enumerate(EXAMPLES):
        logits[row, ranking] = np.linspace(3.0, -3.0, len(CLASSES))
    return logits, labels


def _identity_model(classes=len(CLASSES)):
    """A model whose outputs are its inputs: the logits are the "images"."""
    inputs = keras.Input(shape=(classes,), name="images")
    return keras.Model(inputs, keras.layers.Identity(name="head")(inputs))


def _batches(logits, labels, size=3):
    return [(logits[i : i + size], labels[i : i + size]) for i in range(0, len(labels), size)]


def _expected_matrix():
    matrix = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for (row, column), count in EXPECTED_CELLS.items():
        matrix[row, column] = count
    return matrix


def _assert_expected(report):
    assert isinstance(report, ClassificationReport)
    assert report.num_examples == len(EXAMPLES)
    assert report.top_k == 5
    assert report.accuracy == pytest.approx(EXPECTED_ACCURACY)
    assert report.top5_accuracy == pytest.approx(EXPECTED_TOP5)
    assert report.per_class_accuracy == pytest.approx(EXPECTED_PER_CLASS)
    assert report.confusion_matrix.dtype.kind == "i"
    np.testing.assert_array_equal(report.confusion_matrix, _expected_matrix())


def test_report_matches_hand_computed_values_over_uneven_batches():
    logits, labels = _logits_and_labels()
    _assert_expected(evaluate_classifier(_identity_model(), _batches(logits, labels), CLASSES))


def test_one_hot_labels_and_a_tf_data_dataset_give_the_same_report():
    logits, labels = _logits_and_labels()
    one_hot = np.eye(len(CLASSES), dtype=np.float32)[labels]
    dataset = tf.data.Dataset.from_tensor_slices((logits, one_hot)).batch(2)
    _assert_expected(evaluate_classifier(_identity_model(), dataset, CLASSES, progress=True))


@pytest.mark.backend_agnostic  # files, tf.data and NumPy only
def test_to_dict_is_json_and_has_no_nan():
    logits, labels = _logits_and_labels()
    report = evaluate_classifier(_identity_model(), _batches(logits, labels), CLASSES)
    text = json.dumps(report.to_dict(), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["per_class_accuracy"]["c6"] is None
    assert loaded["confusion_matrix"] == _expected_matrix().tolist()
    assert loaded["class_names"] == CLASSES
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.accuracy = 1.0


def test_top_k_is_the_number_of_classes_below_five():
    logits = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], np.float32)  # predicted 2, then 0
    labels = np.array([0, 1])
    report = evaluate_classifier(_identity_model(3), [(logits, labels)], ["a", "b", "c"])
    assert report.top_k == 3
    assert report.top5_accuracy == 1.0
    assert report.accuracy == 0.0
    np.testing.assert_array_equal(report.confusion_matrix, [[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    assert report.per_class_accuracy == {"a": 0.0, "b": 0.0, "c": None}


def test_a_vit_report_agrees_with_its_predictions():
    import keras_vit
    from tests.conftest import randomize_weights

    model = keras_vit.create_model("vit_pico8", classes=3, input_shape=(32, 32, 3), classifier_activation=None)
    randomize_weights(model)
    rng = np.random.RandomState(0)
    images = rng.rand(10, 32, 32, 3).astype("float32") * 255
    labels = rng.randint(0, 3, size=10)
    predicted = keras.ops.convert_to_numpy(model.predict(images, verbose=0)).argmax(axis=1)
    report = evaluate_classifier(model, _batches(images, labels, 4), ["a", "b", "c"])
    assert report.accuracy == pytest.approx(np.mean(predicted == labels))
    assert report.top5_accuracy == 1.0
    assert report.confusion_matrix.sum() == 10
    np.testing.assert_array_equal(report.confusion_matrix.sum(axis=0), np.bincount(predicted, minlength=3))
    np.testing.assert_array_equal(report.confusion_matrix.sum(axis=1), np.bincount(labels, minlength=3))


@pytest.mark.backend_agnostic  # files, tf.data and NumPy only
def test_errors_name_the_problem():
    logits, labels = _logits_and_labels()
    with pytest.raises(ValueError, match="7 outputs|shape \\(3, 7\\).*3 class names"):
        evaluate_classifier(_identity_model(), _batches(logits, labels), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"Labels must be ints in \[0, 7\)"):
        evaluate_classifier(_identity_model(), [(logits, labels + 3)], CLASSES)
    with pytest.raises(ValueError, match="no batches"):
        evaluate_classifier(_identity_model(), [], CLASSES)
    with pytest.raises(ValueError, match="one name per row"):
        plot_confusion_matrix(np.zeros((3, 3)), ["a", "b"], "unused.png")


@pytest.mark.backend_agnostic  # files, tf.data and NumPy only
@pytest.mark.parametrize("classes", [7, 35])
def test_confusion_matrix_png_is_written(tmp_path, classes):
    matrix = np.random.RandomState(classes).randint(0, 20, size=(classes, classes))
    names = [f"class name {i}" for i in range(classes)]
    path = tmp_path / "plots" / "confusion.png"
    plot_confusion_matrix(matrix, names, path, title="shapes / validation")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000
