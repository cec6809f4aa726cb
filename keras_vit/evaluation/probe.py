"""Linear probes (iGPT, Figure 3): how linearly separable are the classes in the average-pooled
features of each layer of a generatively trained model?

`probe_features` reads every chosen block's output in one pass; `linear_probe` standardizes
the features with the training split's statistics and fits scikit-learn's multinomial
`LogisticRegression` (L-BFGS: exact convex optimum, no learning rate to tune, seconds for a
few thousand 512-wide features), and reports test accuracy per layer and for raw pixels.
"""

import keras
import numpy as np
from keras import ops


def probe_features(model, token_batches, layers=None):
    """Average-pooled block outputs of an iGPT for each batch of images.

    Args:
        model: an `ImageGPT` (any head; the blocks are read directly).
        token_batches: an iterable of int `(batch, T)` palette indices (the images, not yet
            shifted: the start id is prepended and the last pixel dropped, as in training).
        layers: block indices to read (default all; negative counts from the end).

    Returns `{layer: float32 (examples, hidden_dim)}`.
    """
    blocks = [layer for layer in model.layers if layer.name.startswith("block")]
    if not blocks:
        raise ValueError(f"probe_features needs an iGPT (layers named block0, block1, ...); {model.name!r} has none.")
    count = len(blocks)
    layers = list(range(count)) if layers is None else [int(layer) for layer in layers]
    if not layers or any(not -count <= layer < count for layer in layers):
        raise ValueError(f"probe_features: layers {layers} must be in 0..{count - 1} (or -{count}..-1); the model has {count} blocks.")
    layers = sorted({layer % count for layer in layers})
    start_id = model.get_layer("embedding").vocabulary_size - 1
    outputs = [ops.mean(blocks[layer].output, axis=1) for layer in layers]
    extractor = keras.Model(model.input, outputs, name=f"{model.name}_probe_features")
    collected = {layer: [] for layer in layers}
    for tokens in token_batches:
        tokens = np.asarray(tokens, "int32")
        shifted = np.concatenate([np.full((len(tokens), 1), start_id, "int32"), tokens[:, :-1]], axis=1)
        features = extractor.predict_on_batch(shifted)
        for layer, values in zip(layers, features if isinstance(features, (list, tuple)) else [features]):
            collected[layer].append(np.asarray(values, "float32"))
    return {layer: np.concatenate(values) for layer, values in collected.items()}


def fit_linear_probe(train_features, train_labels, test_features, test_labels, max_iter=1000, regularization=1.0):
    """Test accuracy of a multinomial logistic regression on standardized features."""
    from sklearn.linear_model import LogisticRegression

    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    classifier = LogisticRegression(C=regularization, max_iter=max_iter)
    classifier.fit((train_features - mean) / std, train_labels)
    return float(classifier.score((test_features - mean) / std, test_labels))


def linear_probe(model, train, test, layers=None, palette=None, max_iter=1000):
    """Linear-probe accuracy per layer, and on raw pixels for comparison.

    Args:
        model: an `ImageGPT`.
        train, test: iterables of `(tokens (batch, T), labels (batch,))`.
        layers: block indices (default all).
        palette: `(K, 3)` colors; with it the raw-pixel baseline probes the dequantized
            RGB values, without it the one-hot-free palette indices.

    Returns `{"layers": {layer: accuracy}, "pixels": accuracy, "train_examples": n,
    "test_examples": m}`.
    """
    (train_tokens, train_labels), (test_tokens, test_labels) = _collect(train), _collect(test)
    batches = lambda tokens: (tokens[i : i + 64] for i in range(0, len(tokens), 64))
    train_features = probe_features(model, batches(train_tokens), layers)
    test_features = probe_features(model, batches(test_tokens), layers)
    accuracies = {
        layer: fit_linear_probe(train_features[layer], train_labels, test_features[layer], test_labels, max_iter)
        for layer in train_features
    }
    pixels = lambda tokens: (np.asarray(palette)[tokens].reshape(len(tokens), -1) if palette is not None else tokens).astype("float32")
    baseline = fit_linear_probe(pixels(train_tokens), train_labels, pixels(test_tokens), test_labels, max_iter)
    return {"layers": accuracies, "pixels": baseline, "train_examples": len(train_labels), "test_examples": len(test_labels)}


def _collect(batches):
    tokens, labels = zip(*((np.asarray(x), np.asarray(y)) for x, y in batches))
    return np.concatenate(tokens).astype("int32"), np.concatenate(labels).astype("int64")
