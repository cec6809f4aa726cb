"""Training at scale: distribution strategies, batch and learning-rate scaling, precision.

Two engines, one per backend family:

- TensorFlow backend: `get_strategy` returns a `tf.distribute` strategy (TPU, mirrored GPUs,
  multi-worker from TF_CONFIG, or the default one-device strategy). Build and compile the
  model inside `strategy.scope()`.
- JAX backend: `configure_jax_distribution` sets a `keras.distribution` data-parallel or
  model-parallel (ViT kernels sharded over a "model" mesh axis) distribution globally.
  Build the model after the call.

The batch, learning-rate, precision and compile helpers work on every backend.

```python
strategy = get_strategy("auto")                      # KERAS_BACKEND=tensorflow
set_precision("auto", strategy)
batch = global_batch_size(128, num_replicas(strategy))
with strategy.scope():
    model = keras_vit.create_model("vit_s16", classes=1000)
    model.compile(optimizer=..., loss=..., **compile_options(strategy))
model.fit(dataset.batch(batch), ...)
```

TensorFlow is imported lazily, only by the tf.distribute parts (ARCHITECTURE.md).
"""

import functools
import glob
import importlib.util
import json
import math
import os
import warnings

import keras

STRATEGY_KINDS = ("auto", "tpu", "gpu", "multiworker", "mirrored", "cpu")
JAX_MODES = ("data", "model")
PRECISION_POLICIES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# Environment variables through which TPUClusterResolver finds a TPU without an address.
TPU_ENV_VARIABLES = ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG")

# ---------------------------------------------------------------------------------------------
# TensorFlow: tf.distribute strategies
# ---------------------------------------------------------------------------------------------


def get_strategy(kind="auto", tpu_address=None):
    """Returns a `tf.distribute.Strategy` for `kind` (TensorFlow backend only).

    Kinds:
        "tpu": `TPUStrategy` on the TPU at `tpu_address` (a Cloud TPU name, "grpc://ip:8470"
            or "local"); without an address, the TPU named by TPU_NAME (or
            KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS, TPU_CONFIG), else the TPU attached to this VM.
            Raises ValueError when no TPU is reachable rather than training on the CPU.
        "gpu": `MirroredStrategy` over the visible GPUs (ValueError if there are none).
        "multiworker": `MultiWorkerMirroredStrategy` from the TF_CONFIG environment variable,
            validated first, with a `reduce` that Keras 3's `fit` can use (plain MWMS fails in
            `fit`, keras-team/keras#20585). Call this at the start of the program, before other
            TF work, and give `fit` a `tf.data` dataset (see the README for sharding).
        "mirrored": `MirroredStrategy` over every logical device of the best kind (GPUs,
            else CPUs), e.g. CPUs split with `tf.config.set_logical_device_configuration`.
        "cpu": TensorFlow's default strategy: no distribution, one device (TensorFlow places
            ops on the first GPU if there is one; hide GPUs with CUDA_VISIBLE_DEVICES="").
        "auto": a TPU if one is reachable (tried only when `tpu_address`, a TPU environment
            variable or libtpu makes one plausible, so this stays fast on CPU), else
            multi-worker when TF_CONFIG lists more than one worker, else mirrored when there is
            more than one GPU, else the default strategy.
    """
    kind = _check_choice("kind", kind, STRATEGY_KINDS)
    _require_backend("tensorflow", "get_strategy", hint="For JAX, use keras_vit.training.distribute.configure_jax_distribution.")
    import tensorflow as tf

    if kind == "tpu":
        return _tpu_strategy(tpu_address)
    if kind == "gpu":
        gpus = tf.config.list_logical_devices("GPU")
        if not gpus:
            raise ValueError(
                "get_strategy('gpu') found no GPU visible to TensorFlow. Check `nvidia-smi` and "
                "CUDA_VISIBLE_DEVICES, install a CUDA build (pip install 'tensorflow[and-cuda]'), or use "
                "kind='auto' or 'cpu'."
            )
        return tf.distribute.MirroredStrategy(devices=[device.name for device in gpus])
    if kind == "multiworker":
        read_tf_config(required=True)
        return _multi_worker_strategy()
    if kind == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
    if kind == "cpu":
        return tf.distribute.get_strategy()

    # auto
    if tpu_address or _tpu_plausible():
        try:
            return _tpu_strategy(tpu_address)
        except ValueError as error:
            if tpu_address:
                raise  # the user named a TPU: not finding it is an error, not a fallback
            warnings.warn(f"get_strategy('auto'): no TPU after all ({error}); falling back to GPUs/CPU.", stacklevel=2)
    config = read_tf_config(required=False)
    if config is not None and _num_workers(config) > 1:
        return _multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(devices=[device.name for device in gpus])
    return tf.distribute.get_strategy()


def read_tf_config(required=True):
    """Reads and validates the TF_CONFIG environment variable that multi-worker training needs.

    Returns the parsed dict, or None when TF_CONFIG is unset and not `required`. Raises
    ValueError when it is unset (and required), not JSON, has no `cluster.worker` list, or its
    `task` lacks a type or index, names a type not in the cluster, or an index out of range.
    """
    text = os.environ.get("TF_CONFIG")
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\' (index 1 on the second host)'
    )
    if not text:
        if not required:
            return None
        raise ValueError(f"Multi-worker training reads the cluster from TF_CONFIG, which is not set. Set it on every worker, {example}.")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error.msg}): {text!r}. Write it as JSON, {example}.") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {text!r}; {example}.")
    cluster = config.get("cluster")
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not isinstance(workers, list) or not workers:
        raise ValueError(f"TF_CONFIG has no 'cluster': {{'worker': [...]}} list of 'host:port' addresses: {text!r}; {example}.")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG needs 'task': {{'type': ..., 'index': ...}} telling this process which worker it is, got {text!r}; {example}.")
    members = cluster.get(task["type"])
    if not isinstance(members, list):
        raise ValueError(f"TF_CONFIG's task type {task['type']!r} is not in its cluster ({sorted(cluster)}); use one of those.")
    index = task["index"]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(members):
        raise ValueError(
            f"TF_CONFIG's task index {index!r} is out of range for the {len(members)} {task['type']!r} "
            f"address(es) {members}; use 0..{len(members) - 1}, a different one on each worker."
        )
    return config


@functools.cache
def _keras_multi_worker_strategy_class():
    import tensorflow as tf

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """`tf.distribute.MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3's
        TensorFlow trainer gives it. Without this, `Model.fit` fails under plain MWMS
        (keras-team/keras#20585, tensorflow/tensorflow#72388): the trainer reduces a whole
        `(x, y)` batch structure at once (MWMS reduces one value: "Attempt to convert a value
        (PerReplica...)"), and reduces scalar losses and metrics with `axis=0` ("Invalid
        reduction dimension 0 for input with 0 dimensions"). Here structures are reduced leaf by
        leaf and a scalar's `axis` is dropped (the mean over replicas, as on one worker)."""

        def reduce(self, reduce_op, value, axis=None):
            if isinstance(value, (tuple, list, dict)):
                return tf.nest.map_structure(lambda leaf: self.reduce(reduce_op, leaf, axis), value)
            if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
                axis = None
            return super().reduce(reduce_op, value, axis)

    return KerasMultiWorkerMirroredStrategy


def _multi_worker_strategy():
    return _keras_multi_worker_strategy_class()()


def _num_workers(config):
    cluster = config["cluster"]
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _tpu_plausible():
    """Cheap check that a TPU may be reachable: a TPU environment variable or libtpu on a VM
    with accelerator device files. No network call, so `auto` stays fast on CPU and GPU."""
    if any(os.environ.get(name) for name in TPU_ENV_VARIABLES):
        return True
    has_libtpu = importlib.util.find_spec("libtpu") is not None
    return has_libtpu and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _tpu_strategy(tpu_address):
    import tensorflow as tf

    if tpu_address:
        target, where = tpu_address, repr(tpu_address)
    elif any(os.environ.get(name) for name in TPU_ENV_VARIABLES):
        named = [name for name in TPU_ENV_VARIABLES if os.environ.get(name)]
        target, where = None, f"{named[0]}={os.environ[named[0]]!r}"
    else:
        # No name anywhere: TPUClusterResolver(tpu=None) would raise 'Please provide a TPU Name'
        # at once. "local" is the TPU attached to this VM; without one, initialize fails fast.
        target, where = "local", "'local' (the TPU attached to this VM; TPU_NAME is not set)"
    fix = (
        "Run on a Cloud TPU VM, pass the TPU's name or grpc://address (--tpu-address / tpu_address=), "
        "or use kind 'auto', 'gpu' or 'cpu'."
    )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=target)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError, OSError, ImportError) as error:
        detail = (str(error).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"No TPU was found at {where} ({type(error).__name__}: {detail}). {fix}") from error
    return tf.distribute.TPUStrategy(resolver)


# ---------------------------------------------------------------------------------------------
# JAX: keras.distribution
# ---------------------------------------------------------------------------------------------


def vit_layout_map(device_mesh, model_axis="model"):
    """The layout map of the transformer families (ViT, hybrids, Swin, Swin-V2): Megatron-style
    tensor parallelism for every attention and MLP of a `TransformerBlock` (qkv and fc1 split
    by columns, the output projections by rows, everything else replicated). Keys are regexes
    on `variable.path`, e.g. `block_0/attention/qkv/kernel`; optimizer slots follow their
    variable's layout. It is `keras_vit.model_info("vit_b16").layout_map`."""
    return model_layout_map("vit_b16", device_mesh, model_axis)


def model_layout_map(model, device_mesh, model_axis="model"):
    """The `keras.distribution.LayoutMap` a registry model declares for model parallelism
    (its `ModelSpec.layout_map`); ValueError if it declares none."""
    from keras_vit.applications.registry import model_info

    spec = model_info(model)
    if spec.layout_map is None:
        raise ValueError(
            f"{model!r} declares no layout map for model parallelism; train it with strategy='data' "
            "(data parallel) instead of 'model'."
        )
    return spec.layout_map(device_mesh, model_axis)


def configure_jax_distribution(mode="data", model_parallel=None, devices=None, model="vit_b16"):
    """Sets (and returns) a global `keras.distribution` for the JAX backend.

    Call it before building the model. Multi-host runs call `keras.distribution.initialize()`
    first, so that `list_devices()` returns every host's devices.

    Args:
        mode: "data": `DataParallel` over all devices (variables replicated, batch split).
            "model": `ModelParallel` on a `(batch, model)` `DeviceMesh` with the layout map
            that registry model `model` declares (the transformer families': kernels sharded
            over `model_parallel` devices and the batch over the remaining factor).
        model_parallel: size of the "model" mesh axis for mode "model" (default: all devices);
            must divide the device count, and the sharded widths (3 * hidden_dim for qkv,
            mlp_dim) must be multiples of it.
        devices: the devices to use (default `keras.distribution.list_devices()`).
        model: the registry name whose layout map mode "model" uses.

    The global batch must be a multiple of the batch-axis size, `num_replicas()`
    (see `check_global_batch`).
    """
    mode = _check_choice("mode", mode, JAX_MODES)
    _require_backend("jax", "configure_jax_distribution", hint="With TensorFlow, use keras_vit.training.distribute.get_strategy.")
    devices = list(devices or keras.distribution.list_devices())
    count = len(devices)
    if mode == "data":
        if model_parallel not in (None, 1):
            raise ValueError(f"model_parallel={model_parallel} applies to mode='model'; mode='data' replicates the model. Use mode='model' or drop model_parallel.")
        distribution = keras.distribution.DataParallel(devices=devices)
    else:
        model_parallel = count if model_parallel is None else model_parallel
        if not isinstance(model_parallel, int) or model_parallel < 1 or count % model_parallel:
            divisors = [d for d in range(1, count + 1) if count % d == 0]
            raise ValueError(
                f"model_parallel={model_parallel} does not divide the {count} device(s); "
                f"the mesh is (batch, model) = ({count} / model_parallel, model_parallel). Use one of {divisors}."
            )
        mesh = keras.distribution.DeviceMesh(
            shape=(count // model_parallel, model_parallel), axis_names=("batch", "model"), devices=devices
        )
        distribution = keras.distribution.ModelParallel(layout_map=model_layout_map(model, mesh), batch_dim_name="batch")
    keras.distribution.set_distribution(distribution)
    return distribution


def select_distribution(strategy="auto", tpu_address=None, model="vit_b16"):
    """Sets up training on the current backend from one name and returns the tf.distribute
    strategy to build the model under, or None.

    TensorFlow: any `get_strategy` kind (or a `tf.distribute.Strategy`, returned as is).
    JAX: "auto" / "data" (`DataParallel` over all devices when there are several), "model"
    (`ModelParallel` with registry model `model`'s layout map), "cpu" (one device); returns None after setting
    the `keras.distribution`. PyTorch: "auto" / "cpu" (one device).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return strategy if hasattr(strategy, "scope") else get_strategy(strategy, tpu_address=tpu_address)
    allowed = {"jax": ("auto", "data", "model", "cpu"), "torch": ("auto", "cpu")}.get(backend, ("auto", "cpu"))
    if strategy not in allowed:
        raise ValueError(
            f"strategy={strategy!r} is not available on the {backend} backend; use one of {allowed} "
            "(tf.distribute strategies need KERAS_BACKEND=tensorflow)."
        )
    if backend == "jax" and strategy != "cpu" and (strategy == "model" or len(keras.distribution.list_devices()) > 1):
        configure_jax_distribution("model" if strategy == "model" else "data", model=model)
    return None


# ---------------------------------------------------------------------------------------------
# Batch size and learning rate
# ---------------------------------------------------------------------------------------------


def num_replicas(strategy=None):
    """How many ways each batch is split: `strategy.num_replicas_in_sync` for a tf.distribute
    strategy (the current one when None, on the TensorFlow backend), the size of the batch
    axis of the global `keras.distribution` (JAX), and 1 otherwise."""
    if strategy is not None:
        return int(strategy.num_replicas_in_sync)
    distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if distribution is not None:
        mesh = distribution.device_mesh
        return int(mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return int(tf.distribute.get_strategy().num_replicas_in_sync)
    return 1


_current_num_replicas = num_replicas  # global_batch_size's argument shadows the name


def global_batch_size(per_replica_batch_size, num_replicas=None):
    """`per_replica_batch_size * num_replicas` (default: `num_replicas()` of the current
    strategy/distribution): the batch size to give the dataset, which the strategy splits."""
    count = _current_num_replicas() if num_replicas is None else num_replicas
    _check_positive_int(per_replica_batch_size=per_replica_batch_size, num_replicas=count)
    return per_replica_batch_size * count


def check_global_batch(global_batch, num_replicas):
    """Checks that `global_batch` splits evenly over `num_replicas` and returns the
    per-replica batch; raises ValueError suggesting the nearest valid batch sizes."""
    _check_positive_int(global_batch=global_batch, num_replicas=num_replicas)
    if global_batch % num_replicas:
        lower = (global_batch // num_replicas) * num_replicas
        upper = lower + num_replicas
        nearest = " or ".join(str(size) for size in (lower, upper) if size > 0)
        raise ValueError(
            f"Global batch size {global_batch} does not split evenly over {num_replicas} replicas. "
            f"Use a multiple of {num_replicas}, e.g. {nearest}."
        )
    return global_batch // num_replicas


def scale_learning_rate(base_lr, global_batch, base_batch=256, rule="linear"):
    """The learning rate for `global_batch` from a recipe's `base_lr` at `base_batch`.

    Recipes quote a learning rate for the batch size they used: AugReg ViTs ("How to train
    your ViT") 1e-3 at 4096; DeiT 5e-4 * batch / 512; Swin's config 5e-4 at 512 (its 1e-3 at
    the paper's 1024). Training with another global batch keeps the recipe by the linear
    scaling rule (Goyal et al., 2017): `lr = base_lr * global_batch / base_batch`, e.g.
    AugReg at a global batch of 1024: 1e-3 * 1024 / 4096 = 2.5e-4. `rule="sqrt"` scales by
    `sqrt(global_batch / base_batch)` instead, which some prefer for Adam-family optimizers
    at large ratios. Pair a scaled-up rate with a warmup.
    """
    if not (isinstance(base_lr, (int, float)) and base_lr > 0):
        raise ValueError(f"base_lr must be a positive number, got {base_lr!r}.")
    _check_positive_int(global_batch=global_batch, base_batch=base_batch)
    rule = _check_choice("rule", rule, ("linear", "sqrt"))
    ratio = global_batch / base_batch
    return base_lr * (ratio if rule == "linear" else math.sqrt(ratio))


# ---------------------------------------------------------------------------------------------
# Precision and compile options
# ---------------------------------------------------------------------------------------------


def set_precision(policy="auto", strategy=None):
    """Sets the global Keras dtype policy and returns its name.

    "auto": "mixed_bfloat16" on TPU (a `TPUStrategy`, or JAX on TPU), "mixed_float16" when a
    GPU is the device, "float32" on CPU. "float32", "mixed_bfloat16" and "mixed_float16" are
    accepted as is; on Ampere or newer GPUs "mixed_bfloat16" is an alternative that needs no
    loss scaling. Set it before building the model.

    Loss scaling is automatic in Keras 3: `Model.compile(..., auto_scale_loss=True)` (the
    default) wraps the optimizer in `keras.optimizers.LossScaleOptimizer` when the model's
    dtype policy is "mixed_float16", so nothing else is needed here.
    """
    policy = _check_choice("policy", policy, PRECISION_POLICIES)
    if policy == "auto":
        policy = {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(_accelerator(strategy), "float32")
    keras.config.set_dtype_policy(policy)
    return policy


def compile_options(strategy=None, steps_per_epoch=None):
    """Keyword arguments for `model.compile` suited to the device: `steps_per_execution` 32 on
    TPU (fewer host round trips; capped at `steps_per_epoch` when given), 1 elsewhere; and
    `jit_compile` True on TPU and GPU (XLA), "auto" on CPU and on the PyTorch backend (where
    True would mean torch.compile)."""
    device = _accelerator(strategy)
    steps = 32 if device == "tpu" else 1
    if steps_per_epoch:
        steps = max(1, min(steps, int(steps_per_epoch)))
    accelerated = device in ("tpu", "gpu") and keras.backend.backend() != "torch"
    return {"steps_per_execution": steps, "jit_compile": True if accelerated else "auto"}


def _accelerator(strategy=None):
    """'tpu', 'gpu' or 'cpu': the kind of device training runs on."""
    if strategy is not None and type(strategy).__name__.startswith("TPUStrategy"):
        return "tpu"
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if strategy is not None:
            try:
                devices = strategy.extended.worker_devices
            except (RuntimeError, NotImplementedError):  # the default strategy has no device list
                devices = ()
            kinds = {device.upper().split("DEVICE:")[-1].split(":")[0] for device in devices}
            if kinds:
                return "tpu" if "TPU" in kinds else "gpu" if "GPU" in kinds else "cpu"
        if tf.config.list_logical_devices("TPU"):
            return "tpu"
        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    if backend == "jax":
        import jax

        platform = jax.devices()[0].platform
        return {"tpu": "tpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu"}.get(platform, "cpu")
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def _require_backend(backend, function, hint):
    current = keras.backend.backend()
    if current != backend:
        needs = "tf.distribute strategies need" if backend == "tensorflow" else "keras.distribution here needs"
        raise ValueError(
            f"{function}() runs on the {backend} backend, but KERAS_BACKEND is {current!r}: {needs} "
            f"KERAS_BACKEND={backend} (set it before importing keras). {hint}"
        )


def _check_choice(name, value, choices):
    normalized = value.lower() if isinstance(value, str) else value
    if normalized not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(repr(c) for c in choices)}.")
    return normalized


def _check_positive_int(**values):
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
