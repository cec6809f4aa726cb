"""Linear probes: per-layer features are the average-pooled block outputs of the shifted sequence,
and the logistic-regression probe separates what is separable and nothing else."""

import re

import keras
import numpy as np
import pytest

from keras_vit.applications.igpt import ImageGPT
from keras_vit.evaluation.probe import fit_linear_probe, linear_probe, probe_features
from tests.conftest import randomize_weights, to_numpy

PALETTE, SIDE, HIDDEN, DEPTH = 8, 4, 16, 2
TOKENS = SIDE * SIDE


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    model = ImageGPT(hidden_dim=HIDDEN, depth=DEPTH, num_heads=2, palette_size=PALETTE, image_size=SIDE)
    randomize_weights(model, seed=0)  # order-1 activations: layers and inputs give clearly different features
    return model


def _tokens(count, seed=0):
    return np.random.RandomState(seed).randint(0, PALETTE, (count, TOKENS)).astype("int32")


def _pooled_block_outputs(model, inputs):
    """The mean over tokens of every block's output, by a sub-model built here."""
    blocks = keras.Model(model.input, [model.get_layer(f"block{index}").output for index in range(DEPTH)])
    return [to_numpy(output).mean(axis=1) for output in blocks(inputs)]


def test_features_are_the_averaged_block_outputs_of_the_shifted_sequence(model):
    tokens = _tokens(5)
    features = probe_features(model, [tokens[:3], tokens[3:]])  # two batches, concatenated in order
    assert sorted(features) == list(range(DEPTH))
    shifted = np.concatenate([np.full((5, 1), PALETTE, "int32"), tokens[:, :-1]], axis=1)  # start id, drop the last pixel
    expected = _pooled_block_outputs(model, shifted)
    for layer in range(DEPTH):
        assert features[layer].shape == (5, HIDDEN) and features[layer].dtype == np.float32
        np.testing.assert_allclose(features[layer], expected[layer], atol=1e-5, err_msg=f"layer {layer}")
    unshifted = _pooled_block_outputs(model, tokens)
    assert np.abs(unshifted[-1] - features[DEPTH - 1]).max() > 1e-2  # feeding the tokens as they are would differ
    assert np.abs(features[0] - features[1]).max() > 1e-2


def test_chosen_layers_count_from_the_end_and_are_read_once(model):
    tokens = _tokens(3, seed=1)
    features = probe_features(model, [tokens], layers=[-1, DEPTH - 1])
    assert list(features) == [DEPTH - 1]
    shifted = np.concatenate([np.full((3, 1), PALETTE, "int32"), tokens[:, :-1]], axis=1)
    np.testing.assert_allclose(features[DEPTH - 1], _pooled_block_outputs(model, shifted)[-1], atol=1e-5)


@pytest.mark.parametrize("layers", [[DEPTH], [-DEPTH - 1], []], ids=["past_the_end", "before_the_start", "empty"])
def test_layers_outside_the_model_are_refused(model, layers):
    message = re.escape(f"layers {layers} must be in 0..{DEPTH - 1} (or -{DEPTH}..-1); the model has {DEPTH} blocks")
    with pytest.raises(ValueError, match=message):
        probe_features(model, [_tokens(1)], layers=layers)


def test_a_model_without_blocks_is_refused():
    inputs = keras.Input((TOKENS,))
    with pytest.raises(ValueError, match=r"needs an iGPT \(layers named block0, block1, \.\.\.\); 'plain' has none"):
        probe_features(keras.Model(inputs, keras.layers.Dense(2)(inputs), name="plain"), [_tokens(1)])


def test_linear_probe_reports_every_layer_and_the_pixel_baseline(model):
    rng = np.random.RandomState(2)
    labels = rng.randint(0, 2, 48)
    tokens = (rng.randint(0, PALETTE // 2, (48, TOKENS)) + PALETTE // 2 * labels[:, None]).astype("int32")  # dark or light images
    train = [(tokens[:16], labels[:16]), (tokens[16:32], labels[16:32])]
    test = [(tokens[32:], labels[32:])]
    palette = np.stack([np.linspace(-1, 1, PALETTE)] * 3, axis=1)
    result = linear_probe(model, train, test, layers=[0], palette=palette)
    assert result["train_examples"] == 32 and result["test_examples"] == 16
    assert list(result["layers"]) == [0] and 0.0 <= result["layers"][0] <= 1.0
    assert result["pixels"] == 1.0


@pytest.mark.backend_agnostic  # NumPy and scikit-learn only
def test_fit_linear_probe_separates_separable_classes():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 3, 300)
    means = 3.0 * np.eye(3, 20)
    features = (means[labels] + 0.3 * rng.randn(300, 20)).astype("float32")
    assert fit_linear_probe(features[:200], labels[:200], features[200:], labels[200:]) == 1.0


@pytest.mark.backend_agnostic
def test_fit_linear_probe_is_near_chance_on_random_labels():
    rng = np.random.RandomState(1)
    features, labels = rng.randn(800, 10).astype("float32"), rng.randint(0, 2, 800)
    accuracy = fit_linear_probe(features[:400], labels[:400], features[400:], labels[400:])
    assert 0.4 < accuracy < 0.6
