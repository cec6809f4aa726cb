import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.applications.resnet import NL_5_BLOCKS, ResNet
from keras_vit.applications.resnet.bottleneck import Bottleneck
from tests.conftest import assert_parity, assert_trains_and_round_trips, build_shapes_only, to_numpy


def _trainable(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


@pytest.mark.backend_agnostic  # a parameter count is the same on every backend
@pytest.mark.slow
@pytest.mark.parametrize("name, expected", [("resnet50", 25_557_032), ("resnet101", 44_549_160)])
def test_plain_resnet_counts_equal_torchvision(name, expected):
    assert _trainable(build_shapes_only(name)) == expected


def _tiny(**kwargs):
    config = dict(depths=(1, 2), widths=(4, 8), filters=(16, 32), input_shape=(32, 32, 3), classes=3)
    config.update(kwargs)
    return ResNet(**config)


@pytest.mark.parametrize("size", [32, 33, 65])
def test_any_size_runs_and_halves_like_torch(size):
    model = _tiny(input_shape=(size, size, 3), include_top=False, pooling=None)
    side = size
    for _ in range(3):  # stem conv, max pool, one strided stage
        side = (side + 1) // 2
    assert model(np.zeros((1, size, size, 3), "float32")).shape == (1, side, side, 32)


def test_bad_arguments():
    with pytest.raises(ValueError, match="one entry per stage"):
        _tiny(widths=(4,))
    with pytest.raises(ValueError, match="attention must be None, 'non_local' or 'self_attention'"):
        _tiny(attention="axial", attention_blocks={0: (0,)})
    with pytest.raises(ValueError, match="needs attention_blocks"):
        _tiny(attention="non_local")
    with pytest.raises(ValueError, match="names a block that does not exist: stages 0..1 have \\[1, 2\\] blocks"):
        _tiny(attention="non_local", attention_blocks={1: (2,)})
    with pytest.raises(ValueError, match="pooling must be"):
        _tiny(pooling="token")
    with pytest.raises(ValueError, match="spatial must be 'conv' or 'local_relation'"):
        Bottleneck(8, 4, spatial="deformable")
    assert NL_5_BLOCKS == {1: (1, 3), 2: (1, 3, 5)}


def test_bottleneck_matches_its_definition():
    x = np.random.RandomState(0).randn(2, 6, 6, 8).astype("float32")
    block = Bottleneck(16, 4, strides=2)
    out = to_numpy(block(x))
    conv = lambda layer, h: to_numpy(layer(h))  # noqa: E731
    h = np.maximum(conv(block.bn1, conv(block.conv1, x)), 0)
    h = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))  # torch-style padding of the strided 3x3
    h = np.maximum(conv(block.bn2, conv(block.conv2, h)), 0)
    h = conv(block.bn3, conv(block.conv3, h))
    shortcut = conv(block.shortcut_bn, conv(block.shortcut, x))
    assert_parity(out, np.maximum(h + shortcut, 0), "bottleneck vs its definition")
    assert out.shape == (2, 3, 3, 16)
    assert Bottleneck.from_config(block.get_config()).get_config() == block.get_config()


def test_save_load_and_train(tmp_path):
    assert_trains_and_round_trips(_tiny(zero_init_residual=True), tmp_path / "resnet.keras")


@pytest.mark.backend_agnostic  # a parameter count is the same on every backend
@pytest.mark.slow
@pytest.mark.parametrize("name, published", [("lrnet26", 14.7e6), ("lrnet50", 23.3e6)])
def test_lrnet_counts_within_one_percent_of_the_paper(name, published):
    assert abs(_trainable(build_shapes_only(name)) / published - 1) < 0.01


@pytest.mark.parametrize("name, blocks", [("nl_resnet50", 5), ("nl_resnet50_10", 10)])
def test_non_local_blocks_sit_in_res3_and_res4(name, blocks):
    model = build_shapes_only(name, input_shape=(64, 64, 3))
    placed = [layer.name for layer in model.layers if layer.name.endswith("_non_local")]
    assert len(placed) == blocks and all(n.startswith(("stage1_", "stage2_")) for n in placed)
    if blocks == 5:
        assert placed == [f"stage{s}_block{b}_non_local" for s, b in ((1, 1), (1, 3), (2, 1), (2, 3), (2, 5))]


@pytest.mark.parametrize("attention", ["non_local", "self_attention"])
def test_inserted_attention_blocks_start_as_the_identity(attention):
    # The same ResNet with and without attention blocks computes the same function at
    # initialisation (the blocks' last BatchNorm gamma / SAGAN gamma start at 0).
    plain = _tiny(input_shape=(32, 32, 3))
    with_attention = _tiny(input_shape=(32, 32, 3), attention=attention, attention_blocks={1: (0, 1)},
                           attention_options=dict(sub_sample=False) if attention == "non_local" else None)
    for layer in plain.layers:
        with_attention.get_layer(layer.name).set_weights(layer.get_weights())
    images = np.random.RandomState(1).rand(2, 32, 32, 3).astype("float32") * 255
    np.testing.assert_allclose(to_numpy(with_attention(images)), to_numpy(plain(images)), atol=1e-6)


def _tiny_lrnet(**kwargs):
    return _tiny(**{**dict(stem="local_relation", spatial="local_relation", kernel_size=3, channels_per_group=4), **kwargs})


def test_lrnet_trains_every_weight_and_round_trips(tmp_path):
    model = _tiny_lrnet(classifier_activation=None)
    images = np.random.RandomState(0).rand(4, 32, 32, 3).astype("float32") * 255
    before = {w.path: to_numpy(w).copy() for w in model.trainable_weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(images, np.arange(4) % 3)
    after = {w.path: to_numpy(w) for w in model.trainable_weights}
    assert [path for path in before if np.array_equal(before[path], after[path])] == []
    model.save(tmp_path / "lrnet.keras")
    restored = keras.saving.load_model(tmp_path / "lrnet.keras")
    np.testing.assert_allclose(to_numpy(restored(images)), to_numpy(model(images)), atol=1e-5)


def test_lrnet_kernel_larger_than_a_late_stage_map_is_a_clear_error():
    with pytest.raises(ValueError, match="kernel_size=7 is larger than the input allows"):
        keras_vit.create_model("lrnet26", input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="channels_per_group .* needs one entry per stage"):
        _tiny_lrnet(channels_per_group=(4, 4, 4))
