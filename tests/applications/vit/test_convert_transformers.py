import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification, ViTModel

import keras_vit
from keras_vit.convert import load_transformers_checkpoint
from tests.conftest import assert_parity, to_numpy


def _randomize(model):
    """Random, not default, values everywhere (the classifier starts at 0), of a scale that keeps
    activations of order 1: kernels N(0, 1/fan_in), vectors and embeddings N(0, 0.5^2)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2 and not name.endswith(("cls_token", "position_embeddings")):
                parameter.normal_(0, parameter[0].numel() ** -0.5)
            else:
                parameter.normal_(0, 0.5)


def _save_vit(path, num_labels=5, **overrides):
    config = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  image_size=32, patch_size=8, num_labels=num_labels)
    config.update(overrides)
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**config)).eval()
    _randomize(model)
    model.save_pretrained(path)
    return model


def _logits(reference, images, **kwargs):
    with torch.no_grad():
        return reference(torch.from_numpy(images), **kwargs).logits.numpy()


def _nhwc(images):
    return np.transpose(images, (0, 2, 3, 1))


@pytest.mark.parametrize("overrides", [{}, {"hidden_act": "gelu_new", "qkv_bias": False, "layer_norm_eps": 1e-6}])
def test_logits_match_transformers(tmp_path, overrides):
    reference = _save_vit(tmp_path, **overrides)
    model = load_transformers_checkpoint(str(tmp_path))
    images = np.random.RandomState(0).randn(3, 3, 32, 32).astype("float32")
    assert_parity(model(_nhwc(images)), _logits(reference, images), "ViT logits vs transformers")


def test_include_preprocessing_takes_raw_pixels(tmp_path):
    reference = _save_vit(tmp_path)
    model = load_transformers_checkpoint(str(tmp_path), include_preprocessing=True)
    pixels = np.random.RandomState(1).randint(0, 256, (2, 32, 32, 3)).astype("float32")
    normalized = np.transpose(pixels / 127.5 - 1.0, (0, 3, 1, 2)).astype("float32")
    assert_parity(model(pixels), _logits(reference, normalized), "ViT logits with preprocessing vs transformers")


def test_position_embedding_interpolation_matches_transformers(tmp_path):
    reference = _save_vit(tmp_path)
    model = load_transformers_checkpoint(str(tmp_path), input_shape=(48, 48, 3))
    images = np.random.RandomState(2).randn(2, 3, 48, 48).astype("float32")
    expected = _logits(reference, images, interpolate_pos_encoding=True)
    assert_parity(model(_nhwc(images)), expected, "ViT logits at 48 px vs transformers interpolate_pos_encoding")


def test_legacy_key_layout_and_headless_vit_model(tmp_path):
    reference = _save_vit(tmp_path / "new")
    legacy = {}
    for key, value in reference.state_dict().items():
        key = key.replace("vit.layers.", "vit.encoder.layer.")
        for new, old in (("q_proj", "attention.query"), ("k_proj", "attention.key"), ("v_proj", "attention.value"),
                         ("o_proj", "output.dense")):
            key = key.replace(f"attention.{new}", f"attention.{old}")
        key = key.replace("mlp.fc1", "intermediate.dense").replace("mlp.fc2", "output.dense")
        legacy[key] = value.contiguous()
    os.makedirs(tmp_path / "legacy")
    save_file(legacy, str(tmp_path / "legacy" / "model.safetensors"))
    (tmp_path / "legacy" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    model = load_transformers_checkpoint(str(tmp_path / "legacy"))
    images = np.random.RandomState(3).randn(1, 3, 32, 32).astype("float32")
    assert_parity(model(_nhwc(images)), _logits(reference, images), "ViT logits vs transformers")

    headless = load_transformers_checkpoint(str(tmp_path / "new"), include_top=False)
    with torch.no_grad():
        hidden = reference.vit(torch.from_numpy(images)).last_hidden_state[:, 0].numpy()
    assert_parity(headless(_nhwc(images)), hidden, "headless ViT class token vs transformers")


def test_vit_model_with_pooler_maps_to_pre_logits(tmp_path):
    torch.manual_seed(0)
    reference = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                   image_size=16, patch_size=8)).eval()
    _randomize(reference)
    reference.save_pretrained(tmp_path)
    model = load_transformers_checkpoint(str(tmp_path))
    images = np.random.RandomState(4).randn(2, 3, 16, 16).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).pooler_output.numpy()
    assert_parity(model(_nhwc(images)), expected, "ViTModel pooler output vs transformers")


def test_checkpoint_for_another_architecture_fails_loudly(tmp_path):
    _save_vit(tmp_path)
    deeper = keras_vit.applications.VisionTransformer(
        patch_size=8, hidden_dim=32, depth=3, num_heads=4, mlp_dim=64, input_shape=(32, 32, 3), classes=5
    )
    with pytest.raises(ValueError, match="lacks: vit.layers.2.layernorm_before.weight"):
        keras_vit.convert.load_weights(deeper, str(tmp_path))
    wider = keras_vit.applications.VisionTransformer(
        patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=48, input_shape=(32, 32, 3), classes=5
    )
    with pytest.raises(ValueError, match=r"block_0/mlp/fc1/kernel: checkpoint shape \(32, 64\) != model shape \(32, 48\)"):
        keras_vit.convert.load_weights(wider, str(tmp_path))
    before = [to_numpy(w) for w in wider.weights]
    assert all(np.array_equal(a, to_numpy(b)) for a, b in zip(before, wider.weights))  # nothing half-assigned


def test_wrong_model_type_and_missing_files(tmp_path):
    _save_vit(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "beit"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="holds a 'beit' model"):
        load_transformers_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="is not a directory"):
        load_transformers_checkpoint(str(tmp_path / "nope"))
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="never unpickles"):
        load_transformers_checkpoint(str(tmp_path))


def test_weights_argument_of_constructors(tmp_path):
    reference = _save_vit(tmp_path, num_labels=1000, image_size=224, patch_size=16, hidden_size=192,
                          num_attention_heads=3, intermediate_size=768, num_hidden_layers=12, layer_norm_eps=1e-6)
    model = keras_vit.applications.ViTTiny16(weights=str(tmp_path), classifier_activation=None, include_preprocessing=False)
    images = np.random.RandomState(5).randn(1, 3, 224, 224).astype("float32")
    assert_parity(model(_nhwc(images)), _logits(reference, images), "ViT logits vs transformers")
