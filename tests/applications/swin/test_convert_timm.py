import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from keras_vit.applications import SwinTransformer
from keras_vit.convert import load_timm_checkpoint, load_weights
from tests.conftest import assert_parity
from tests.applications.swin.test_convert_transformers import _save_swin


def _to_timm(reference, merging_in_next_stage):
    """transformers' Swin weights under timm's names (the reference computation stays transformers')."""
    hf = {k: v for k, v in reference.state_dict().items()}
    out = {}
    for key, value in hf.items():
        m = re.match(r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)", key)
        if m:
            stage, block, rest = m.groups()
            prefix = f"layers.{stage}.blocks.{block}."
            rest = (rest.replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
                    .replace("attention.o_proj", "attn.proj").replace("mlp.fc1", "mlp.fc1")
                    .replace("attention.relative_position_bias.relative_position_bias_table",
                             "attn.relative_position_bias_table"))
            if rest.startswith("attention.q_proj"):
                suffix = rest.split(".")[-1]
                parts = [hf[f"swin.encoder.layers.{stage}.blocks.{block}.attention.{p}_proj.{suffix}"] for p in "qkv"]
                out[prefix + "attn.qkv." + suffix] = torch.cat(parts, 0)
                continue
            if rest.startswith(("attention.k_proj", "attention.v_proj")):
                continue
            out[prefix + rest] = value
            continue
        m = re.match(r"swin\.encoder\.layers\.(\d+)\.downsample\.(.*)", key)
        if m:
            stage = int(m.group(1)) + int(merging_in_next_stage)
            out[f"layers.{stage}.downsample.{m.group(2)}"] = value
            continue
        key = (key.replace("swin.embeddings.patch_embeddings.projection", "patch_embed.proj")
               .replace("swin.embeddings.norm", "patch_embed.norm").replace("swin.layernorm", "norm"))
        out[key.replace("classifier", "head.fc" if merging_in_next_stage else "head")] = value
    out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.int64)  # derived buffer
    return {k: v.contiguous() for k, v in out.items()}


@pytest.mark.parametrize("merging_in_next_stage", [True, False])
def test_timm_swin_state_dict_matches_transformers(tmp_path, merging_in_next_stage):
    reference = _save_swin(tmp_path / "hf")
    save_file(_to_timm(reference, merging_in_next_stage), str(tmp_path / "swin.safetensors"))
    _check_loaded_model_matches(reference, str(tmp_path / "swin.safetensors"), version=1)


def _check_loaded_model_matches(reference, path, version):
    """Loads the timm file into the small keras-vit Swin and compares logits with `reference`."""
    model = SwinTransformer(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, patch_size=2,
                            version=version, input_shape=(32, 32, 3), classes=5, include_preprocessing=False,
                            classifier_activation=None)
    load_weights(model, path)
    images = np.random.RandomState(0).randn(2, 3, 32, 32).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).logits.numpy()
    assert_parity(model(np.transpose(images, (0, 2, 3, 1))), expected, f"Swin v{version} logits vs transformers")


def test_timm_name_selects_swin_and_mismatch_is_reported(tmp_path):
    reference = _save_swin(tmp_path / "hf")
    save_file(_to_timm(reference, True), str(tmp_path / "swin.safetensors"))
    with pytest.raises(ValueError, match="does not match model 'swin_t'"):
        load_timm_checkpoint("swin_tiny_patch4_window7_224.ms_in1k", str(tmp_path / "swin.safetensors"))


def _to_timm_v2(reference):
    """transformers' Swinv2 weights under timm's names: fused qkv weight, q_bias/v_bias, cpb_mlp."""
    hf = reference.state_dict()
    out = {}
    for key, value in hf.items():
        m = re.match(r"swinv2\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)", key)
        if m:
            stage, block, rest = m.groups()
            prefix, source = f"layers.{stage}.blocks.{block}.", f"swinv2.encoder.layers.{stage}.blocks.{block}."
            if rest == "attention.self.query.weight":
                out[prefix + "attn.qkv.weight"] = torch.cat([hf[source + f"attention.self.{p}.weight"]
                                                             for p in ("query", "key", "value")], 0)
                out[prefix + "attn.q_bias"] = hf[source + "attention.self.query.bias"]
                out[prefix + "attn.v_bias"] = hf[source + "attention.self.value.bias"]
                continue
            if rest.startswith(("attention.self.query", "attention.self.key", "attention.self.value")):
                continue
            rest = (rest.replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
                    .replace("attention.output.dense", "attn.proj").replace("intermediate.dense", "mlp.fc1")
                    .replace("output.dense", "mlp.fc2").replace("attention.self.continuous_position_bias_mlp", "attn.cpb_mlp")
                    .replace("attention.self.logit_scale", "attn.logit_scale"))
            out[prefix + rest] = value
            continue
        m = re.match(r"swinv2\.encoder\.layers\.(\d+)\.downsample\.(.*)", key)
        if m:
            out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"] = value
            continue
        key = (key.replace("swinv2.embeddings.patch_embeddings.projection", "patch_embed.proj")
               .replace("swinv2.embeddings.norm", "patch_embed.norm").replace("swinv2.layernorm", "norm"))
        out[key.replace("classifier", "head.fc")] = value
    out["layers.0.blocks.0.attn.relative_coords_table"] = torch.zeros(1, 7, 7, 2)  # derived buffers
    out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.int64)
    return {k: v.contiguous() for k, v in out.items()}


def test_timm_swinv2_state_dict_matches_transformers(tmp_path):
    from tests.applications.swin.test_convert_transformers import _save_swinv2

    reference = _save_swinv2(tmp_path / "hf")
    save_file(_to_timm_v2(reference), str(tmp_path / "swinv2.safetensors"))
    _check_loaded_model_matches(reference, str(tmp_path / "swinv2.safetensors"), version=2)
    with pytest.raises(ValueError, match="does not match model 'swinv2_t'"):
        load_timm_checkpoint("swinv2_tiny_window8_256.ms_in1k", str(tmp_path / "swinv2.safetensors"))
