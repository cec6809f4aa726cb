import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.applications import VisionTransformer
from tests.conftest import build_shapes_only, to_numpy

# REFERENCE.md, 1000-class head. vit_r50_b16's published 97,890,112 is timm's
# default (headless, num_classes=0) build; with a 1000-way head it is 769,000 more.
PARAMS = {
    "vit_ti16": 5_717_416, "vit_s16": 22_050_664, "vit_s32": 22_878_952, "vit_b16": 86_567_656,
    "vit_b32": 88_224_232, "vit_b8": 86_576_872, "vit_l16": 304_326_632, "vit_l32": 306_535_400,
    "vit_h14": 632_045_800, "vit_r26_s32": 36_431_912, "vit_r50_b16": 97_890_112 + 769_000,
    "vit_r50_l32": 328_994_856,
}


@pytest.mark.backend_agnostic  # a parameter count is the same on every backend
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_match_reference(name):
    assert build_shapes_only(name).count_params() == PARAMS[name]


@pytest.mark.backend_agnostic  # a parameter count is the same on every backend
@pytest.mark.slow
def test_r50_b16_headless_count_matches_timm_default():
    assert build_shapes_only("vit_r50_b16", include_top=False).count_params() == 97_890_112


def _tiny(**kwargs):
    config = dict(patch_size=4, hidden_dim=16, depth=2, num_heads=2, mlp_dim=32, input_shape=(16, 16, 3), classes=3)
    config.update(kwargs)
    return VisionTransformer(**config)


def test_outputs_for_each_pooling_and_top():
    images = np.random.RandomState(0).rand(2, 16, 16, 3).astype("float32") * 255
    probabilities = to_numpy(_tiny()(images))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert _tiny(include_top=False)(images).shape == (2, 16)
    assert _tiny(include_top=False, pooling=None)(images).shape == (2, 17, 16)
    gap = _tiny(pooling="gap", include_top=False)
    assert gap(images).shape == (2, 16)
    assert not gap.get_layer("patch_embedding").use_class_token
    assert _tiny(representation_size=8, include_top=False).output_shape == (None, 8)


def test_drop_path_is_linear_over_depth():
    model = _tiny(depth=5, drop_path_rate=0.2)
    rates = [model.get_layer(f"block_{i}").drop_path_rate for i in range(5)]
    np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, 0.15, 0.2])


def test_registry():
    names = keras_vit.list_models()
    assert {"vit_b16", "vit_r50_b16", "vit_pico8"} <= set(names)
    assert keras_vit.list_models("vit_r*") == ["vit_r26_s32", "vit_r50_b16", "vit_r50_l32"]
    with pytest.raises(ValueError, match="Unknown model name 'vit_b61'. Did you mean: vit_b16"):
        keras_vit.create_model("vit_b61")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(input_shape=(30, 32, 3)), "Image size 30x32 is not divisible by the patch size 4"),
        (dict(input_shape=(16, 16)), r"input_shape must be \(height, width, channels\)"),
        (dict(pooling="cls"), "pooling must be one of"),
        (dict(pooling=None), "include_top=True needs pooling"),
        (dict(classes=0), "classes must be a positive int"),
        (dict(weights="/nonexistent/ckpt.safetensors"), "does not exist"),
        (dict(weights="/nonexistent/dir"), "no such file or directory"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**kwargs)


def test_hybrid_size_must_fit_stem_stride():
    with pytest.raises(ValueError, match="not divisible by the ResNet stem's stride 16"):
        keras_vit.create_model("vit_r50_b16", input_shape=(200, 200, 3))


def test_wrong_channel_count_at_call_time():
    with pytest.raises(ValueError, match="images have 1 channels but the model was built for 3"):
        _tiny()(np.zeros((1, 16, 16, 1), "float32"))


def test_save_and_load_round_trip(tmp_path):
    model = _tiny(dropout_rate=0.1, drop_path_rate=0.1)
    images = np.random.RandomState(1).rand(2, 16, 16, 3).astype("float32") * 255
    model.save(tmp_path / "vit.keras")
    restored = keras.saving.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(to_numpy(restored(images)), to_numpy(model(images)), atol=1e-6)
    model.save_weights(tmp_path / "vit.weights.h5")
    again = _tiny(weights=str(tmp_path / "vit.weights.h5"))
    np.testing.assert_allclose(to_numpy(again(images)), to_numpy(model(images)), atol=1e-6)


def test_one_training_step_moves_every_weight():
    model = _tiny(classes=3, dropout_rate=0.1, drop_path_rate=0.1, attention_dropout_rate=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    images = np.random.RandomState(2).rand(8, 16, 16, 3).astype("float32") * 255
    model.fit(images, np.arange(8) % 3, epochs=1, batch_size=4, verbose=0)  # 2 steps: the head starts at 0
    moved = [not np.allclose(b, to_numpy(w)) for b, w in zip(before, model.trainable_weights)]
    frozen = [w.path for w, m in zip(model.trainable_weights, moved) if not m]
    assert not frozen, frozen


def test_hybrid_builds_and_runs_small():
    model = keras_vit.applications.HybridVisionTransformer(
        stem_depths=(1, 1), hidden_dim=16, depth=1, num_heads=2, mlp_dim=16, input_shape=(32, 32, 3), classes=2
    )
    assert model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 2)
    assert model.get_layer("patch_embedding").grid_size == (4, 4)


def test_mixed_precision_model():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = _tiny(classifier_activation=None)
    out = model(np.random.RandomState(3).rand(2, 16, 16, 3).astype("float32") * 255)
    assert np.all(np.isfinite(to_numpy(out).astype("float32")))


def test_wrong_channel_count_without_preprocessing():
    with pytest.raises(ValueError, match=r"found shape=\(1, 16, 16, 4\)|images have 4 channels"):
        _tiny(include_preprocessing=False)(np.zeros((1, 16, 16, 4), "float32"))
