import numpy as np
import pytest
import torch
from transformers import SwinConfig, SwinForImageClassification

from keras_vit.convert import load_transformers_checkpoint
from tests.conftest import assert_parity, to_numpy


def _randomize(model):
    """Random, not default, values everywhere, of a scale that keeps activations of order 1: kernels
    N(0, 1/fan_in), vectors and bias tables N(0, 0.3^2), Swin V2 logit scales U(1, 5) (temperatures
    e..148, clamped at 100)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("logit_scale"):
                parameter.uniform_(1.0, 5.0)
            elif parameter.dim() >= 2 and not name.endswith("relative_position_bias_table"):
                parameter.normal_(0, parameter[0].numel() ** -0.5)
            else:
                parameter.normal_(0, 0.3)


def _save_swin(path, **overrides):
    config = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
                  num_labels=5)
    config.update(overrides)
    torch.manual_seed(0)
    model = SwinForImageClassification(SwinConfig(**config)).eval()
    _randomize(model)
    model.save_pretrained(path)
    return model


def _compare(reference, model, size, seed=0):
    images = np.random.RandomState(seed).randn(2, 3, size, size).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).logits.numpy()
    assert_parity(model(np.transpose(images, (0, 2, 3, 1))), expected, "Swin logits vs transformers")


def test_shifted_windows_match_transformers(tmp_path):
    # 16x16 tokens, window 4: stage 0 has 4x4 windows, shifted by 2 in every second block.
    reference = _save_swin(tmp_path)
    _compare(reference, load_transformers_checkpoint(str(tmp_path)), 32)


@pytest.mark.parametrize("image_size", [40, 44])
def test_grid_that_needs_padding_matches_transformers(tmp_path, image_size):
    # 20x20 / 22x22 tokens are not multiples of the window 8: padded windows, odd merges.
    reference = _save_swin(tmp_path, image_size=image_size, window_size=8)
    _compare(reference, load_transformers_checkpoint(str(tmp_path)), image_size)


def _save_swinv2(path, model_class=None, **overrides):
    from transformers import Swinv2Config, Swinv2ForImageClassification

    config = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
                  num_labels=5)
    config.update(overrides)
    torch.manual_seed(0)
    model = (model_class or Swinv2ForImageClassification)(Swinv2Config(**config)).eval()
    _randomize(model)
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(image_size=40, window_size=8), dict(image_size=44, window_size=8), dict(pretrained_window_sizes=[3, 2])],
    ids=["shifted", "padded-40", "padded-44", "pretrained-window"],
)
def test_swinv2_matches_transformers(tmp_path, overrides):
    reference = _save_swinv2(tmp_path, **overrides)
    model = load_transformers_checkpoint(str(tmp_path))
    _compare(reference, model, overrides.get("image_size", 32))


@pytest.mark.parametrize("version", [1, 2])
def test_bare_backbones_load_without_a_head(tmp_path, version):
    from transformers import SwinModel, Swinv2Model

    if version == 1:
        reference = _save_swin(tmp_path)  # a classifier's weights, re-saved as a bare SwinModel
        reference = SwinModel.from_pretrained(str(tmp_path)).eval()
        reference.save_pretrained(tmp_path / "bare")
    else:
        reference = _save_swinv2(tmp_path / "bare", model_class=Swinv2Model)
    model = load_transformers_checkpoint(str(tmp_path / "bare"))
    assert model.output.shape == (None, 32) and "head" not in [layer.name for layer in model.layers]
    images = np.random.RandomState(0).randn(2, 3, 32, 32).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).pooler_output.numpy()
    assert_parity(model(np.transpose(images, (0, 2, 3, 1))), expected, f"bare Swin v{version} pooler output vs transformers")


def test_other_window_size_needs_allow_resize(tmp_path):
    _save_swin(tmp_path)
    with pytest.raises(ValueError, match="trained with window size 4, but the model uses window_size=6: build it with window_size=4, or pass allow_resize=True"):
        load_transformers_checkpoint(str(tmp_path), window_size=6)
    model = load_transformers_checkpoint(str(tmp_path), window_size=6, allow_resize=True)
    table = model.get_layer("stage0_block0").attention.relative_position_bias.table
    assert tuple(table.shape) == (121, 2)


def test_window_clamped_to_a_small_map_takes_the_centre_of_the_table(tmp_path):
    # At 12 px the second stage is 3x3, smaller than the window 4: its offsets span -2..2, a
    # subset of the checkpoint's -3..3, so the bias must equal the full window's bias on them.
    _save_swin(tmp_path)
    full = load_transformers_checkpoint(str(tmp_path))
    small = load_transformers_checkpoint(str(tmp_path), input_shape=(12, 12, 3))
    full_bias = to_numpy(full.get_layer("stage1_block0").attention.relative_position_bias.relative_bias())
    small_bias = to_numpy(small.get_layer("stage1_block0").attention.relative_position_bias.relative_bias())
    inside = [row * 4 + col for row in range(3) for col in range(3)]  # a 3x3 corner of the 4x4 window
    np.testing.assert_array_equal(small_bias, full_bias[:, inside][:, :, inside])
