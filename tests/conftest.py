"""Test settings shared by every backend run (KERAS_BACKEND picks the backend)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# The suite compiles thousands of tiny XLA programs once each (JAX's op-by-op eager calls and
# jit, TF's jit_compile), where compile time dominates: LLVM's optimization passes and XLA:CPU's
# MLIR fusion emitters cost more than they save. Without them a JAX primitive compiles in 22 ms
# instead of 40, eager layer tests run 35-50% faster and the compile-bound JAX tests about a
# third faster (TensorFlow: no change). XLA:CPU uses no fast math either way, and every parity
# test keeps its tolerance. Users' runs are not affected.
# Subprocess tests that set their own XLA_FLAGS start them with FAST_COMPILE_XLA_FLAGS.
FAST_COMPILE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
_given = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [_given] + [flag for flag in FAST_COMPILE_XLA_FLAGS.split() if flag.split("=")[0] not in _given]
).strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


# The suite runs once per backend (scripts/test.sh). Tests of backend-specific code (layers, models,
# parity, converters, training steps, distribution) run in every leg; tests marked `backend_agnostic`
# (CLI plumbing, data pipelines, file formats, the tuning workflow, subprocess fault tests, full-size
# parameter counts) run once, in this leg, the fastest for tiny models.
AGNOSTIC_LEG = "torch"


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == AGNOSTIC_LEG:
        return
    skip = pytest.mark.skip(reason=f"backend-agnostic: runs once, in the {AGNOSTIC_LEG} leg of scripts/test.sh")
    for item in items:
        if "backend_agnostic" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_reset():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    # Without Keras' gc.collect(): in a worker that has run hundreds of tests it took 1-3 s per test
    # (40% of the JAX leg). Python's own collector still frees the tests' reference cycles.
    keras.backend.clear_session(free_memory=False)


def build_shapes_only(name, **kwargs):
    """`keras_vit.create_model(name, **kwargs)` whose variables have shapes but no values, for tests
    of full-size models that count parameters or inspect the layer graph. Inside a StatelessScope
    Keras defers each variable's initialization, which is most of a build's time (igpt_m: 0.7 s
    instead of 9.7 s); clear_session then drops the deferred initializers, so nothing runs them."""
    import keras_vit

    with keras.StatelessScope(initialize_variables=False):
        model = keras_vit.create_model(name, **kwargs)
    keras.backend.clear_session()
    return model


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


# The one tolerance rule for parity with a reference implementation (transformers, the timm
# reference, BitModel, torch, naive NumPy loops): |actual - expected| <= atol + rtol * |expected|
# elementwise, numpy.testing.assert_allclose semantics. Parity tests feed inputs and random
# weights that keep activations of order 1, so float32 rounding stays far below this while a
# mapping bug (a transposed or misplaced weight) differs by ~1e-1. Never loosen it per test
# or per depth: scale the test's inputs/weights instead.
PARITY_RTOL = 1e-4
PARITY_ATOL = 1e-4
PARITY_REPORT_ENV = "KERAS_VIT_PARITY_REPORT"  # "1": print one line per check; a path: append it there


def _as_float64(x):
    if hasattr(x, "detach"):  # a torch tensor, whatever the Keras backend
        x = x.detach().cpu().numpy()
    elif not isinstance(x, (np.ndarray, np.generic, float, int, list, tuple)):
        x = keras.ops.convert_to_numpy(x)
    return np.asarray(x, dtype=np.float64)


def randomize_weights(layer, seed=0):
    """Gives every trainable weight of a built Keras `layer` random values that keep activations of
    order 1 for order-1 inputs, for parity tests: kernels N(0, 1/fan_in) (fan_in: all axes but the
    last), norm scales (`gamma`) 1 + N(0, 0.2^2), other vectors N(0, 0.2^2). The default
    initializers (std 0.02 kernels, zero biases) leave attention nearly uniform and outputs ~1e-3,
    where a mapping bug hides under the parity tolerance."""
    rng = np.random.RandomState(seed)
    for weight in layer.trainable_weights:
        shape = tuple(weight.shape)
        if len(shape) >= 2:
            value = rng.randn(*shape) / np.sqrt(np.prod(shape[:-1]))
        elif weight.path.endswith("gamma"):
            value = 1.0 + 0.2 * rng.randn(*shape)
        else:
            value = 0.2 * rng.randn(*shape)
        weight.assign(value.astype("float32"))


def parity_stats(actual, expected):
    """(max |a - e|, max |a - e| / |e| over e != 0, max |e|) of two same-shape float64 arrays."""
    error = np.abs(actual - expected)
    magnitude = np.abs(expected)
    nonzero = magnitude != 0
    max_abs = float(error.max()) if error.size else 0.0
    max_rel = float((error[nonzero] / magnitude[nonzero]).max()) if nonzero.any() else 0.0
    return max_abs, max_rel, float(magnitude.max()) if magnitude.size else 0.0


def assert_parity(actual, expected, what=""):
    """Asserts a keras-vit output agrees with a reference within PARITY_ATOL and PARITY_RTOL.

    `actual` and `expected` may be NumPy arrays, Keras/backend tensors or torch tensors; both are
    compared in float64. Shapes must be equal (no broadcasting). Non-finite values fail.
    """
    actual, expected = _as_float64(actual), _as_float64(expected)
    label = what or "parity"
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != reference shape {expected.shape}"
    assert np.isfinite(actual).all() and np.isfinite(expected).all(), f"{label}: non-finite values"
    max_abs, max_rel, max_ref = parity_stats(actual, expected)
    worst = float((np.abs(actual - expected) / (PARITY_ATOL + PARITY_RTOL * np.abs(expected))).max()) if actual.size else 0.0
    report = os.environ.get(PARITY_REPORT_ENV)
    if report:
        line = (f"{keras.backend.backend()}\t{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}\t{label}\t"
                f"max|ref|={max_ref:.3g}\trms_ref={float(np.sqrt(np.mean(expected ** 2))):.3g}\tmax_abs={max_abs:.3g}\tmax_rel={max_rel:.3g}\tused={worst:.3g}")
        if report == "1":
            print("PARITY", line)
        else:
            with open(report, "a") as f:
                f.write(line + "\n")
    np.testing.assert_allclose(
        actual, expected, rtol=PARITY_RTOL, atol=PARITY_ATOL, equal_nan=False,
        err_msg=(f"{label}: parity with the reference fails (|a-e| <= {PARITY_ATOL:g} + {PARITY_RTOL:g}*|e|): "
                 f"max abs difference {max_abs:.3g}, max relative difference {max_rel:.3g}, "
                 f"max |reference| {max_ref:.3g}, worst element uses {worst:.3g}x the tolerance"),
    )


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


def prepare_offline(name, data_dir):
    """Generates the TFDS dataset `name` into `data_dir` with sockets refused (nothing may be downloaded)."""
    import socket

    import tensorflow_datasets as tfds

    import keras_vit.data  # noqa: F401  (registers the `shapes` builders)

    def refuse_network(*args, **kwargs):
        raise OSError("Network access is forbidden in tests.")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "socket", refuse_network)
        tfds.builder(name, data_dir=data_dir).download_and_prepare()
    return str(data_dir)


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory):
    """A TFDS data_dir holding `shapes/small` (600 train, 120 test), prepared once per session."""
    return prepare_offline("shapes/small", tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def shapes_detection_data_dir(shapes_data_dir):
    """`shapes_data_dir` with `shapes_detection/small` (240 train, 48 test) added, prepared once per session."""
    return prepare_offline("shapes_detection/small", shapes_data_dir)
