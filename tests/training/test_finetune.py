"""Fine-tuning: --weights, the new or kept head, a frozen backbone, the fine-tuning recipes and the
defaults chosen from the dataset (issue 14)."""

import json
import math

import keras
import numpy as np
import pytest

from keras_vit import cli, create_model
from keras_vit.applications.saving import ClassifierMetadata, load_classifier, read_metadata, save_classifier
from keras_vit.applications.vit.model import VisionTransformer
from keras_vit.data import default_min_crop_scale
from keras_vit.layers.patch_embedding import resize_position_embedding
from keras_vit.training import build_optimizer, get_recipe, train
from keras_vit.training.pretrained import load_pretrained, transfer_weights
from keras_vit.training.train import default_epochs
from tests.conftest import to_numpy

TINY = dict(dataset="shapes/small", image_size=32, batch_size=8, epochs=1, steps_per_epoch=2, verbose=0)


def _weights(model):
    return {variable.path: to_numpy(variable).copy() for variable in model.weights}


def test_weights_move_to_a_new_head_and_another_image_size():
    source = create_model("vit_pico8", input_shape=(32, 32, 3), classes=6)
    target = create_model("vit_pico8", input_shape=(64, 64, 3), classes=10)
    head_before = to_numpy(target.get_layer("head").kernel).copy()
    copied = transfer_weights(source, target)
    assert copied == len(target.weights) - 2  # all but the head's kernel and bias
    expected, actual = _weights(source), _weights(target)
    for path, value in actual.items():
        if path == "patch_embedding/position_embedding":  # 4x4 grid -> 8x8, no class token
            np.testing.assert_allclose(value, resize_position_embedding(expected[path], (8, 8), num_prefix_tokens=0),
                                       atol=1e-6)
        elif not path.startswith("head/"):
            np.testing.assert_array_equal(value, expected[path])
    np.testing.assert_array_equal(to_numpy(target.get_layer("head").kernel), head_before)


def test_another_architecture_is_refused_listing_every_difference_and_nothing_is_assigned():
    source = VisionTransformer(patch_size=8, hidden_dim=64, depth=2, num_heads=4, mlp_dim=128, pooling="avg",
                               input_shape=(32, 32, 3), classes=6)
    target = VisionTransformer(patch_size=8, hidden_dim=64, depth=4, num_heads=4, mlp_dim=96, pooling="avg",
                               input_shape=(32, 32, 3), classes=6)
    before = _weights(target)
    with pytest.raises(ValueError, match=r"(?s)block_0/mlp/fc1/kernel: checkpoint shape \(64, 128\) "
                                         r"!= model shape \(64, 96\).*block_2: its 12 weights are not in the "
                                         r"checkpoint.*block_3: its 12.*same architecture as --model"):
        transfer_weights(source, target, source_name="ckpt")
    for path, value in _weights(target).items():
        np.testing.assert_array_equal(value, before[path])


def test_keep_head_needs_the_same_classes(tmp_path):
    source = create_model("vit_pico8", input_shape=(32, 32, 3), classes=6, classifier_activation=None)
    save_classifier(source, str(tmp_path / "m.keras"), ClassifierMetadata(class_names=list("abcdef"), image_size=32))
    target = create_model("vit_pico8", input_shape=(32, 32, 3), classes=5, classifier_activation=None)
    with pytest.raises(ValueError, match="--keep-head: .* trained on the classes"):
        load_pretrained(target, "vit_pico8", str(tmp_path / "m.keras"), keep_head=True, class_names=list("abcde"))
    with pytest.raises(ValueError, match="--keep-head: the head of .* has 6 classes, the dataset 5"):
        load_pretrained(target, "vit_pico8", str(tmp_path / "m.keras"), keep_head=True)
    same = create_model("vit_pico8", input_shape=(32, 32, 3), classes=6, classifier_activation=None)
    load_pretrained(same, "vit_pico8", str(tmp_path / "m.keras"), keep_head=True, class_names=list("abcdef"))
    np.testing.assert_array_equal(to_numpy(same.get_layer("head").kernel), to_numpy(source.get_layer("head").kernel))


def test_weights_h5_files_load_as_backbones(tmp_path):
    source = create_model("vit_pico8", input_shape=(32, 32, 3), classes=6)
    source.save_weights(str(tmp_path / "m.weights.h5"))
    target = create_model("vit_pico8", input_shape=(32, 32, 3), classes=3)
    load_pretrained(target, "vit_pico8", str(tmp_path / "m.weights.h5"))
    np.testing.assert_array_equal(to_numpy(target.get_layer("block_3").weights[0]),
                                  to_numpy(source.get_layer("block_3").weights[0]))


@pytest.mark.parametrize("path,message", [("missing.keras", "no such file or folder"),
                                          ("notes.txt", "is not a checkpoint keras-vit reads")])
def test_a_path_that_is_no_checkpoint_is_refused(tmp_path, path, message):
    (tmp_path / "notes.txt").write_text("hello")
    target = create_model("vit_pico8", input_shape=(32, 32, 3), classes=3)
    with pytest.raises(ValueError, match=message):
        load_pretrained(target, "vit_pico8", str(tmp_path / path))


def test_classifier_files_carry_their_class_names(tmp_path):
    model = create_model("vit_pico8", input_shape=(32, 32, 3), classes=3, classifier_activation=None)
    save_classifier(model, str(tmp_path / "model.keras"), ClassifierMetadata(class_names=["cat", "dog", "eel"],
                                                                              model="vit_pico8", image_size=32))
    loaded, metadata = load_classifier(str(tmp_path))  # a run folder works too
    assert metadata.class_names == ["cat", "dog", "eel"] and metadata.image_size == 32
    x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(loaded.predict_on_batch(x)), to_numpy(model.predict_on_batch(x)), atol=1e-5)
    with pytest.raises(ValueError, match="one name per output"):
        save_classifier(model, str(tmp_path / "x.keras"), ClassifierMetadata(class_names=["cat"]))
    model.save(str(tmp_path / "plain.keras"))
    with pytest.raises(ValueError, match="holds no class names"):
        read_metadata(str(tmp_path / "plain.keras"))


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, shapes_data_dir):
    output_dir = tmp_path_factory.mktemp("pretrained") / "run"
    train("vit_pico8", data_dir=shapes_data_dir, output_dir=str(output_dir), **TINY)
    return output_dir


def test_a_frozen_backbone_trains_the_head_alone(tmp_path, shapes_data_dir, pretrained_run):
    source, _ = load_classifier(str(pretrained_run))
    result = train("vit_pico8", data_dir=shapes_data_dir, output_dir=str(tmp_path / "probe"), weights=str(pretrained_run),
                   freeze_backbone=True, recipe="finetune-small", **TINY)
    trained, expected = _weights(result.model), _weights(source)
    for path, value in trained.items():
        if path.startswith("head/"):
            assert not np.array_equal(value, expected[path])  # a new head, trained
        else:
            np.testing.assert_array_equal(value, expected[path])
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    assert summary["weights"] == str(pretrained_run) and summary["freeze_backbone"]
    assert summary["trainable_params"] == 64 * 6 + 6
    assert isinstance(result.model.optimizer, keras.optimizers.SGD)
    assert read_metadata(str(tmp_path / "probe")).class_names == summary["classes"]


@pytest.mark.backend_agnostic
def test_fine_tuning_recipes_are_sgd_without_weight_decay():
    optimizer = build_optimizer(0.01, 0.0, 100, 5, optimizer="sgd", momentum=0.9)
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == 0.9
    assert optimizer.weight_decay is None and optimizer.global_clipnorm == 1.0
    for name in ("augreg-finetune", "finetune-small"):
        recipe = get_recipe(name)
        assert (recipe.optimizer, recipe.weight_decay, recipe.clip_norm) == ("sgd", 0.0, 1.0)
    assert get_recipe("augreg-finetune").image_size == 384
    assert get_recipe("augreg-finetune").scaled_learning_rate(512) == 0.03


@pytest.mark.backend_agnostic
def test_defaults_follow_the_dataset():
    baseline = get_recipe("baseline")
    assert default_epochs(baseline, 93) == 20  # shapes: 6,000 images at batch 64
    assert default_epochs(baseline, 22) == math.ceil(1800 / 22)  # a folder of 1,400 images
    assert default_epochs(get_recipe("augreg-finetune"), 2502) == 4  # ImageNet at 512: 10k steps
    assert default_min_crop_scale("shapes") == 0.8
    assert default_min_crop_scale("some/folder", 8) == 0.8
    assert default_min_crop_scale("some/folder", 375) == 0.08
    assert default_min_crop_scale("imagenet2012", None) == 0.08


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "argv,message",
    [
        (["--keep-head"], "need weights (--weights PATH)"),
        (["--weights", "nowhere/model.keras"], "--weights 'nowhere/model.keras': no such file or folder"),
        (["--epochs", "0"], "epochs must be positive, got 0"),
    ],
)
def test_cli_fine_tuning_errors(tmp_path, capsys, argv, message):
    assert cli.main(["train", "--output-dir", str(tmp_path / "out")] + argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
