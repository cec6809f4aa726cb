"""Throughput of keras-vit ViTs next to keras-hub's `ViTBackbone`, same config.

Measures images/second of

* inference: `model.predict_on_batch(x)` (the compiled predict function on
  every backend), and
* one training step: `model.train_on_batch(x, y)` after `compile` (forward,
  backward and an AdamW update),

for keras-vit's `create_model(name, include_top=False, pooling=None,
include_preprocessing=False)` (the token sequence after the final LayerNorm,
`(batch, 197, hidden)`) and `keras_hub.models.ViTBackbone` built from the same
config with random weights (its output is the same token sequence). For the
training step both get the same head: the first (class) token and a
`Dense(1000)`, trained with `AdamW(1e-4)` and sparse categorical cross-entropy
from logits, `jit_compile="auto"` (the Keras default).

Each model is called once to trace/compile and `--warmup` more times, then the
two implementations are timed interleaved, `--iters` times each (the order
alternates every iteration), and the median per-iteration time is reported as
images/second. Nothing is downloaded: both models have random weights.

Usage:

    KERAS_BACKEND=jax python benchmarks/throughput.py --models vit_s16 --iters 2 --warmup 1
    python benchmarks/throughput.py --all-backends --json results.json

`--all-backends` reruns this script in one subprocess per backend
(tensorflow, jax, torch, one after the other), collects their JSON records and
prints a markdown table plus the fastest-backend comparison.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Benchmark the working tree's keras_vit (this file lives in <repo>/benchmarks/).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

BACKENDS = ("tensorflow", "jax", "torch")
MODES = ("infer", "train")
IMPLS = ("keras_vit", "keras_hub")

# keras-vit variants that keras-hub's ViTBackbone can express (class token, learned positions).
BENCHMARKABLE = ("vit_ti16", "vit_s16", "vit_s32", "vit_b16", "vit_b32", "vit_l16", "vit_l32", "swin_t", "swin_s", "swin_b")


def hub_backbone(name, image_size):
    """keras-hub's backbone of the same architecture as the keras-vit variant `name`."""
    import keras_hub

    from keras_vit.applications.swin import SWIN_VARIANTS

    image_shape = (image_size, image_size, 3)
    if name in SWIN_VARIANTS:
        variant = SWIN_VARIANTS[name]
        return keras_hub.models.SwinTransformerBackbone(
            image_shape=image_shape,
            embed_dim=variant["embed_dim"],
            depths=variant["depths"],
            num_heads=variant["num_heads"],
            window_size=variant["window_size"],
            drop_path=variant["drop_path_rate"],
        )
    return keras_hub.models.ViTBackbone(image_shape=image_shape, **hub_config(name))


def hub_config(name):
    """keras-hub `ViTBackbone` arguments for the keras-vit ViT variant `name`."""
    from keras_vit.applications.vit import VIT_VARIANTS

    variant = VIT_VARIANTS[name]
    return dict(
        patch_size=variant["patch_size"],
        num_layers=variant["depth"],
        num_heads=variant["num_heads"],
        hidden_dim=variant["hidden_dim"],
        mlp_dim=variant["mlp_dim"],
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vit_s16,vit_b16", help="comma-separated keras-vit names")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per model and mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls after the first (tracing) call")
    parser.add_argument("--modes", default="infer,train", help="comma-separated: infer, train")
    parser.add_argument("--json", default=None, help="append one JSON record per line to this file")
    parser.add_argument(
        "--all-backends",
        action="store_true",
        help="run once per backend (tensorflow, jax, torch) in subprocesses and summarize",
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="backends for --all-backends")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads(N) before benchmarking (default: torch's choice, recorded)",
    )
    parser.add_argument(
        "--summarize",
        metavar="JSONL",
        default=None,
        help="only print the markdown summary of the records in this file (no benchmarking)",
    )
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; choose from {MODES}")
    for backend in args.backends:
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}; choose from {BACKENDS}")
    for model in args.models:
        if model not in BENCHMARKABLE:
            parser.error(f"no keras-hub counterpart for {model!r}; choose from {', '.join(BENCHMARKABLE)}")
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    return args


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment():
    """Versions, CPU and thread settings of this process (after keras is imported)."""
    import keras

    env = {
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "keras": keras.__version__,
    }
    for name in ("keras_hub", "jax", "jaxlib", "torch", "tensorflow", "numpy"):
        try:
            module = __import__(name)
            env[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing optional package is just not reported
            env[name] = None
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["torch_interop_threads"] = torch.get_num_interop_threads()
    except Exception:  # noqa: BLE001
        env["torch_threads"] = None
    if env["backend"] == "tensorflow":
        import tensorflow as tf

        # 0 means "TF picks" (all cores).
        env["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        env["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    if env["backend"] == "jax":
        import jax

        env["jax_devices"] = [str(d) for d in jax.devices()]
    return env


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def build_feature_models(name, image_size):
    """(keras-vit, keras-hub) models mapping images to their final features
    (ViT: the token sequence; Swin: the last stage's tokens or feature map)."""
    import math

    import keras

    import keras_vit

    keras.utils.set_random_seed(0)
    vit = keras_vit.create_model(
        name,
        include_top=False,
        pooling=None,
        include_preprocessing=False,
        input_shape=(image_size, image_size, 3),
    )
    hub = hub_backbone(name, image_size)
    if math.prod(vit.output.shape[1:]) != math.prod(hub.output.shape[1:]):
        raise RuntimeError(f"Output shapes differ: keras-vit {vit.output.shape}, keras-hub {hub.output.shape}")
    return {"keras_vit": vit, "keras_hub": hub}


def build_train_model(features, pool="first", classes=1000):
    """features -> first token (ViT) or mean over positions (Swin) -> Dense(classes) logits."""
    import keras

    class Pool(keras.layers.Layer):
        def call(self, features):
            if pool == "first":
                return features[:, 0]
            return keras.ops.mean(features, axis=tuple(range(1, len(features.shape) - 1)))

        def compute_output_shape(self, input_shape):
            return (input_shape[0], input_shape[-1])

    inputs = keras.Input(shape=features.input_shape[1:], name="images")
    x = features(inputs)
    x = Pool(name="pool")(x)
    logits = keras.layers.Dense(classes, name="head")(x)
    model = keras.Model(inputs, logits, name=f"{features.name}_train")
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile="auto",
    )
    return model


def parameter_breakdown(model):
    """Total parameters and the parameter count per variable shape (to spot layout differences)."""
    shapes = {}
    for v in model.weights:
        key = "x".join(str(d) for d in v.shape)
        shapes[key] = shapes.get(key, 0) + 1
    return model.count_params(), shapes


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def time_interleaved(calls, iters, warmup):
    """Times `calls` (impl -> zero-arg function), alternating the order each iteration.

    Every function is called once (trace/compile; its time is returned as
    `first_call_s`) and `warmup` more times before the timed iterations.
    """
    first = {}
    for impl, fn in calls.items():
        start = time.perf_counter()
        fn()
        first[impl] = time.perf_counter() - start
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {impl: [] for impl in calls}
    order = list(calls)
    for i in range(iters):
        for impl in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            calls[impl]()
            times[impl].append(time.perf_counter() - start)
    return first, times


def run_backend(args):
    """Benchmarks every model and mode on the current backend; returns the JSON records."""
    import gc

    import keras
    import numpy as np

    keras.config.set_floatx("float32")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    env = environment()
    backend = env["backend"]
    print(
        f"# backend={backend} keras={env['keras']} keras_hub={env['keras_hub']} jax={env['jax']} "
        f"torch={env['torch']} tensorflow={env['tensorflow']}",
        flush=True,
    )
    print(
        f"# cpu={env['cpu']!r} cores={env['cores']} torch_threads={env['torch_threads']} "
        f"loadavg={load_average()}",
        flush=True,
    )
    rng = np.random.default_rng(0)
    batch, size = args.batch_size, args.image_size
    images = rng.standard_normal((batch, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, 1000, size=(batch,)).astype("int32")

    records = []
    rows = []
    for name in args.models:
        features = build_feature_models(name, size)
        params, shapes = {}, {}
        for impl, model in features.items():
            params[impl], shapes[impl] = parameter_breakdown(model)
        note = "equal" if params["keras_vit"] == params["keras_hub"] else "DIFFERENT"
        if shapes["keras_vit"] != shapes["keras_hub"]:
            # Same total can hide a different layout (fused qkv vs separate q/k/v kernels).
            only_vit = {k: v for k, v in shapes["keras_vit"].items() if shapes["keras_hub"].get(k) != v}
            only_hub = {k: v for k, v in shapes["keras_hub"].items() if shapes["keras_vit"].get(k) != v}
            note += f"; variable shapes differ: keras_vit {only_vit} vs keras_hub {only_hub}"
        print(
            f"# {name}: params keras_vit={params['keras_vit']:,} keras_hub={params['keras_hub']:,} ({note}); "
            f"output {tuple(features['keras_vit'].output.shape)}",
            flush=True,
        )
        for mode in args.modes:
            if mode == "infer":
                models = features
                calls = {impl: (lambda m=m: m.predict_on_batch(images)) for impl, m in models.items()}
            else:
                models = {impl: build_train_model(m, pool="mean" if name.startswith("swin") else "first") for impl, m in features.items()}
                calls = {impl: (lambda m=m: m.train_on_batch(images, labels)) for impl, m in models.items()}
            load_before = load_average()
            first, times = time_interleaved(calls, args.iters, args.warmup)
            load_after = load_average()
            ips = {impl: batch / statistics.median(t) for impl, t in times.items()}
            ratio = ips["keras_vit"] / ips["keras_hub"]
            rows.append((name, mode, ips["keras_vit"], ips["keras_hub"], ratio))
            print(
                f"{backend:<10} {name:<8} {mode:<5} keras_vit {ips['keras_vit']:8.2f} img/s  "
                f"keras_hub {ips['keras_hub']:8.2f} img/s  ratio {ratio:5.3f}  "
                f"(first call {first['keras_vit']:.1f}s / {first['keras_hub']:.1f}s, loadavg {load_after})",
                flush=True,
            )
            for impl in IMPLS:
                t = times[impl]
                records.append(
                    {
                        "backend": backend,
                        "model": name,
                        "impl": impl,
                        "mode": mode,
                        "img_per_s": ips[impl],
                        "ratio_keras_vit_over_keras_hub": ratio,
                        "median_s": statistics.median(t),
                        "min_s": min(t),
                        "max_s": max(t),
                        "times_s": t,
                        "first_call_s": first[impl],
                        "jit_compile": bool(getattr(models[impl], "jit_compile", False)),
                        "params": params[impl],
                        "batch_size": batch,
                        "image_size": size,
                        "iters": args.iters,
                        "warmup": args.warmup,
                        "loadavg_before": load_before,
                        "loadavg_after": load_after,
                        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "env": env,
                    }
                )
            if mode == "train":
                del models
        del features, calls
        keras.backend.clear_session()
        gc.collect()

    print()
    print("| backend | model | mode | keras-vit img/s | keras-hub img/s | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for name, mode, v, h, r in rows:
        print(f"| {backend} | {name} | {mode} | {v:.2f} | {h:.2f} | {r:.3f} |")
    return records


# ---------------------------------------------------------------------------
# Driver over backends
# ---------------------------------------------------------------------------


def summarize(records):
    """Markdown: the per-backend table and the fastest-backend comparison.

    The ratio columns use the median time (the headline figure); "min ratio"
    uses each side's fastest iteration instead, a check against load spikes
    from other processes (it should tell the same story as the median).
    """
    median_ips, best_ips = {}, {}
    for r in records:
        key = (r["backend"], r["model"], r["mode"], r["impl"])
        median_ips[key] = r["img_per_s"]
        best_ips[key] = r["batch_size"] / r["min_s"]
    backends = [b for b in BACKENDS if any(r["backend"] == b for r in records)]
    models = list(dict.fromkeys(r["model"] for r in records))
    modes = [m for m in MODES if any(r["mode"] == m for r in records)]

    lines = [
        "| backend | model | mode | keras-vit img/s | keras-hub img/s | ratio (vit/hub) | min ratio |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for model in models:
        for mode in modes:
            for backend in backends:
                vk, hk = (backend, model, mode, "keras_vit"), (backend, model, mode, "keras_hub")
                if vk not in median_ips or hk not in median_ips:
                    continue
                v, h = median_ips[vk], median_ips[hk]
                lines.append(
                    f"| {backend} | {model} | {mode} | {v:.2f} | {h:.2f} | {v / h:.3f} "
                    f"| {best_ips[vk] / best_ips[hk]:.3f} |"
                )
    lines += [
        "",
        "Fastest backend per implementation (fastest keras-vit / fastest keras-hub, median img/s):",
        "",
        "| model | mode | fastest keras-vit | fastest keras-hub | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for model in models:
        for mode in modes:
            best = {}
            for impl in IMPLS:
                cands = [
                    (median_ips[(b, model, mode, impl)], b)
                    for b in backends
                    if (b, model, mode, impl) in median_ips
                ]
                if cands:
                    best[impl] = max(cands)
            if len(best) == 2:
                (v, vb), (h, hb) = best["keras_vit"], best["keras_hub"]
                lines.append(f"| {model} | {mode} | {v:.2f} ({vb}) | {h:.2f} ({hb}) | {v / h:.3f} |")
    return "\n".join(lines)


def run_all_backends(args, argv):
    forwarded = []
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--all-backends":
            continue
        if token in ("--json", "--backends"):
            skip = True
            continue
        if token.startswith("--json=") or token.startswith("--backends="):
            continue
        forwarded.append(token)

    records, failed = [], []
    start_all = time.perf_counter()
    for backend in args.backends:
        with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as tmp:
            tmp_path = tmp.name
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, os.path.abspath(__file__), *forwarded, "--json", tmp_path]
        print(f"\n=== {backend}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env)
        elapsed = time.perf_counter() - start
        print(f"=== {backend}: exit {proc.returncode}, {elapsed:.0f}s", flush=True)
        with open(tmp_path) as f:
            backend_records = [json.loads(line) for line in f if line.strip()]
        os.unlink(tmp_path)
        if proc.returncode != 0:
            failed.append(backend)
        records.extend(backend_records)
    total = time.perf_counter() - start_all

    if args.json:
        with open(args.json, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    if records:
        env = records[0]["env"]
        print("\n## Summary\n")
        print(
            f"CPU: {env['cpu']} ({env['cores']} usable cores); keras {env['keras']}, keras-hub {env['keras_hub']}, "
            f"jax {env['jax']}, torch {env['torch']} ({env['torch_threads']} threads), tensorflow {env['tensorflow']}; "
            f"batch {args.batch_size}, {args.image_size}x{args.image_size}, float32, "
            f"median of {args.iters} iterations after {args.warmup} + 1 warm-up calls.\n"
        )
        print(summarize(records))
    print(f"\nTotal wall time: {total:.0f}s ({total / 60:.1f} min)")
    if failed:
        print(f"FAILED backends: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.summarize:
        with open(args.summarize) as f:
            print(summarize([json.loads(line) for line in f if line.strip()]))
        return 0
    if args.all_backends:
        return run_all_backends(args, argv)
    records = run_backend(args)
    if args.json:
        with open(args.json, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
