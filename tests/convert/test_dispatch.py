"""convert/ dispatches on the checkpoint's kind to the converter a family registered."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_vit
from keras_vit.convert import load_transformers_checkpoint, load_weights, supported_checkpoints


def _tiny_resnet(**kwargs):
    return keras_vit.applications.ResNet(depths=(1,), widths=(4,), filters=(8,), input_shape=(16, 16, 3), **kwargs)


def _transformers_dir(path, model_type):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    save_file({"embedder.weight": np.zeros((2, 2), "float32")}, str(path / "model.safetensors"))
    return str(path)


def test_supported_checkpoints_are_registered_by_the_families():
    assert supported_checkpoints() == {"transformers": ["detr", "imagegpt", "owlv2", "owlvit", "swin", "swinv2", "vit"], "timm": ["detr", "mvit", "swin", "vit"]}


def test_an_unsupported_model_type_names_itself_and_the_supported_ones(tmp_path):
    directory = _transformers_dir(tmp_path / "resnet", "resnet")
    expected = "holds a 'resnet' model: keras-vit has no converter for transformers model_type 'resnet'. Supported model types: detr, imagegpt, owlv2, owlvit, swin, swinv2, vit"
    with pytest.raises(ValueError, match=expected):
        _tiny_resnet(weights=directory)
    with pytest.raises(ValueError, match=expected):
        load_transformers_checkpoint(directory)


def test_a_checkpoint_of_another_family_is_refused_by_name(tmp_path):
    directory = _transformers_dir(tmp_path / "vit", "vit")
    with pytest.raises(ValueError, match="holds a 'vit' model \\(vit family\\); it cannot fill 'resnet', a resnet model"):
        _tiny_resnet(weights=directory)


def test_timm_files_dispatch_on_the_family(tmp_path):
    path = str(tmp_path / "resnet.safetensors")
    save_file({"conv1.weight": np.zeros((2, 2), "float32")}, path)
    with pytest.raises(ValueError, match="no timm converter for the 'resnet' family; timm checkpoints load into the detr, mvit, swin, vit families"):
        _tiny_resnet(weights=path)
    model = _tiny_resnet()
    with pytest.raises(ValueError, match="none recognizes its tensor names"):
        load_weights(model, path)  # no family given: the tensors must say which


def _with_config(path, text):
    directory = _transformers_dir(path, "vit")
    (path / "config.json").write_text(text)
    return directory


@pytest.mark.backend_agnostic  # reading config.json is plain Python
@pytest.mark.parametrize(
    "text, message",
    [
        ('{"model_type": "vit",', r"config.json' is not valid JSON \(.*\)\. Re-save the checkpoint"),
        ("", r"config.json' is not valid JSON"),
        ('["vit"]', r"config.json' holds a JSON list, not the object of a transformers config"),
        ('{"hidden_size": 8}', r"config.json' has no 'model_type' string"),
        ('{"model_type": "vit", "hidden_size": 8, "num_attention_heads": null}',
         r"config.json' lacks 'num_hidden_layers', 'num_attention_heads', 'intermediate_size', which a 'vit' config needs"),
        ('{"model_type": "swinv2", "embed_dim": 8}', r"config.json' lacks 'depths', 'num_heads', which a 'swinv2' config needs"),
    ],
)
def test_a_broken_config_json_names_the_file_and_the_problem(tmp_path, text, message):
    directory = _with_config(tmp_path / "checkpoint", text)
    with pytest.raises(ValueError, match=message):
        load_transformers_checkpoint(directory)
