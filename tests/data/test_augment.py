import keras
import numpy as np
import pytest

from keras_vit.data import Augmentation, load_dataset, randaugment_factor
from keras_vit.training.recipes import AUGREG_AUGMENTATIONS

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("magnitude,factor", [(0, 0.0), (10, 1 / 12), (15, 1 / 8), (20, 1 / 6)])
def test_augreg_magnitude_maps_to_keras_factor(magnitude, factor):
    assert randaugment_factor(magnitude) == pytest.approx(factor)
    layer = Augmentation(2, magnitude).image_layers()[0]
    assert isinstance(layer, keras.layers.RandAugment) and layer.num_ops == 2
    # big_vision rotates by 30 degrees x magnitude / 10; Keras' bound is factor x 360 degrees.
    assert layer.random_rotation.factor[1] * 360 == pytest.approx(3.0 * magnitude)


def test_keras_rotation_stays_within_augregs_bound():
    """The angles Keras' layer draws at magnitude 20 (read off its affine matrices) reach but never pass 60 degrees."""
    layer = Augmentation(2, 20).image_layers(seed=0)[0].random_rotation
    images = np.zeros((512, 33, 33, 3), "float32")
    matrices = keras.ops.convert_to_numpy(layer.get_random_transformation(images, training=True)["rotation_matrix"])
    angles = np.degrees(np.abs(np.arctan2(matrices[:, 1], matrices[:, 0])))
    assert 50 < angles.max() <= 60.0 + 1e-3


def test_augreg_settings_are_referenced_values():
    expected = {"none": (0, 0, 0), "light1": (2, 0, 0), "light2": (2, 10, 0.2), "medium1": (2, 15, 0.2),
                "medium2": (2, 15, 0.5), "strong1": (2, 20, 0.5), "strong2": (2, 20, 0.8)}
    actual = {name: (a.randaugment_layers, a.randaugment_magnitude, a.mixup_alpha) for name, a in AUGREG_AUGMENTATIONS.items()}
    assert actual == expected


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(randaugment_magnitude=-1), "RandAugment magnitude must be in [0, 120]"),
        (dict(randaugment_magnitude=200), "got 200"),
        (dict(randaugment_layers=-2), "randaugment_layers must be an int >= 0"),
        (dict(mixup_alpha=-0.2), "mixup_alpha must be >= 0"),
        (dict(cutmix_alpha=2.0), "cutmix_alpha must be in [0, 1]"),
        (dict(random_erasing=1.5), "random_erasing is a probability"),
    ],
)
def test_bad_augmentation_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Augmentation(**kwargs)


def _first_batch(shapes_dir, augmentation, label_mode="categorical"):
    data, _ = load_dataset("shapes/small", "train", data_dir=shapes_dir, training=True, image_size=32, batch_size=32,
                           augmentation=augmentation, label_mode=label_mode, seed=3)
    images, labels = next(iter(data))
    return images.numpy(), labels.numpy()


def test_mixup_and_cutmix_mix_one_hot_labels(shapes_dir):
    images, labels = _first_batch(shapes_dir, Augmentation(mixup_alpha=0.8, cutmix_alpha=1.0))
    assert images.shape == (32, 32, 32, 3) and 0 <= images.min() and images.max() <= 255
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    mixed = ((labels > 1e-3) & (labels < 1 - 1e-3)).any(axis=1)
    assert mixed.sum() >= 16  # Beta(0.8) or Beta(1) weights: nearly every pair is a blend


def test_per_image_augmentation_changes_images_and_none_changes_nothing(shapes_dir):
    plain, plain_labels = _first_batch(shapes_dir, None)
    none, none_labels = _first_batch(shapes_dir, Augmentation())
    np.testing.assert_array_equal(plain, none)
    np.testing.assert_array_equal(plain_labels, none_labels)
    erased, erased_labels = _first_batch(shapes_dir, Augmentation(2, 20, random_erasing=1.0))
    np.testing.assert_array_equal(erased_labels, plain_labels)  # per-image methods keep the labels
    changed = np.abs(erased - plain).reshape(32, -1).max(axis=1) > 1
    assert changed.all()  # erasing with probability 1 touches every image


def test_mixing_needs_one_hot_labels(shapes_dir):
    with pytest.raises(ValueError, match="label_mode='categorical'"):
        load_dataset("shapes/small", "train", data_dir=shapes_dir, training=True, image_size=32,
                     augmentation=Augmentation(mixup_alpha=0.2))


def test_selected_ops_randaugment_equals_keras_randaugment_in_tf_data():
    """The same draws through Keras' all-ops-then-`where` path and the `switch_case` path give the same images."""
    import tensorflow as tf

    from keras_vit.data.augment import SelectedOpsRandAugment

    layer = SelectedOpsRandAugment(value_range=(0, 255), num_ops=2, factor=randaugment_factor(20), seed=1)
    images = np.random.RandomState(0).rand(24, 24, 24, 3).astype("float32") * 255

    def both(image):
        image = image[None]  # Keras' call adds the batch axis before transforming
        transformation = layer.get_random_transformation(image, training=True)
        keras_path = keras.layers.RandAugment.transform_images(layer, image, transformation)
        return layer.transform_images(image, transformation), keras_path, transformation["layer_idxes"]

    pairs = list(tf.data.Dataset.from_tensor_slices(images).map(both).as_numpy_iterator())
    for selected, reference, _ in pairs:
        np.testing.assert_allclose(selected, reference, atol=1e-3)
    assert len({tuple(ops) for _, _, ops in pairs}) > 5  # many op pairs were drawn, not one
    assert max(np.abs(selected[0] - image).max() for (selected, _, _), image in zip(pairs, images)) > 10
