"""keras_vit.training.distribute: strategies and keras.distribution trained for real in fresh
processes (devices and TF_CONFIG must be set before TensorFlow/JAX start), plus the errors."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import FAST_COMPILE_XLA_FLAGS

from keras_vit.training import distribute

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("_distributed_fit.py")
BACKEND = keras.backend.backend()
tf_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="tf.distribute runs on the TensorFlow backend; scripts/test.sh's TensorFlow leg runs it"
)
jax_only = pytest.mark.skipif(
    BACKEND != "jax", reason="keras.distribution runs on the JAX backend here; scripts/test.sh's JAX leg runs it"
)


def _env(backend, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "XLA_FLAGS", *distribute.TPU_ENV_VARIABLES)}
    env.update(
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


def _fit(mode, out_dir, backend, timeout=90, **env):
    """Runs _distributed_fit.py MODE in a fresh process; returns nothing, fails with its stderr."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(out_dir)], env=_env(backend, **env), cwd=ROOT,
        capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, f"{mode} failed:\n{result.stderr[-4000:]}"


def _weights(run):
    return [run[f"weight_{i}"] for i in range(len([k for k in run.files if k.startswith("weight_")]))]


def _initial(run):
    return [run[f"initial_{i}"] for i in range(len([k for k in run.files if k.startswith("initial_")]))]


def _assert_same_weights(a, b, rtol=1e-4, atol=1e-6):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def tf_single_and_mirrored(tmp_path_factory):
    """The default strategy and MirroredStrategy over 2 logical CPUs, from the same weights."""
    out = tmp_path_factory.mktemp("tf_mirrored")
    _fit("tf-mirrored", out, "tensorflow")
    return np.load(out / "cpu.npz"), np.load(out / "mirrored.npz")


# --- engines, in fresh processes ------------------------------------------------------------


@pytest.mark.slow
@tf_only
def test_mirrored_over_two_logical_cpus_matches_one_device(tf_single_and_mirrored):
    single, mirrored = tf_single_and_mirrored
    assert int(single["replicas"]) == 1 and int(mirrored["replicas"]) == 2
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=1e-4)
    _assert_same_weights(_weights(mirrored), _weights(single))
    assert any(not np.allclose(w, w0) for w, w0 in zip(_weights(single), _initial(single)))  # it trained


@pytest.mark.slow
@tf_only
def test_multi_worker_mirrored_two_processes_agree(tmp_path, tf_single_and_mirrored):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "tf-multiworker", str(tmp_path)], cwd=ROOT,
            env=_env("tensorflow", TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    try:
        errors = [worker.communicate(timeout=120)[1] for worker in workers]
    finally:
        for worker in workers:  # a worker left waiting for its peer would hang forever
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for i, worker in enumerate(workers):
        assert worker.returncode == 0, f"worker {i} failed:\n{errors[i][-4000:]}"
    first, second = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert int(first["replicas"]) == int(second["replicas"]) == 2
    np.testing.assert_array_equal(first["loss"], second["loss"])
    _assert_same_weights(_weights(first), _weights(second), rtol=0, atol=0)
    assert any(not np.allclose(w, w0) for w, w0 in zip(_weights(first), _initial(first)))  # it trained
    # The same global batch split over two workers trains like one device (same initial weights).
    single, _ = tf_single_and_mirrored
    _assert_same_weights(_initial(first), _initial(single), rtol=0, atol=0)
    np.testing.assert_allclose(first["loss"], single["loss"], rtol=1e-4)
    _assert_same_weights(_weights(first), _weights(single))


@pytest.fixture(scope="module")
def jax_one_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax_single")
    _fit("jax-data", out, "jax", XLA_FLAGS=f"{FAST_COMPILE_XLA_FLAGS} --xla_force_host_platform_device_count=1")
    return np.load(out / "jax-data-1.npz")


@pytest.mark.slow
@jax_only
def test_jax_data_parallel_over_two_host_devices_matches_one_device(tmp_path, jax_one_device):
    _fit("jax-data", tmp_path, "jax", XLA_FLAGS=f"{FAST_COMPILE_XLA_FLAGS} --xla_force_host_platform_device_count=2")
    parallel = np.load(tmp_path / "jax-data-2.npz")
    assert int(jax_one_device["replicas"]) == 1 and int(parallel["replicas"]) == 2
    np.testing.assert_allclose(parallel["loss"], jax_one_device["loss"], rtol=1e-4)
    _assert_same_weights(_weights(parallel), _weights(jax_one_device))
    assert any(not np.allclose(w, w0) for w, w0 in zip(_weights(parallel), _initial(parallel)))


@pytest.mark.slow
@jax_only
def test_jax_model_parallel_shards_qkv_and_matches_one_device(tmp_path, jax_one_device):
    _fit("jax-model", tmp_path, "jax", XLA_FLAGS=f"{FAST_COMPILE_XLA_FLAGS} --xla_force_host_platform_device_count=2")
    sharded = np.load(tmp_path / "jax-model-2.npz")
    assert str(sharded["qkv_spec"]) == "(None, 'model')"  # column-split over the 2 devices
    assert str(sharded["slot_spec"]) == "(None, 'model')"  # its optimizer slots follow it
    assert int(sharded["replicas"]) == 1  # mesh (batch, model) = (1, 2)
    np.testing.assert_allclose(sharded["loss"], jax_one_device["loss"], rtol=1e-4)
    _assert_same_weights(_weights(sharded), _weights(jax_one_device))


# --- errors and helpers, in process, every backend ------------------------------------------


def test_tf_config_must_be_json(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: worker}")
    with pytest.raises(ValueError, match=r"not valid JSON.*\{cluster: worker\}"):
        distribute.read_tf_config()


@pytest.mark.parametrize(
    "config, message",
    [
        ({"task": {"type": "worker", "index": 0}}, "no 'cluster'"),
        ({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}, "no 'cluster'"),
        ({"cluster": {"worker": ["127.0.0.1:1"]}}, "needs 'task'"),
        ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker"}}, "needs 'task'"),
        ({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 2}}, r"index 2 is out of range.*0\.\.1"),
        ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}, "'chief' is not in its cluster"),
    ],
)
def test_tf_config_needs_workers_and_a_task(monkeypatch, config, message):
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with pytest.raises(ValueError, match=message):
        distribute.read_tf_config()


def test_tf_config_unset(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.read_tf_config(required=False) is None
    with pytest.raises(ValueError, match="TF_CONFIG, which is not set"):
        distribute.read_tf_config()


@tf_only
def test_multiworker_checks_tf_config_before_starting(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.get_strategy("multiworker")


def test_unknown_strategy_kind():
    with pytest.raises(ValueError, match=r"Unknown kind 'tpu-v4'.*'auto', 'tpu', 'gpu', 'multiworker', 'mirrored', 'cpu'"):
        distribute.get_strategy("tpu-v4")


@tf_only
def test_explicit_tpu_without_one_raises_instead_of_using_the_cpu(monkeypatch):
    for name in distribute.TPU_ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"No TPU was found at 'local'.*--tpu-address.*'auto'"):
        distribute.get_strategy("tpu")


@tf_only
def test_auto_and_cpu_give_the_default_strategy_on_one_cpu(monkeypatch):
    import tensorflow as tf

    for name in ("TF_CONFIG", *distribute.TPU_ENV_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        pytest.skip("checks the CPU-only choice")
    assert distribute.get_strategy("cpu") is tf.distribute.get_strategy()
    assert distribute.get_strategy("auto") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="found no GPU"):
        distribute.get_strategy("gpu")
    assert distribute.compile_options(distribute.get_strategy("auto")) == {"steps_per_execution": 1, "jit_compile": "auto"}


def test_wrong_backend_names_the_backend_and_the_alternative():
    if BACKEND != "tensorflow":
        with pytest.raises(ValueError, match=r"KERAS_BACKEND=tensorflow.*configure_jax_distribution"):
            distribute.get_strategy("auto")
    if BACKEND != "jax":
        with pytest.raises(ValueError, match=r"KERAS_BACKEND=jax.*get_strategy"):
            distribute.configure_jax_distribution("data")


@jax_only
def test_model_parallel_must_divide_the_devices():
    count = len(keras.distribution.list_devices())
    with pytest.raises(ValueError, match=rf"model_parallel={count + 1} does not divide the {count} device"):
        distribute.configure_jax_distribution("model", model_parallel=count + 1)
    with pytest.raises(ValueError, match="applies to mode='model'"):
        distribute.configure_jax_distribution("data", model_parallel=2)
    with pytest.raises(ValueError, match="Unknown mode 'pipeline'"):
        distribute.configure_jax_distribution("pipeline")
    assert keras.distribution.distribution() is None  # nothing was set on the way


def test_vit_layout_map_splits_attention_and_mlp_kernels():
    from keras_vit.applications import SwinTransformer, VisionTransformer

    mesh = keras.distribution.DeviceMesh(shape=(1, 2), axis_names=("batch", "model"), devices=["cpu:0", "cpu:1"])
    layout_map = distribute.vit_layout_map(mesh)
    vit = VisionTransformer(patch_size=4, hidden_dim=8, depth=1, num_heads=2, mlp_dim=16, input_shape=(8, 8, 3), classes=2)
    swin = SwinTransformer(embed_dim=8, depths=(1,), num_heads=(2,), window_size=2, patch_size=2, input_shape=(8, 8, 3), classes=2)
    for model, prefix in ((vit, "block_0/"), (swin, "stage0_block0/window_attention/")):
        axes = {v.path: layout_map[v.path].axes for v in model.weights if layout_map[v.path] is not None}
        mlp_prefix = prefix.replace("window_attention/", "")
        assert axes == {
            f"{prefix}attention/qkv/kernel": (None, "model"),
            f"{prefix}attention/qkv/bias": ("model",),
            f"{prefix}attention/projection/kernel": ("model", None),
            f"{prefix}attention/projection/bias": (None,),
            f"{mlp_prefix}mlp/fc1/kernel": (None, "model"),
            f"{mlp_prefix}mlp/fc1/bias": ("model",),
            f"{mlp_prefix}mlp/fc2/kernel": ("model", None),
            f"{mlp_prefix}mlp/fc2/bias": (None,),
        }  # patch_embedding/projection and the head stay replicated


def test_global_batch_must_split_over_replicas():
    assert distribute.check_global_batch(512, 8) == 64
    with pytest.raises(ValueError, match=r"Global batch size 100 does not split evenly over 8 replicas.*96 or 104"):
        distribute.check_global_batch(100, 8)
    with pytest.raises(ValueError, match="global_batch must be a positive integer, got 0"):
        distribute.check_global_batch(0, 8)
    assert distribute.global_batch_size(64, 8) == 512
    assert distribute.global_batch_size(64) == 64 * distribute.num_replicas() == 64  # no distribution in process


def test_linear_learning_rate_scaling():
    assert distribute.scale_learning_rate(1e-3, 1024, base_batch=4096) == pytest.approx(2.5e-4)  # AugReg at 1024
    assert distribute.scale_learning_rate(5e-4, 1024, base_batch=512) == pytest.approx(1e-3)  # Swin's 1024
    assert distribute.scale_learning_rate(1e-3, 1024, base_batch=4096, rule="sqrt") == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="base_lr must be a positive number"):
        distribute.scale_learning_rate(0, 1024)


def test_precision_policies():
    assert distribute.set_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    chosen = distribute.set_precision("auto")
    assert chosen == keras.config.dtype_policy().name
    assert chosen == {"tpu": "mixed_bfloat16", "gpu": "mixed_float16", "cpu": "float32"}[distribute._accelerator()]
    with pytest.raises(ValueError, match=r"Unknown policy 'fp16'.*'mixed_float16'"):
        distribute.set_precision("fp16")


def test_mixed_float16_compile_wraps_loss_scaling():
    from keras_vit.applications import VisionTransformer

    distribute.set_precision("mixed_float16")
    model = VisionTransformer(patch_size=4, hidden_dim=8, depth=1, num_heads=2, mlp_dim=16, input_shape=(8, 8, 3), classes=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
