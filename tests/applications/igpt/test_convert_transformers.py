"""transformers ImageGPT checkpoints (`model_type="imagegpt"`) load into keras-vit's iGPT: the causal LM,
the classifier and the bare model give transformers' outputs with the dense, fused and block-wise attention
kernels; the palette of the image processor comes along; mismatches are reported all at once."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import (
    ImageGPTConfig,
    ImageGPTForCausalImageModeling,
    ImageGPTForImageClassification,
    ImageGPTImageProcessor,
    ImageGPTModel,
)

from keras_vit.applications.igpt import ImageGPT
from keras_vit.applications.igpt.convert import read_palette
from keras_vit.convert import load_transformers_checkpoint, load_weights, supported_checkpoints
from tests.conftest import assert_parity, parity_stats, to_numpy

COLORS, SIDE, CLASSES = 16, 8, 3
CONFIG = dict(n_embd=32, n_layer=2, n_head=4, n_positions=SIDE * SIDE, vocab_size=COLORS + 1, num_labels=CLASSES)
TINY = dict(hidden_dim=32, depth=2, num_heads=4, palette_size=COLORS, image_size=SIDE)
# Default ("auto": dense on TensorFlow/JAX at 64 tokens, torch's fused kernel on torch), explicit dense, and
# the block-wise kernel over 4 x 4 blocks of 16 tokens.
KERNELS = {
    "auto": {},
    "blockwise": {"attention_implementation": "blockwise", "block_size": 16},
}
MAX_ABS = 1e-4


def _randomize(model, seed=0):
    """Random values everywhere (transformers' std-0.02 init leaves attention near uniform), of a scale
    that keeps activations of order 1: Conv1D weights `(in, out)` and Linear heads `(out, in)`
    N(0, 1/fan_in), embeddings N(0, 0.5^2), norm scales 1 + N(0, 0.2^2), biases N(0, 0.2^2)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
            elif parameter.dim() == 1:
                parameter.normal_(0, 0.2)
            elif name.endswith(("wte.weight", "wpe.weight")):
                parameter.normal_(0, 0.5)
            elif name.endswith(("lm_head.weight", "score.weight")):
                parameter.normal_(0, parameter.shape[1] ** -0.5)
            else:
                parameter.normal_(0, parameter.shape[0] ** -0.5)
    return model


def _save(path, model_class, **overrides):
    model = _randomize(model_class(ImageGPTConfig(**{**CONFIG, **overrides})).eval())
    model.save_pretrained(path)
    return model


def _tokens(batch=2, seed=0, start=True):
    tokens = np.random.RandomState(seed).randint(0, COLORS, (batch, SIDE * SIDE)).astype("int32")
    if start:
        tokens[:, 0] = COLORS  # the start-of-sequence id
    return tokens


def _reference(model, tokens):
    with torch.no_grad():
        output = model(torch.from_numpy(tokens.astype("int64")))
    return (output.logits if hasattr(output, "logits") else output.last_hidden_state).numpy()


def _assert_close(actual, expected, what):
    assert_parity(actual, expected, what)
    max_abs = parity_stats(np.asarray(to_numpy(actual), "float64"), np.asarray(expected, "float64"))[0]
    assert max_abs <= MAX_ABS, f"{what}: max abs difference {max_abs:.3g} > {MAX_ABS:g}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The three transformers models, random weights, each saved with save_pretrained; the bare model
    beside an ImageGPTImageProcessor whose clusters are the palette."""
    root = tmp_path_factory.mktemp("imagegpt")
    palette = np.random.RandomState(7).uniform(-1, 1, (COLORS, 3)).astype("float32")
    saved = {
        "lm": _save(root / "lm", ImageGPTForCausalImageModeling),
        "classifier": _save(root / "classifier", ImageGPTForImageClassification),
        "bare": _save(root / "bare", ImageGPTModel),
    }
    ImageGPTImageProcessor(clusters=palette, size={"height": SIDE, "width": SIDE}).save_pretrained(root / "bare")
    return {name: (str(root / name), model) for name, model in saved.items()}, palette


def test_imagegpt_is_a_supported_model_type():
    assert "imagegpt" in supported_checkpoints()["transformers"]


# "dense" equals the other kernels in tests/layers/test_causal_attention.py; here the checkpoint's two paths.
@pytest.mark.parametrize("kernel", ["auto", "blockwise"])
def test_causal_lm_logits_match_transformers(checkpoints, kernel):
    path, reference = checkpoints[0]["lm"]
    model = load_transformers_checkpoint(path, **KERNELS[kernel])
    assert [layer.name for layer in model.layers][-1] == "lm_head"
    tokens = _tokens()
    logits = model(tokens)
    assert tuple(logits.shape) == (2, SIDE * SIDE, COLORS)
    _assert_close(logits, _reference(reference, tokens), f"ImageGPTForCausalImageModeling logits ({kernel})")
    assert not hasattr(model, "palette")  # no image processor saved beside it


@pytest.mark.parametrize("kernel", ["auto"])
def test_classifier_logits_match_transformers(checkpoints, kernel):
    path, reference = checkpoints[0]["classifier"]
    model = load_transformers_checkpoint(path, **KERNELS[kernel])
    assert model.get_layer("head").units == CLASSES and not model.get_layer("head").use_bias
    tokens = _tokens(batch=3, seed=1, start=False)
    _assert_close(model(tokens), _reference(reference, tokens), f"ImageGPTForImageClassification logits ({kernel})")


@pytest.mark.parametrize("kernel", ["blockwise"])
def test_bare_model_with_image_processor_brings_its_palette(checkpoints, kernel):
    (saved, palette) = checkpoints
    path, reference = saved["bare"]
    read = read_palette(path)
    assert read.dtype == np.float32 and read.shape == (COLORS, 3)
    np.testing.assert_array_equal(read, palette)  # float32 -> JSON -> float32 is exact
    model = load_transformers_checkpoint(path, **KERNELS[kernel])
    np.testing.assert_array_equal(model.palette, palette)
    tokens = _tokens(seed=2)
    features = model(tokens)
    assert tuple(features.shape) == (2, SIDE * SIDE, CONFIG["n_embd"])  # include_top=False: no head
    _assert_close(features, _reference(reference, tokens), f"ImageGPTModel last_hidden_state ({kernel})")
    assert read_palette(saved["lm"][0]) is None


def test_load_weights_and_weights_argument_dispatch_to_the_converter(checkpoints):
    saved, palette = checkpoints
    path, reference = saved["lm"]
    tokens = _tokens(seed=3)
    expected = _reference(reference, tokens)
    built = ImageGPT(**TINY, weights=path)  # common.load_weights -> convert.load_weights(family="igpt")
    _assert_close(built(tokens), expected, "ImageGPT(weights=...) logits")
    for family in ("igpt", None):
        model = ImageGPT(**TINY, attention_implementation="blockwise", block_size=16)
        load_weights(model, path, family=family)
        _assert_close(model(tokens), expected, f"load_weights(family={family!r}) logits")
    # The LM checkpoint into a headless model: its lm_head is skipped; the palette comes with the bare one.
    headless = ImageGPT(**TINY, include_top=False)
    load_weights(headless, saved["bare"][0])
    np.testing.assert_array_equal(headless.palette, palette)
    load_weights(headless, path)
    with torch.no_grad():
        hidden = reference.transformer(torch.from_numpy(tokens.astype("int64"))).last_hidden_state.numpy()
    _assert_close(headless(tokens), hidden, "headless load_weights features")


def test_shorter_images_read_the_first_positions(checkpoints):
    path, reference = checkpoints[0]["lm"]
    side = 4
    tokens = _tokens(seed=4)[:, : side * side]
    model = load_transformers_checkpoint(path, image_size=side)
    _assert_close(model(tokens), _reference(reference, tokens), "4x4 ImageGPT logits")
    small = ImageGPT(**{**TINY, "image_size": side})  # a 16-row position table
    with pytest.raises(ValueError, match=r"the checkpoint has 64 positions, the model 16: build it with max_positions=64"):
        load_weights(small, path)


@pytest.mark.parametrize(
    "overrides",
    [
        {"scale_attn_by_inverse_layer_idx": True},
        {"scale_attn_weights": False},
        {"reorder_and_upcast_attn": True, "layer_norm_epsilon": 1e-6},
        {"n_inner": 64, "n_positions": 60},  # mlp_ratio 2; 60 positions: a 7x7 image, 60-row table
    ],
    ids=["inverse_layer_scale", "unscaled_attention", "upcast_eps", "inner_and_non_square"],
)
def test_config_options_match_transformers(tmp_path, overrides):
    reference = _save(tmp_path, ImageGPTForCausalImageModeling, **overrides)
    model = load_transformers_checkpoint(str(tmp_path))
    tokens = _tokens(seed=5)[:, : model.input_shape[1]]
    _assert_close(model(tokens), _reference(reference, tokens), f"ImageGPT logits with {overrides}")
    if "n_positions" in overrides:
        assert model.input_shape == (None, 49) and model.get_layer("embedding").max_positions == 60
    if "layer_norm_epsilon" in overrides:
        # a model built with another epsilon is refused, not silently off
        with pytest.raises(ValueError, match=r"block0/norm1 has epsilon 1e-05, the checkpoint's config layer_norm_epsilon=1e-06"):
            load_weights(ImageGPT(**TINY), str(tmp_path))


def _edit_config(source, target, **changes):
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return str(target)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"activation_function": "gelu_new"}, r"activation_function='gelu_new' is not supported; keras-vit's iGPT uses 'quick_gelu'"),
        ({"n_inner": 48}, r"n_inner=48 is not a multiple of n_embd=32"),
        ({"add_cross_attention": True}, r"add_cross_attention=True is not supported"),
        ({"n_head": None}, r"lacks 'n_head', which a 'imagegpt' config needs"),
    ],
)
def test_unsupported_configs_are_refused(checkpoints, tmp_path, changes, message):
    directory = _edit_config(checkpoints[0]["lm"][0], tmp_path / "edited", **changes)
    with pytest.raises(ValueError, match=message):
        load_transformers_checkpoint(directory)
    if "n_head" not in changes:  # a model built first is checked against config.json too
        with pytest.raises(ValueError, match=message):
            load_weights(ImageGPT(**TINY), directory)


def test_include_preprocessing_is_refused(checkpoints):
    with pytest.raises(ValueError, match="iGPT reads palette indices, not pixels"):
        load_transformers_checkpoint(checkpoints[0]["lm"][0], include_preprocessing=True)


def test_mismatched_tensors_are_all_reported_and_nothing_is_assigned(checkpoints, tmp_path):
    source = checkpoints[0]["lm"][0]
    shutil.copytree(source, tmp_path / "broken")
    tensors = load_file(str(tmp_path / "broken" / "model.safetensors"))
    tensors["transformer.h.0.mlp.c_fc.weight"] = tensors["transformer.h.0.mlp.c_fc.weight"][:, :100].copy()
    del tensors["transformer.h.1.ln_2.weight"]
    tensors["transformer.h.1.attn.extra.weight"] = np.zeros((2, 2), "float32")
    save_file(tensors, str(tmp_path / "broken" / "model.safetensors"))
    with pytest.raises(ValueError) as error:
        load_transformers_checkpoint(str(tmp_path / "broken"))
    message = str(error.value)
    for expected in (
        "block0/mlp/fc1/kernel: checkpoint shape (32, 100) != model shape (32, 128)",
        "tensors this model needs that the checkpoint lacks: transformer.h.1.ln_2.weight",
        "checkpoint tensors this model does not use: transformer.h.1.attn.extra.weight",
    ):
        assert expected in message, message

    model = ImageGPT(**TINY)
    before = [to_numpy(weight) for weight in model.weights]
    deeper = ImageGPT(**{**TINY, "depth": 3})
    with pytest.raises(ValueError, match=r"lacks: transformer\.h\.2\.ln_1\.weight, transformer\.h\.2\.ln_2\.weight"):
        load_weights(deeper, source)
    with pytest.raises(ValueError, match=r"block0/mlp/fc1/kernel: checkpoint shape \(32, 100\)"):
        load_weights(model, str(tmp_path / "broken"))
    assert all(np.array_equal(a, to_numpy(b)) for a, b in zip(before, model.weights))  # nothing half-assigned
    with pytest.raises(ValueError, match=r"block0 has 8 attention heads, the checkpoint's config n_head=4"):
        load_weights(ImageGPT(**{**TINY, "num_heads": 8}), source)


def test_a_bad_palette_is_reported(checkpoints, tmp_path):
    source = checkpoints[0]["bare"][0]

    def with_clusters(name, clusters):
        target = tmp_path / name
        shutil.copytree(source, target)
        processor = json.loads((target / "preprocessor_config.json").read_text())
        processor["clusters"] = clusters
        (target / "preprocessor_config.json").write_text(json.dumps(processor))
        return str(target)

    wrong_shape = with_clusters("wrong_shape", [[0.0, 0.5]] * COLORS)
    with pytest.raises(ValueError, match=r"'clusters' has shape \(16, 2\); expected \(colors, 3\)"):
        read_palette(wrong_shape)
    with pytest.raises(ValueError, match=r"'clusters' has shape \(16, 2\)"):
        load_transformers_checkpoint(wrong_shape)
    with pytest.raises(ValueError, match=r"values outside \[-1, 1\]"):
        read_palette(with_clusters("pixels", [[0.0, 128.0, 255.0]] * COLORS))
    with pytest.raises(ValueError, match=r"has 8 colors, the model's palette 16 \(vocab_size - 1\)"):
        load_transformers_checkpoint(with_clusters("short", [[0.0, 0.5, -0.5]] * 8))
    with pytest.raises(ValueError, match="is not a directory"):
        read_palette(tmp_path / "missing")
