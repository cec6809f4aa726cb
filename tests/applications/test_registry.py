"""The model registry: specs, the keras.applications arguments every family shares, dispatch on the task."""

import re

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.applications import registry
from keras_vit.layers import TokenPooling

# REFERENCE.md (1000 classes; ResNets: trainable weights, as torchvision counts them).
PUBLISHED = {
    "vit_ti16": 5_717_416, "vit_s16": 22_050_664, "vit_s32": 22_878_952, "vit_b16": 86_567_656,
    "vit_b32": 88_224_232, "vit_b8": 86_576_872, "vit_l16": 304_326_632, "vit_l32": 306_535_400,
    "vit_h14": 632_045_800, "vit_r26_s32": 36_431_912, "vit_r50_b16": 98_659_112, "vit_r50_l32": 328_994_856,
    "swin_t": 28_288_354, "swin_s": 49_606_258, "swin_b": 87_768_224, "swin_b_384": 87_903_584,
    "swin_l": 196_532_476, "swinv2_t": 28_347_154, "swinv2_s": 49_728_418, "swinv2_b": 87_918_816,
    "resnet50": 25_557_032, "owlvit_b32": 153_231_879, "owlvit_b16": 152_789_511, "owlvit_l14": 433_888_519,
    "owlv2_b16": 154_966_792, "owlv2_l14": 437_610_760, "clip_b32": 151_277_313, "clip_b16": 149_620_737,
    "clip_l14": 427_616_513,
}


def test_specs_carry_the_published_numbers_and_sizes():
    for name, params in PUBLISHED.items():
        assert keras_vit.model_info(name).params == params, name
    sizes = {name: keras_vit.model_info(name).default_size for name in ("vit_pico8", "vit_b16", "swin_b_384", "swinv2_t")}
    assert sizes == {"vit_pico8": 64, "vit_b16": 224, "swin_b_384": 384, "swinv2_t": 256}
    for name in keras_vit.list_models():
        spec = keras_vit.model_info(name)
        assert spec.name == name and spec.task in registry.TASKS and spec.description
        assert spec.constructor.__name__ == spec.constructor_name
        assert getattr(keras_vit.applications, spec.constructor_name) is spec.constructor


def test_training_reads_the_image_size_from_the_spec():
    from keras_vit.training import default_image_size

    assert [default_image_size(name) for name in ("swinv2_t", "swin_b_384", "vit_pico8", "resnet50")] == [256, 384, 64, 224]


def test_list_models_by_pattern_and_task():
    assert keras_vit.list_models("swinv2_*") == sorted(n for n in keras_vit.list_models() if n.startswith("swinv2_"))
    detectors = ["detr_pico", "detr_r101", "detr_r50"]
    generators = ["igpt_l", "igpt_m", "igpt_pico", "igpt_s"]
    open_vocabulary = ["owlv2_b16", "owlv2_l14", "owlvit_b16", "owlvit_b32", "owlvit_l14", "owlvit_pico"]
    image_text = ["clip_b16", "clip_b32", "clip_l14", "clip_pico16"]
    assert keras_vit.list_models(task="image_text") == image_text
    assert keras_vit.list_models(task="detection") == detectors
    assert keras_vit.list_models(task="generation") == generators
    assert keras_vit.list_models(task="open_vocabulary_detection") == open_vocabulary
    assert keras_vit.list_models(task="classification") == [
        n for n in keras_vit.list_models() if n not in detectors + generators + open_vocabulary + image_text
    ]


def test_unknown_names_and_arguments_are_value_errors():
    with pytest.raises(ValueError, match="Unknown model name 'swin_x'. Did you mean: swin_"):
        keras_vit.model_info("swin_x")
    with pytest.raises(ValueError, match="'resnet50' does not take the argument\\(s\\) drop_path_rate. It takes: .*pooling"):
        keras_vit.create_model("resnet50", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="task must be one of"):
        registry.ModelSpec("x", "X", "vit", lambda: None, {}, "x", task="segmentation")


@pytest.mark.parametrize("name", ["vit_pico8", "swin", "resnet"])
def test_one_pooling_vocabulary(name):
    build = {
        "vit_pico8": lambda **kw: keras_vit.create_model("vit_pico8", input_shape=(16, 16, 3), **kw),
        "swin": lambda **kw: keras_vit.applications.SwinTransformer(
            embed_dim=8, depths=(1,), num_heads=(2,), window_size=2, patch_size=2, input_shape=(8, 8, 3), **kw),
        "resnet": lambda **kw: keras_vit.applications.ResNet(
            depths=(1,), widths=(4,), filters=(8,), input_shape=(16, 16, 3), **kw),
    }[name]
    size = 8 if name == "swin" else 16
    images = np.random.RandomState(0).rand(2, size, size, 3).astype("float32") * 255
    outputs, weights = {}, None
    for pooling in ("avg", "max", "gap"):
        model = build(include_top=False, pooling=pooling)
        weights = weights or model.get_weights()
        model.set_weights(weights)  # the same weights under each pooling
        outputs[pooling] = keras.ops.convert_to_numpy(model.predict_on_batch(images))
        assert outputs[pooling].ndim == 2
    assert build(classes=3, pooling="max").output_shape == (None, 3)
    np.testing.assert_array_equal(outputs["gap"], outputs["avg"])  # "gap" is "avg"
    assert not np.allclose(outputs["avg"], outputs["max"])
    if name == "vit_pico8":
        assert build(classes=3, pooling="token").output_shape == (None, 3)
    else:
        with pytest.raises(ValueError, match="pooling must be one of 'avg', 'max'.*got 'token'"):
            build(pooling="token")
    with pytest.raises(ValueError, match="include_top=True needs pooling="):
        build(pooling=None)
    with pytest.raises(ValueError, match="classes must be a positive int"):
        build(classes=0)


def test_gap_configs_saved_before_the_rename_still_load():
    layer = TokenPooling.from_config({"name": "pooling", "mode": "gap", "num_prefix_tokens": 0})
    assert layer.mode == "avg" and layer.get_config()["mode"] == "avg"


def test_train_dispatches_on_the_task(monkeypatch):
    from keras_vit.training import train

    spec = registry.ModelSpec(
        "tiny_clip", "TinyClip", "test", lambda **kw: None, {}, "a test spec", task="image_text"
    )
    monkeypatch.setitem(registry._SPECS, spec.name, (spec, spec.builder))
    with pytest.raises(ValueError, match="'tiny_clip' is a image_text model, and keras-vit has no trainer"):
        train("tiny_clip")


def test_every_subpackage_is_reachable_from_the_package():
    assert callable(keras_vit.training.get_strategy)
    assert callable(keras_vit.tuning.tune)
    assert callable(keras_vit.data.load_dataset)
    assert callable(keras_vit.convert.load_weights)
    assert keras_vit.layers.WindowAttention.__module__ == "keras_vit.applications.swin.window_attention"
    assert set(keras_vit.__all__) <= set(dir(keras_vit))


def test_layout_maps_and_weight_decay_come_from_the_spec():
    swin, resnet = keras_vit.model_info("swin_t"), keras_vit.model_info("resnet50")
    assert swin.layout_map is keras_vit.model_info("vit_b16").layout_map and resnet.layout_map is None
    assert swin.skips_weight_decay("stage0_block0/window_attention/relative_position_bias/relative_position_bias_table")
    assert not swin.skips_weight_decay("stage0_block0/window_attention/attention/qkv/kernel")
    from keras_vit.training.distribute import model_layout_map

    with pytest.raises(ValueError, match="'resnet50' declares no layout map.*strategy='data'"):
        model_layout_map("resnet50", device_mesh=None)


# One tiny model per family: ViT, Swin, an attention ResNet and an LR-Net.
TINY_BUILDS = {
    "vit": lambda size, channels, **kw: keras_vit.create_model("vit_pico8", input_shape=(size, size, channels), **kw),
    "swin": lambda size, channels, **kw: keras_vit.applications.SwinTransformer(
        embed_dim=8, depths=(1,), num_heads=(2,), window_size=2, patch_size=2, input_shape=(size, size, channels), **kw),
    "sa_resnet": lambda size, channels, **kw: keras_vit.applications.ResNet(
        depths=(1,), widths=(4,), filters=(8,), attention="self_attention", attention_blocks={0: (0,)},
        input_shape=(size, size, channels), **kw),
    "lrnet": lambda size, channels, **kw: keras_vit.applications.ResNet(
        depths=(1,), widths=(8,), filters=(8,), stem="local_relation", spatial="local_relation", kernel_size=3,
        channels_per_group=4, input_shape=(size, size, channels), **kw),
}


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("family", sorted(TINY_BUILDS))
def test_every_family_builds_and_predicts_with_other_channel_counts(family, channels):
    model = TINY_BUILDS[family](16, channels, classes=3)
    normalization = model.get_layer("preprocessing")
    assert len(normalization.mean) == len(normalization.std) == channels  # one mean/std per channel, as ViT
    images = np.random.RandomState(0).rand(2, 16, 16, channels).astype("float32") * 255
    outputs = keras.ops.convert_to_numpy(model.predict_on_batch(images))
    assert outputs.shape == (2, 3) and np.isfinite(outputs).all()


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("name", [None, 16, ["vit_b16"]])
def test_a_model_name_that_is_not_a_str_is_a_value_error(name):
    with pytest.raises(ValueError, match=f"A model name is a str such as 'vit_b16', got {re.escape(repr(name))}. Call keras_vit.list_models"):
        keras_vit.create_model(name)
    with pytest.raises(ValueError, match="keras_vit.list_models()"):
        keras_vit.model_info(name)


@pytest.mark.parametrize("family", sorted(TINY_BUILDS))
def test_numpy_integers_are_accepted_for_input_shape_and_classes(family):
    model = TINY_BUILDS[family](np.int64(16), np.int32(3), classes=np.int64(5))
    assert model.input_shape == (None, 16, 16, 3) and all(type(side) is int for side in model.input_shape[1:])
    assert model.output_shape == (None, 5) and type(model.get_layer("head").units) is int
    with pytest.raises(ValueError, match="classes must be a positive int, got "):
        TINY_BUILDS[family](16, 3, classes=np.bool_(True))
    if family == "vit":  # a NumPy array as input_shape, through create_model
        assert keras_vit.create_model("vit_pico8", input_shape=np.array([16, 16, 3]), classes=np.int64(2)).output_shape == (None, 2)
