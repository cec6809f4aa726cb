import numpy as np
import pytest

import keras_vit
from keras_vit.applications import SwinTransformer
from keras_vit.evaluation.complexity import measure
from tests.conftest import assert_trains_and_round_trips, build_shapes_only

PARAMS = {"swin_t": 28_288_354, "swin_s": 49_606_258, "swin_b": 87_768_224, "swin_b_384": 87_903_584,
          "swin_l": 196_532_476, "swinv2_t": 28_347_154, "swinv2_s": 49_728_418, "swinv2_b": 87_918_816,
          # window 16 changes no weight: the continuous position bias is an MLP of the offset
          "swinv2_t_w16": 28_347_154, "swinv2_s_w16": 49_728_418, "swinv2_b_w16": 87_918_816}


@pytest.mark.backend_agnostic  # a parameter count is the same on every backend
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_match_reference(name):
    assert build_shapes_only(name).count_params() == PARAMS[name]


def _tiny(**kwargs):
    config = dict(embed_dim=8, depths=(2, 2), num_heads=(2, 4), window_size=4, patch_size=2,
                  input_shape=(32, 32, 3), classes=3)
    config.update(kwargs)
    return SwinTransformer(**config)


@pytest.mark.parametrize("size", [32, 36, 50])
def test_any_size_divisible_by_the_patch_runs(size):
    model = _tiny(input_shape=(size, size, 3), include_top=False, pooling=None)
    grid = -(-(size // 2) // 2)
    assert model(np.zeros((1, size, size, 3), "float32")).shape == (1, grid, grid, 16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive multiples of the patch size 2, e.g. 32"):
        _tiny(input_shape=(33, 33, 3))
    with pytest.raises(ValueError, match="needs a fixed height and width"):
        _tiny(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="positive multiples"):
        _tiny(input_shape=(0, 0, 3))
    with pytest.raises(ValueError, match="pooling must be one of 'avg', 'max'"):
        _tiny(pooling="token")
    with pytest.raises(ValueError, match="one entry per stage"):
        _tiny(num_heads=(2,))
    with pytest.raises(ValueError, match="version must be 1"):
        _tiny(version=3)
    with pytest.raises(ValueError, match="needs version=2 and one entry per stage"):
        _tiny(pretrained_window_sizes=(4, 4))


@pytest.mark.parametrize("version", [1, 2])
def test_save_load_and_train(tmp_path, version):
    assert_trains_and_round_trips(_tiny(drop_path_rate=0.1, attention_dropout_rate=0.1, version=version), tmp_path / "swin.keras")


@pytest.mark.backend_agnostic  # counts from shapes, the same on every backend
def test_attention_memory_grows_linearly_for_swin_and_quadratically_for_vit():
    swin = [measure(_tiny(input_shape=(s, s, 3))).attention_elements for s in (32, 64)]
    vit = [measure(keras_vit.create_model("vit_pico8", pooling="gap", input_shape=(s, s, 3))).attention_elements
           for s in (64, 128)]
    assert swin[1] == 4 * swin[0]  # M^2 * H * W
    assert vit[1] == 16 * vit[0]  # (H * W)^2


def test_swinv2_runs_at_other_sizes_and_windows():
    model = keras_vit.create_model("swinv2_t", input_shape=(96, 96, 3), include_top=False, pooling=None)
    assert model(np.zeros((1, 96, 96, 3), "float32")).shape == (1, 3, 3, 768)
    block = model.get_layer("stage3_block0").attention
    assert block.effective_window == 3 and block.relative_position_bias.window_size == 3
