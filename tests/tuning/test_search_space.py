import dataclasses

import keras_tuner as kt
import pytest

from keras_vit.data.augment import Augmentation
from keras_vit.training.recipes import AUGREG_AUGMENTATIONS, RECIPES
from keras_vit.tuning import (
    AugRegHyperModel,
    Range,
    SearchSpace,
    continuous_space,
    make_tuner,
    parse_overrides,
    resolve,
    tune,
)

pytestmark = pytest.mark.backend_agnostic


def _enumerate_grid(space, tmp_path):
    """Runs KerasTuner's own GridSearchOracle over `space` (no training) and returns the values it hands out."""
    hp = kt.HyperParameters()
    space.declare(hp)
    oracle = kt.oracles.GridSearchOracle(objective=kt.Objective("val_accuracy", "max"), hyperparameters=hp)
    oracle._set_project_dir(str(tmp_path), "grid")
    seen = []
    for step in range(100):
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            return seen
        seen.append(dict(trial.hyperparameters.values))
        oracle.update_trial(trial.trial_id, {"val_accuracy": step / 100})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    raise AssertionError("the grid never ended")


def test_default_grid_is_augregs_28_points_enumerated_by_keras_tuner(tmp_path):
    space = SearchSpace()
    assert space.grid_size() == 28
    points = _enumerate_grid(space, tmp_path)
    assert len(points) == 28
    names = {(p["augmentation"], p["regularization"], p["weight_decay"]) for p in points}
    assert len(names) == 28
    # Every grid point is one of AugReg's published recipes, with its numbers.
    for point in points:
        settings = resolve(point)
        recipe = RECIPES[settings.recipe_name()]
        assert settings.augmentation == recipe.augmentation
        assert (settings.dropout_rate, settings.drop_path_rate) == (recipe.dropout_rate, recipe.drop_path_rate)
        assert settings.weight_decay == recipe.weight_decay
    assert {p["augmentation"] for p in points} == set(AUGREG_AUGMENTATIONS)


def test_choices_ranges_and_fixed_values_become_keras_tuner_hyperparameters():
    hp = kt.HyperParameters()
    space = SearchSpace(augmentation=None, randaugment_layers=2, randaugment_magnitude=(0, 20), mixup_alpha=[0.2, 0.5],
                        regularization=None, dropout_rate=Range(0.0, 0.2), learning_rate=(1e-4, 1e-2, "log"))
    space.validate()
    space.declare(hp)
    by_name = {p.name: p for p in hp.space}
    assert isinstance(by_name["randaugment_layers"], kt.engine.hyperparameters.Fixed)
    assert isinstance(by_name["randaugment_magnitude"], kt.engine.hyperparameters.Int)
    assert (by_name["randaugment_magnitude"].min_value, by_name["randaugment_magnitude"].max_value) == (0, 20)
    assert isinstance(by_name["mixup_alpha"], kt.engine.hyperparameters.Choice)
    assert isinstance(by_name["dropout_rate"], kt.engine.hyperparameters.Float)
    assert by_name["learning_rate"].sampling == "log"
    assert "augmentation" not in by_name and "drop_path_rate" not in by_name
    settings = resolve({"randaugment_layers": 2, "randaugment_magnitude": 13, "mixup_alpha": 0.5, "dropout_rate": 0.1})
    assert settings.augmentation == Augmentation(2, 13, 0.5)
    assert (settings.dropout_rate, settings.drop_path_rate, settings.recipe_name()) == (0.1, 0.0, None)


def test_cutmix_adds_to_a_named_setting():
    settings = resolve({"augmentation": "medium2", "cutmix_alpha": 1.0, "regularization": "reg", "weight_decay": 0.1})
    assert settings.augmentation == dataclasses.replace(AUGREG_AUGMENTATIONS["medium2"], cutmix_alpha=1.0)
    assert settings.recipe_name() is None  # not an AugReg recipe any more


def test_command_line_overrides():
    space = parse_overrides(["weight_decay=0.1", "mixup_alpha=0.2:0.8", "learning_rate=1e-4:1e-2:log",
                             "randaugment_magnitude=0:20:5", "randaugment_layers=2"])
    assert space.weight_decay == 0.1
    assert space.augmentation is None  # the numbers replace the named settings they decide
    assert space.mixup_alpha == Range(0.2, 0.8)
    assert space.learning_rate == Range(1e-4, 1e-2, log=True)
    assert space.randaugment_magnitude == Range(0, 20, step=5)
    assert space.regularization == ["noreg", "reg"]
    space.validate("random")
    assert parse_overrides(["augmentation=none,strong2"]).augmentation == ["none", "strong2"]
    assert parse_overrides(["regularization=unset"], continuous_space()).regularization is None


@pytest.mark.parametrize(
    "space, message",
    [
        (SearchSpace(augmentation=[]), "augmentation=[] has no choices"),
        (SearchSpace(dropout_rate=(0.3, 0.1), regularization=None), "low=0.3 > high=0.1"),
        (SearchSpace(learning_rate=(0.0, 0.1, "log")), "needs low > 0"),
        (SearchSpace(mixup_alpha=[0.2, 0.5]), "augmentation=[none, light1"),
        (SearchSpace(dropout_rate=0.1), "regularization=[noreg, reg] names settings"),
        (SearchSpace(augmentation=None, randaugment_layers=0, randaugment_magnitude=(0, 20)), "randaugment_layers=0"),
        (SearchSpace(augmentation="none", regularization="reg", weight_decay=0.1), "Empty search space: every knob"),
        (SearchSpace(augmentation=["none", "strongest"]), "Unknown augmentation 'strongest'"),
        (SearchSpace(cutmix_alpha=[0.0, 2.0]), "cutmix_alpha must be in [0, 1]"),
        (SearchSpace(weight_decay=[0.1, 0.1]), "lists a value twice"),
    ],
)
def test_empty_or_contradictory_spaces_are_value_errors(space, message):
    with pytest.raises(ValueError) as error:
        space.validate()
    assert message in str(error.value)


def test_grid_needs_choices_and_unknown_knobs_are_named():
    with pytest.raises(ValueError, match=r"learning_rate=range\(0.0001, 0.01, log\) is a range.*--tuner random"):
        parse_overrides(["learning_rate=1e-4:1e-2:log"]).validate("grid")
    with pytest.raises(ValueError, match="Unknown search knob 'weight_decy'. Did you mean weight_decay"):
        parse_overrides(["weight_decy=0.1"])


def test_unknown_tuner_and_incomplete_grid_fail_before_any_training(tmp_path):
    with pytest.raises(ValueError, match="Unknown tuner 'baysian'. Did you mean bayesian"):
        tune(tuner="baysian", output_dir=str(tmp_path))
    hypermodel = AugRegHyperModel("vit_pico8", "shapes/small")
    with pytest.raises(ValueError, match=r"max_trials=10 is smaller than the complete grid of 28 points.*max_trials=28"):
        make_tuner("grid", hypermodel, max_trials=10, complete_grid=True, directory=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_a_different_search_in_the_same_folder_is_refused(tmp_path):
    (tmp_path / "tune_config.json").write_text('{"model": "vit_pico8", "epochs_per_trial": 5}')
    with pytest.raises(ValueError, match=r"epochs_per_trial 5 -> 1.*--overwrite"):
        tune("vit_pico8", "shapes/small", epochs_per_trial=1, output_dir=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["tune_config.json"]
