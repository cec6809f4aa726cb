"""iGPT: the published parameter counts (transformers' layout with biases, the original's without), and
arguments or checkpoints the builder and its converter refuse with a message that says what to do."""

import json

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_vit
from keras_vit.applications.igpt import ImageGPT
from keras_vit.convert import load_transformers_checkpoint, load_weights
from tests.conftest import build_shapes_only, to_numpy

# shared/REFERENCE.md: transformers' ImageGPT (with biases) and the original (no biases).
PARAMS = {
    ("igpt_s", True): 76_682_240,
    ("igpt_m", True): 455_489_536,
    ("igpt_l", True): 1_362_914_304,
    ("igpt_s", False): 76_571_648,
    ("igpt_m", False): 455_157_760,
    ("igpt_l", False): 1_362_250_752,
}

TINY = dict(hidden_dim=32, depth=2, num_heads=4, palette_size=16, image_size=8)


@pytest.mark.backend_agnostic  # a parameter count is the same on every backend
@pytest.mark.slow  # full-size builds (shapes only, no weight values: igpt_l would be 5.5 GB)
@pytest.mark.parametrize("name, use_bias", sorted(PARAMS))
def test_parameter_counts_match_reference(name, use_bias):
    assert build_shapes_only(name, use_bias=use_bias).count_params() == PARAMS[(name, use_bias)]
    if use_bias:
        assert keras_vit.model_info(name).params == PARAMS[(name, True)]


def test_image_size_whose_tokens_exceed_the_positions_is_refused():
    with pytest.raises(ValueError, match=r"image_size 9 makes 81 tokens, more than the model's 64 positions\. "
                                         r"Use image_size <= 8, or build with max_positions=81"):
        ImageGPT(**{**TINY, "image_size": 9}, max_positions=64)


def test_unknown_objective_and_kernel_are_refused():
    with pytest.raises(ValueError, match=r"objective must be one of \('causal', 'masked'\), got 'diffusion'"):
        ImageGPT(**TINY, objective="diffusion")
    with pytest.raises(ValueError, match=r"attention_implementation must be one of .*, got 'flash'"):
        ImageGPT(**TINY, attention_implementation="flash")


def test_a_checkpoint_of_another_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 32}))
    save_file({"vit.embeddings.cls_token": np.zeros((1, 1, 32), "float32")}, str(tmp_path / "model.safetensors"))
    message = r"holds a 'vit' model \(vit family\); it cannot fill 'igpt', a igpt model"
    with pytest.raises(ValueError, match=message):
        ImageGPT(**TINY, weights=str(tmp_path))
    with pytest.raises(ValueError, match=message):
        load_weights(ImageGPT(**TINY), str(tmp_path), family="igpt")


def _as_transformers(model, directory):
    """Writes `model` as transformers' ImageGPTForCausalImageModeling saves itself: config.json and
    `transformer.*` tensors, Conv1D weights `(in, out)` as our kernels, the nn.Linear lm_head `(out, in)`."""
    weights = {variable.path: to_numpy(variable) for variable in model.weights}
    tensors = {
        "transformer.wte.weight": weights["embedding/token_embedding"],
        "transformer.wpe.weight": weights["embedding/position_embedding"],
        "transformer.ln_f.weight": weights["norm/scale"],
        "lm_head.weight": weights["lm_head/kernel"].T.copy(),
    }
    for index in range(TINY["depth"]):
        block, source = f"block{index}/", f"transformer.h.{index}."
        tensors[source + "ln_1.weight"] = weights[block + "norm1/scale"]
        tensors[source + "ln_2.weight"] = weights[block + "norm2/scale"]
        for ours, theirs in (("attention/qkv", "attn.c_attn"), ("attention/projection", "attn.c_proj"),
                             ("mlp/fc1", "mlp.c_fc"), ("mlp/fc2", "mlp.c_proj")):
            tensors[f"{source}{theirs}.weight"] = weights[f"{block}{ours}/kernel"]
            tensors[f"{source}{theirs}.bias"] = weights[f"{block}{ours}/bias"]
    config = dict(model_type="imagegpt", n_embd=TINY["hidden_dim"], n_layer=TINY["depth"], n_head=TINY["num_heads"],
                  n_positions=TINY["image_size"] ** 2, vocab_size=TINY["palette_size"] + 1, n_inner=None,
                  activation_function="quick_gelu", layer_norm_epsilon=1e-5)
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(directory / "model.safetensors"))
    return tensors


def test_converter_round_trip_and_a_mis_shaped_tensor(tmp_path):
    """Our model written in transformers' layout loads back exactly (no transformers needed); a tensor
    saved in nn.Linear's `(out, in)` layout instead of Conv1D's `(in, out)` is named with both shapes."""
    model = ImageGPT(**TINY)
    tensors = _as_transformers(model, tmp_path / "good")
    loaded = load_transformers_checkpoint(str(tmp_path / "good"))
    for ours, theirs in zip(model.weights, loaded.weights):
        assert ours.path == theirs.path
        np.testing.assert_array_equal(to_numpy(theirs), to_numpy(ours))

    tensors["transformer.h.1.mlp.c_fc.weight"] = tensors["transformer.h.1.mlp.c_fc.weight"].T.copy()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text((tmp_path / "good" / "config.json").read_text())
    save_file(tensors, str(tmp_path / "bad" / "model.safetensors"))
    message = r"does not match model 'igpt':\n  - block1/mlp/fc1/kernel: checkpoint shape \(128, 32\) != model shape \(32, 128\)"
    with pytest.raises(ValueError, match=message):
        load_weights(ImageGPT(**TINY), str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"block1/mlp/fc1/kernel: checkpoint shape \(128, 32\)"):
        load_transformers_checkpoint(str(tmp_path / "bad"))


def test_remat_trains_exactly_like_keeping_the_activations():
    """`remat=True` recomputes each block in the backward pass: same losses and weights, less memory
    (benchmarks/igpt_memory.py measures it)."""
    tokens = np.random.RandomState(0).randint(0, 9, (2, 16))
    targets = np.random.RandomState(1).randint(0, 8, (2, 16))
    runs = []
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        model = keras_vit.create_model(
            "igpt_pico", image_size=4, palette_size=8, depth=2, remat=remat,
            attention_implementation="blockwise", block_size=8,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        losses = [float(model.train_on_batch(tokens, targets)) for _ in range(2)]
        runs.append((losses, np.asarray(model.predict_on_batch(tokens))))
    assert runs[1][0][0] == pytest.approx(runs[0][0][0], abs=1e-6) and runs[1][0][1] == pytest.approx(runs[0][0][1], abs=1e-5)
    np.testing.assert_allclose(runs[1][1], runs[0][1], atol=1e-5)
    assert runs[0][0][1] < runs[0][0][0]
