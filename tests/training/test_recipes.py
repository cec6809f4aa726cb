import json

import keras
import pytest

from keras_vit.layers import StochasticDepth
from keras_vit.training import RECIPES, get_recipe, list_recipes, train

pytestmark = pytest.mark.backend_agnostic


def test_augreg_grid_is_seven_augmentations_by_two_regularizations_by_two_weight_decays():
    augreg = [name for name in list_recipes() if name.startswith("augreg-") and name != "augreg-finetune"]
    assert len(augreg) == 28
    recipe = get_recipe("augreg-medium2-reg-wd0.03")
    assert (recipe.dropout_rate, recipe.drop_path_rate, recipe.weight_decay) == (0.1, 0.1, 0.03)
    assert (recipe.augmentation.randaugment_layers, recipe.augmentation.randaugment_magnitude,
            recipe.augmentation.mixup_alpha) == (2, 15, 0.5)
    assert get_recipe("augreg-light1-wd0.1").dropout_rate == 0.0
    # Adam (0.9, 0.999), lr 1e-3 at batch 4096, 10k warmup steps of 300 ImageNet epochs, clip 1.0
    assert (recipe.learning_rate, recipe.reference_batch_size, recipe.clip_norm, recipe.beta_2) == (1e-3, 4096, 1.0, 0.999)
    assert recipe.warmup_fraction * 300 * 1_281_167 / 4096 == pytest.approx(10_000, rel=1e-4)


def test_short_augreg_name_means_weight_decay_0_1():
    assert get_recipe("augreg-medium2-reg") is RECIPES["augreg-medium2-reg-wd0.1"]


def test_swin_recipe():
    recipe = get_recipe("swin")
    assert (recipe.learning_rate, recipe.reference_batch_size, recipe.weight_decay, recipe.clip_norm) == (5e-4, 512, 0.05, 5.0)
    assert recipe.scaled_learning_rate(1024) == 1e-3  # the paper: 0.001 at batch 1024
    assert recipe.label_smoothing == 0.1 and recipe.warmup_fraction == pytest.approx(20 / 300)
    aug = recipe.augmentation
    assert (aug.randaugment_magnitude, aug.mixup_alpha, aug.cutmix_alpha, aug.random_erasing) == (9, 0.8, 1.0, 0.25)
    assert recipe.drop_path_rate is None  # the model's own: Swin-T 0.2, S 0.3, B 0.5


def test_mvitv2_recipe():
    recipe = get_recipe("mvitv2")  # facebookresearch/mvit configs/MVITv2_T.yaml + mvit/config/defaults.py
    assert (recipe.weight_decay, recipe.clip_norm, recipe.label_smoothing, recipe.epochs) == (0.05, 1.0, 0.1, 300)
    assert recipe.scaled_learning_rate(2048) == pytest.approx(2e-3)  # 2.5e-4 per 256, 8 shards of 256
    assert recipe.warmup_fraction * 300 == pytest.approx(70)
    aug = recipe.augmentation
    assert (aug.randaugment_layers, aug.randaugment_magnitude, aug.mixup_alpha, aug.cutmix_alpha, aug.random_erasing) == (
        6, 9, 0.8, 1.0, 0.25)


def test_learning_rate_scales_linearly_with_the_batch():
    assert get_recipe("swin").scaled_learning_rate(256) == pytest.approx(2.5e-4)
    assert get_recipe("augreg-none-wd0.1").scaled_learning_rate(8192) == pytest.approx(2e-3)


def test_unknown_recipe_names_close_matches():
    with pytest.raises(ValueError, match="Unknown recipe 'augreg-medium3-reg'. Did you mean augreg-medium"):
        get_recipe("augreg-medium3-reg")


@pytest.mark.slow
def test_train_applies_the_recipe(tmp_path, shapes_data_dir):
    result = train("vit_pico8", "shapes/small", recipe="augreg-strong2-reg", data_dir=shapes_data_dir, image_size=32,
                   batch_size=16, epochs=1, steps_per_epoch=3, label_smoothing=0.1, ema_momentum=0.9,
                   output_dir=str(tmp_path / "run"), verbose=0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["recipe"] == "augreg-strong2-reg-wd0.1" and summary["weight_decay"] == 0.1
    assert summary["learning_rate"] == pytest.approx(1e-3 * 16 / 4096)
    assert summary["augmentation"]["mixup_alpha"] == 0.8 and summary["optimizer_steps"] == 3
    assert summary["warmup_steps"] == 0  # 10.7% of 3 steps
    layers = list(result.model._flatten_layers())
    dropouts = {layer.name: layer.rate for layer in layers if isinstance(layer, keras.layers.Dropout)}
    assert dropouts["embedding_dropout"] == 0.1 and set(dropouts.values()) == {0.0, 0.1}  # attention dropout stays 0
    assert max(layer.rate for layer in layers if isinstance(layer, StochasticDepth)) == pytest.approx(0.1)
    assert result.model.optimizer.use_ema and result.model.loss.label_smoothing == 0.1
    assert not (tmp_path / "run" / "checkpoint").exists()  # removed once the run finished
