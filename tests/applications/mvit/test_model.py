import numpy as np
import pytest

import keras_vit
from keras_vit.applications import MViTv2
from tests.conftest import assert_trains_and_round_trips, to_numpy

# REFERENCE.md: timm's mvitv2_* and pytorchvideo's image MViT-B-16, 1000 classes at 224 px.
PARAMS = {"mvitv2_t": 24_173_320, "mvitv2_s": 34_870_216, "mvitv2_b": 51_472_744, "mvitv2_l": 217_992_952,
          "mvit_b16": 36_982_696}
GMACS = {"mvitv2_t": 4.68, "mvitv2_s": 6.96, "mvitv2_b": 10.10, "mvitv2_l": 43.9}


@pytest.mark.backend_agnostic  # a parameter count is the same on every backend
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_and_gmacs_match_reference(name):
    from keras_vit.evaluation.complexity import measure

    assert keras_vit.model_info(name).params == PARAMS[name]
    cost = measure(keras_vit.create_model(name))
    assert cost.params == PARAMS[name]
    if name in GMACS:  # within 2% of timm's published GMACs (measured: 0.0-0.4%)
        assert cost.gmacs == pytest.approx(GMACS[name], rel=0.02)


def _tiny(**kwargs):
    """Four stages as the real models (total stride 32), widths 8 to 64."""
    config = dict(depths=(1, 1, 1, 1), embed_dim=8, num_heads=1, input_shape=(32, 32, 3), classes=3)
    config.update(kwargs)
    return MViTv2(**config)


def _v1(**kwargs):
    config = dict(use_class_token=True, use_abs_pos=True, sep_pos_embed=True, use_rel_pos=False, residual_pooling=False,
                  expand_attn=False, pool_q_every_block=False, pooling="token")
    return _tiny(**{**config, **kwargs})


@pytest.mark.parametrize("size", [32, 96])
def test_any_square_size_divisible_by_32_runs(size):
    model = _tiny(input_shape=(size, size, 3), include_top=False, pooling=None)
    assert model(np.zeros((1, size, size, 3), "float32")).shape == (1, size // 32, size // 32, 64)
    attention = model.get_layer("stage0_block0").attention
    assert attention.q_size == (size // 4,) * 2 and attention.kv_size == (size // 16,) * 2
    assert tuple(attention.rel_pos_h.shape) == (2 * (size // 4) - 1, 8)  # sized from the input


def test_bad_arguments_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="relative position tables need a square image, got 64x96. Resize or pad the "
                                         "images to a square such as 96x96, or build with use_rel_pos=False"):
        _tiny(input_shape=(64, 96, 3))
    with pytest.raises(ValueError, match="Image size 40x40 is not divisible by the model's total stride 32.*e.g. 32"):
        _tiny(input_shape=(40, 40, 3))
    with pytest.raises(ValueError, match="pool_mode must be one of 'conv', 'max', 'avg' .*got 'mean'. Use 'conv'"):
        _tiny(pool_mode="mean")
    with pytest.raises(ValueError, match="pooling must be one of 'avg', 'max'.*got 'token'"):
        _tiny(pooling="token")
    with pytest.raises(ValueError, match=r"embed_dim \(8, 16\) needs one entry per stage \(4\)"):
        _tiny(embed_dim=(8, 16))
    with pytest.raises(ValueError, match="one \\(height, width\\) stride per stage"):
        _tiny(stride_q=((1, 1), (2, 2)))


@pytest.mark.parametrize("pool_mode", ["max", "avg"])
def test_max_and_avg_pooling_have_no_pooling_weights(pool_mode):
    model = _tiny(pool_mode=pool_mode)
    assert not [w.path for w in model.weights if "pool_" in w.path or "norm_" in w.path]
    assert model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 3)


def test_mvit_v1_class_token_model():
    model = _v1(input_shape=(32, 64, 3))  # no relative positions: height and width may differ
    assert model.output_shape == (None, 3)
    features = _v1(input_shape=(32, 64, 3), include_top=False, pooling=None)
    assert features.output_shape == (None, 1 + 1 * 2, 64)
    blocks = [features.get_layer(f"stage{i}_block0").attention for i in range(4)]
    assert [block.pool_q is not None for block in blocks] == [False, True, True, True]  # q pooled only where strided
    assert [block.kv_size for block in blocks] == [(2, 4), (4, 8), (4, 8), (2, 4)]  # k/v strides 4, 2, 1, 1
    assert features.get_layer("stage0_block0").mlp.fc2.units == 16  # MViTv1 widens in the MLP


def test_drop_path_grows_linearly_over_all_blocks():
    model = _tiny(depths=(1, 2, 1, 1), drop_path_rate=0.4)
    names = ["stage0_block0", "stage1_block0", "stage1_block1", "stage2_block0", "stage3_block0"]
    np.testing.assert_allclose([model.get_layer(n).drop_path_rate for n in names], [0.0, 0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_save_load_and_train(tmp_path, version):
    two_stages = dict(depths=(1, 1), stride_q=((1, 1), (2, 2)), drop_path_rate=0.1)  # total stride 8: compiles faster
    model = (_tiny if version == "v2" else _v1)(**two_stages)
    assert_trains_and_round_trips(model, tmp_path / "mvit.keras")


def test_registry():
    assert keras_vit.list_models("mvit*") == ["mvit_b16", "mvitv2_b", "mvitv2_l", "mvitv2_s", "mvitv2_t"]
    spec = keras_vit.model_info("mvitv2_t")
    assert spec.constructor is keras_vit.applications.MViTv2Tiny and spec.default_size == 224
    assert spec.skips_weight_decay("stage0_block0/attention/rel_pos_h")
    assert not spec.skips_weight_decay("stage0_block0/attention/qkv/kernel")
    model = keras_vit.create_model("mvitv2_t", depths=(1, 1, 1, 1), embed_dim=8, input_shape=(32, 32, 3), classes=2)
    assert to_numpy(model(np.zeros((1, 32, 32, 3), "float32"))).shape == (1, 2)
