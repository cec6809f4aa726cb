import json
import os

import keras
import keras_tuner as kt
import numpy as np
import pytest

from keras_vit.training.recipes import AUGREG_AUGMENTATIONS
from keras_vit.tuning import AugRegHyperModel, SearchSpace, continuous_space, make_tuner, resolve, tune

pytestmark = pytest.mark.backend_agnostic


def _tiny(shapes_data_dir, space=None, **kwargs):
    return AugRegHyperModel("vit_pico8", "shapes/small", search_space=space, data_dir=shapes_data_dir, image_size=32,
                            batch_size=16, epochs=1, steps_per_epoch=2, verbose=0, **kwargs)


def _first_batch(hypermodel, augmentation):
    images, labels = next(iter(hypermodel.train_data(augmentation)))
    return keras.ops.convert_to_numpy(images), keras.ops.convert_to_numpy(labels)


def test_each_trial_trains_on_data_augmented_with_its_own_settings(shapes_data_dir):
    hypermodel = _tiny(shapes_data_dir)
    plain_images, plain_labels = _first_batch(hypermodel, resolve({"augmentation": "none"}).augmentation)
    strong_images, strong_labels = _first_batch(hypermodel, resolve({"augmentation": "strong2"}).augmentation)
    # Same seed, same crops and order: only RandAugment (2 ops at magnitude 20) and MixUp (alpha 0.8) differ.
    np.testing.assert_array_equal(plain_labels.max(axis=1), 1.0)  # one-hot
    assert (strong_labels.max(axis=1) < 0.999).any()  # MixUp mixed the labels of pairs
    np.testing.assert_allclose(strong_labels.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(strong_images - plain_images).mean() > 1.0
    assert hypermodel.augmentations == [AUGREG_AUGMENTATIONS["none"], AUGREG_AUGMENTATIONS["strong2"]]


def test_build_compiles_the_trials_regularization_and_optimizer(shapes_data_dir):
    hypermodel = _tiny(shapes_data_dir)
    hp = kt.HyperParameters()
    hp.values.update(augmentation="light2", regularization="reg", weight_decay=0.03)
    model = hypermodel.build(hp)
    assert model.output_shape == (None, 6)
    assert model.optimizer.weight_decay == pytest.approx(0.03)
    assert model.optimizer.global_clipnorm == 1.0
    assert set(hp.values) >= {"augmentation", "regularization", "weight_decay", "learning_rate"}
    rates = [layer.rate for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dropout)]
    assert rates and max(rates) == pytest.approx(0.1)
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)


def test_make_tuner_uses_keras_tuners_own_oracles(shapes_data_dir, tmp_path):
    expected = {
        "grid": kt.oracles.GridSearchOracle,
        "random": kt.oracles.RandomSearchOracle,
        "bayesian": kt.oracles.BayesianOptimizationOracle,
        "hyperband": kt.oracles.HyperbandOracle,
    }
    for name, oracle in expected.items():
        space = SearchSpace() if name == "grid" else continuous_space()
        tuner = make_tuner(name, _tiny(shapes_data_dir, space), max_trials=3, directory=str(tmp_path), project_name=name)
        assert isinstance(tuner.oracle, oracle)
        assert tuner.oracle.objective.name == "val_accuracy" and tuner.oracle.objective.direction == "max"
        assert tuner.oracle.max_trials == 3
        assert tuner.oracle.max_retries_per_trial == 1


def test_a_small_random_search_writes_consistent_results(shapes_data_dir, tmp_path):
    out = tmp_path / "search"
    space = continuous_space()
    result = tune("vit_pico8", "shapes/small", tuner="random", search_space=space, max_trials=2, epochs_per_trial=1,
                  output_dir=str(out), data_dir=shapes_data_dir, image_size=32, batch_size=16, steps_per_epoch=2,
                  verbose=0)
    assert sorted(os.listdir(out)) == ["augreg.png", "best_hyperparameters.json", "best_model.keras", "search",
                                       "trials.csv", "trials.json", "tune_config.json"]
    trials = json.loads((out / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    assert [t["attempts"] for t in trials] == [1, 1]
    best = json.loads((out / "best_hyperparameters.json").read_text())
    top = max(trials, key=lambda t: t["val_accuracy"])
    assert best["val_accuracy"] == top["val_accuracy"] == result.best_score
    assert best["hyperparameters"] == top["searched"] == result.best_hyperparameters
    assert best["settings"]["randaugment_magnitude"] == best["hyperparameters"]["randaugment_magnitude"]
    # Each trial's training data was built with that trial's augmentation (and only once).
    hypermodel = result.tuner.hypermodel
    assert hypermodel.augmentations == [resolve(t["searched"]).augmentation for t in trials]
    assert len({a.randaugment_magnitude for a in hypermodel.augmentations}) == 2
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("trial_id,status,val_accuracy")
    model = keras.saving.load_model(out / "best_model.keras")
    images = np.zeros((2, 32, 32, 3), "float32")
    assert keras.ops.convert_to_numpy(model(images)).shape == (2, 6)
    assert (out / "augreg.png").read_bytes().startswith(b"\x89PNG")
