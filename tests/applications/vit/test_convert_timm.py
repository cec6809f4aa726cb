import keras
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import BitConfig, BitModel

from keras_vit.applications import HybridVisionTransformer, VisionTransformer
from keras_vit.convert import load_timm_checkpoint, load_weights
from tests.conftest import assert_parity
from tests.applications.vit.timm_reference import random_vit_state, vit_forward


def _nhwc(images):
    return np.transpose(images, (0, 2, 3, 1))


def test_vit_state_dict_matches_reference(tmp_path):
    state = random_vit_state(dim=24, depth=2, mlp=48, patch=4, grid=4, channels=3, classes=7,
                             generator=torch.Generator().manual_seed(0))
    save_file(state, str(tmp_path / "vit.safetensors"))
    model = VisionTransformer(patch_size=4, hidden_dim=24, depth=2, num_heads=3, mlp_dim=48,
                              input_shape=(16, 16, 3), classes=7, include_preprocessing=False,
                              classifier_activation=None)
    load_weights(model, str(tmp_path / "vit.safetensors"))
    images = np.random.RandomState(0).randn(2, 3, 16, 16).astype("float32")
    expected = vit_forward(state, torch.from_numpy(images), num_heads=3).numpy()
    assert_parity(model(_nhwc(images)), expected, "ViT logits vs timm reference")


def _bit_stem(depths):
    config = BitConfig(layer_type="bottleneck", global_padding="SAME", embedding_dynamic_padding=True,
                       depths=list(depths), hidden_sizes=[256, 512, 1024, 2048][: len(depths)])
    torch.manual_seed(0)
    bit = BitModel(config).eval()
    with torch.no_grad():
        for name, parameter in bit.named_parameters():
            if "norm" in name:
                parameter.copy_(parameter + 0.3 * torch.randn_like(parameter))
    return bit


def _bit_to_timm(bit):
    renames = (("embedder.convolution.", "stem.conv."), ("embedder.norm.", "stem.norm."),
               ("encoder.stages.", "stages."), (".layers.", ".blocks."))
    state = {}
    for key, value in bit.state_dict().items():
        for old, new in renames:
            key = key.replace(old, new)
        state["patch_embed.backbone." + key] = value
    return state


def test_hybrid_state_dict_matches_bit_stem_plus_reference_vit(tmp_path):
    bit = _bit_stem((1, 1))
    generator = torch.Generator().manual_seed(1)
    state = random_vit_state(dim=32, depth=1, mlp=64, patch=1, grid=4, channels=512, classes=4, generator=generator)
    state.update(_bit_to_timm(bit))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "hybrid.safetensors"))
    model = HybridVisionTransformer(stem_depths=(1, 1), hidden_dim=32, depth=1, num_heads=2, mlp_dim=64,
                                    input_shape=(32, 32, 3), classes=4, include_preprocessing=False,
                                    classifier_activation=None)
    load_weights(model, str(tmp_path / "hybrid.safetensors"))
    images = np.random.RandomState(2).randn(2, 3, 32, 32).astype("float32")
    with torch.no_grad():
        features = bit(torch.from_numpy(images)).last_hidden_state
        expected = vit_forward(state, None, num_heads=2, features=features).numpy()
    assert_parity(model(_nhwc(images)), expected, "hybrid logits vs BitModel + timm reference")


def test_hybrid_stem_pads_like_tensorflow_on_odd_sizes():
    bit = _bit_stem((1,))
    model = HybridVisionTransformer(stem_depths=(1,), hidden_dim=8, depth=1, num_heads=2, mlp_dim=8,
                                    input_shape=(36, 36, 3), include_top=False, pooling=None,
                                    include_preprocessing=False)
    state = {k: v for k, v in _bit_to_timm(bit).items()}
    stem = {k[len("patch_embed.backbone."):]: v.numpy() for k, v in state.items()}
    from keras_vit.convert.weight_map import conv_kernel
    model.get_layer("stem_conv").kernel.assign(conv_kernel(stem["stem.conv.weight"]))
    feature_model = keras.Model(model.input, model.get_layer("stem_stage0_block0").output)
    for layer_name, source in (("stem_norm", "stem.norm"),):
        model.get_layer(layer_name).gamma.assign(stem[source + ".weight"])
        model.get_layer(layer_name).beta.assign(stem[source + ".bias"])
    block = model.get_layer("stem_stage0_block0")
    for i in (1, 2, 3):
        getattr(block, f"conv{i}").kernel.assign(conv_kernel(stem[f"stages.0.blocks.0.conv{i}.weight"]))
        getattr(block, f"norm{i}").gamma.assign(stem[f"stages.0.blocks.0.norm{i}.weight"])
        getattr(block, f"norm{i}").beta.assign(stem[f"stages.0.blocks.0.norm{i}.bias"])
    block.downsample_conv.kernel.assign(conv_kernel(stem["stages.0.blocks.0.downsample.conv.weight"]))
    block.downsample_norm.gamma.assign(stem["stages.0.blocks.0.downsample.norm.weight"])
    block.downsample_norm.beta.assign(stem["stages.0.blocks.0.downsample.norm.bias"])
    images = np.random.RandomState(3).randn(1, 3, 36, 36).astype("float32")
    with torch.no_grad():
        expected = bit(torch.from_numpy(images)).last_hidden_state.numpy()
    assert_parity(feature_model(_nhwc(images)), np.transpose(expected, (0, 2, 3, 1)), "BiT stem stage 0 vs BitModel")


def test_load_timm_checkpoint_by_timm_name_and_resize(tmp_path):
    state = random_vit_state(dim=192, depth=12, mlp=768, patch=16, grid=14, channels=3, classes=10,
                             generator=torch.Generator().manual_seed(3))
    save_file(state, str(tmp_path / "ti.safetensors"))
    model = load_timm_checkpoint("vit_tiny_patch16_224.augreg_in21k_ft_in1k", str(tmp_path / "ti.safetensors"),
                                 include_preprocessing=False)
    assert model.name == "vit_ti16" and model.output_shape == (None, 10)
    images = np.random.RandomState(4).randn(1, 3, 224, 224).astype("float32")
    expected = vit_forward(state, torch.from_numpy(images), num_heads=3).numpy()
    assert_parity(model(_nhwc(images)), expected, "vit_ti16 logits vs timm reference")
    bigger = load_timm_checkpoint("vit_ti16", str(tmp_path / "ti.safetensors"), input_shape=(256, 256, 3))
    assert bigger.get_layer("patch_embedding").position_embedding.shape == (1, 1 + 256, 192)


def test_mismatched_and_unsupported_state_dicts(tmp_path):
    state = random_vit_state(dim=24, depth=2, mlp=48, patch=4, grid=4, channels=3, classes=7,
                             generator=torch.Generator().manual_seed(0))
    state["fc_norm.weight"] = torch.ones(24)
    save_file(state, str(tmp_path / "gap.safetensors"))
    with pytest.raises(ValueError, match="fc_norm"):
        load_timm_checkpoint("vit_ti16", str(tmp_path / "gap.safetensors"))
    del state["fc_norm.weight"]
    save_file(state, str(tmp_path / "small.safetensors"))
    with pytest.raises(ValueError, match="does not match model 'vit_ti16'"):
        load_timm_checkpoint("vit_ti16", str(tmp_path / "small.safetensors"))
    with pytest.raises(ValueError, match="does not exist"):
        load_timm_checkpoint("vit_ti16", str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="Unknown model name 'vit_tiny'"):
        load_timm_checkpoint("vit_tiny", str(tmp_path / "small.safetensors"))
