"""Test settings shared by every backend run (KERAS_BACKEND picks the backend)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_reset():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def naive_attention(x, wqkv, bqkv, wo, bo, num_heads, bias=None):
    """Explicit-loop multi-head self-attention in NumPy; x is (tokens, channels)."""
    tokens, channels = x.shape
    head_dim = channels // num_heads
    qkv = x @ wqkv + bqkv
    q, k, v = qkv[:, :channels], qkv[:, channels : 2 * channels], qkv[:, 2 * channels :]
    out = np.zeros((tokens, channels))
    for h in range(num_heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        for i in range(tokens):
            logits = np.array([q[i, sl] @ k[j, sl] / np.sqrt(head_dim) for j in range(tokens)])
            if bias is not None:
                logits = logits + bias[h, i]
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            out[i, sl] = sum(weights[j] * v[j, sl] for j in range(tokens))
    return out @ wo + bo


def assert_trains_and_round_trips(model, path, size=32, classes=3):
    """Fits `model` one epoch on 4 random images, saves it to `path` (.keras), loads it
    back and checks both give the same outputs."""
    images = np.random.RandomState(0).rand(4, size, size, 3).astype("float32") * 255
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, np.arange(4) % classes, epochs=1, verbose=0)
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(restored(images)), to_numpy(model(images)), atol=1e-5)


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory):
    """A TFDS data_dir holding `shapes/small` (600 train, 120 test), prepared once per session
    with sockets refused (nothing may be downloaded)."""
    import socket

    import tensorflow_datasets as tfds

    import keras_vit.data  # noqa: F401  (registers the `shapes` builder)

    def refuse_network(*args, **kwargs):
        raise OSError("Network access is forbidden in tests.")

    data_dir = tmp_path_factory.mktemp("tfds")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "socket", refuse_network)
        tfds.builder("shapes/small", data_dir=data_dir).download_and_prepare()
    return str(data_dir)
