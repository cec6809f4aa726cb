"""`features_only=True`: ResNets, Swin and MViT return their stage outputs (timm's multi-scale feature
extraction) with the weights of the full model, and DETR takes such an extractor as its backbone."""

import numpy as np
import pytest

import keras_vit
from tests.conftest import to_numpy

TINY_RESNET = dict(depths=(1, 1, 1), widths=(4, 8, 8), filters=(8, 16, 32), include_preprocessing=False)
TINY_SWIN = dict(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 2, 2), window_size=2, include_preprocessing=False)


def _build(family, **kwargs):
    config = TINY_RESNET if family == "resnet50" else TINY_SWIN
    return keras_vit.model_info(family).builder(**config, input_shape=(32, 32, 3), **kwargs)


@pytest.mark.parametrize("family", ["resnet50", "swin_t"])
def test_stage_outputs_carry_the_weights_of_the_full_model(family, tmp_path):
    full = _build(family, include_top=False, pooling=None)
    full.save_weights(tmp_path / "full.weights.h5")
    features = _build(family, features_only=True, weights=str(tmp_path / "full.weights.h5"))
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    maps = features(x)
    widths = (8, 16, 32)  # ResNet: filters; Swin: embed_dim doubling
    assert [tuple(m.shape) for m in maps] == [(2, 8, 8, widths[0]), (2, 4, 4, widths[1]), (2, 2, 2, widths[2])]
    last = maps[-1] if family == "resnet50" else full.get_layer("norm")(maps[-1])  # Swin's headless output adds the final norm
    np.testing.assert_allclose(to_numpy(last), to_numpy(full(x)), atol=1e-5)


@pytest.mark.parametrize("class_token", [False, True])
def test_mvit_stage_maps(class_token, tmp_path):
    from keras_vit.applications import MViTv2

    config = dict(depths=(1, 1, 1, 1), embed_dim=8, num_heads=1, input_shape=(64, 64, 3), include_preprocessing=False)
    if class_token:  # MViTv1: tokens inside, maps outside
        config.update(use_class_token=True, use_abs_pos=True, use_rel_pos=False, residual_pooling=False)
    full = MViTv2(**config, include_top=False, pooling=None)
    full.save_weights(tmp_path / "full.weights.h5")
    features = MViTv2(**config, features_only=True, out_indices=(0, -1), weights=str(tmp_path / "full.weights.h5"))
    x = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype("float32")
    first, last = features(x)
    assert tuple(first.shape) == (1, 16, 16, 8) and tuple(last.shape) == (1, 2, 2, 64)
    normed = full.get_layer("norm")(last)
    expected = to_numpy(full(x))
    if class_token:  # the headless model keeps its tokens: the class token first, then the map
        expected = expected[:, 1:].reshape(1, 2, 2, 64)
    np.testing.assert_allclose(to_numpy(normed), expected, atol=1e-5)


def test_out_indices_choose_stages_and_bad_ones_are_refused():
    features = _build("resnet50", features_only=True, out_indices=(-1, 0))
    assert [tuple(shape) for shape in features.output_shape] == [(None, 8, 8, 8), (None, 2, 2, 32)]
    assert len(features.layers) < len(_build("resnet50", include_top=True, classes=3).layers)  # no head
    for bad in [(3,), (), (0, -3), ("1",)]:
        with pytest.raises(ValueError, match="out_indices"):
            _build("resnet50", features_only=True, out_indices=bad)


def test_detr_reads_the_last_map_of_a_multi_scale_backbone_and_refuses_tokens():
    from keras_vit.applications.detr import DETR

    backbone = _build("swin_t", features_only=True)
    model = DETR(backbone, num_queries=3, hidden_dim=8, num_heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=16, classes=2)
    outputs = model(np.zeros((1, 32, 32, 3), "float32"))
    assert tuple(outputs["pred_boxes"].shape) == (1, 3, 4)
    assert model.get_layer("input_projection").kernel.shape[2] == 32  # the last stage's width
    with pytest.raises(ValueError, match="not a feature map"):
        DETR(keras_vit.create_model("vit_pico8", include_top=False, pooling=None, input_shape=(16, 16, 3)))
