"""Memory and time of one causal attention call, forward + backward: dense vs block-wise.

iGPT at 64x64 attends over 4096 pixel tokens. Dense attention
(`keras.ops.dot_product_attention(..., is_causal=True)`) materialises the
`(batch, heads, 4096, 4096)` score matrix, plus what its backward pass keeps;
`keras_vit.layers.blockwise_attention` holds one `(block, block)` tile per
head. This script measures, for one call and its gradient wrt q, k and v
(loss `sum(out ** 2)`), on the backend chosen by KERAS_BACKEND:

* **XLA temp** (JAX): `jit(grad).lower(...).compile().memory_analysis()
  .temp_size_in_bytes`, the intermediate buffers XLA keeps alive at once
  (inputs and gradients excluded).
* **first-run peak**: the rise of the process' peak resident memory (VmHWM,
  reset through `/proc/self/clear_refs`) above the resident memory just before
  the first run, after JAX's compilation and TensorFlow's tracing (XLA on
  TensorFlow compiles during this run): what the operating system saw. Only
  the first run is measured: later runs reuse buffers the allocators keep.
* **process peak**: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of the whole
  run (imports, tracing, compilation, steps) minus that of a baseline run that
  computes `sum(q * k * v)` instead of attention. Includes compile memory.
* **compile + first run** (trace, compile, run) and **step** (median of
  `--repeats` later steps) wall times.

Variants:

* `dense`: `keras.ops.dot_product_attention(q, k, v, is_causal=True)`.
* `blockwise`: `blockwise_attention(q, k, v, causal=True)`, FlashAttention's
  backward through `keras.ops.custom_gradient` (the default, `remat=True`).
* `blockwise_autodiff`: `remat=False`, the backend differentiates the loops.
* `keras_remat`: the alternative considered for the backward pass: the
  forward of each query block wrapped in `keras.remat` (jax.checkpoint,
  tf.recompute_grad, torch checkpoint), the backend differentiating the
  recomputed block.

On TensorFlow each variant runs as a `tf.function` graph and with
`jit_compile=True` (XLA); on torch eagerly. Each (variant, mode) runs in a
fresh subprocess. Float32, random inputs, nothing downloaded.

Usage:

    KERAS_BACKEND=jax python benchmarks/blockwise_attention.py
    KERAS_BACKEND=tensorflow python benchmarks/blockwise_attention.py --tokens 2048 --variants dense,blockwise
    KERAS_BACKEND=torch python benchmarks/blockwise_attention.py --torch-threads 1
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

MIB = 2**20
VARIANTS = ("dense", "blockwise", "blockwise_autodiff", "keras_remat")


def _status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line (Linux only).")


def _reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _keras_remat_attention(query, key, value, block_size):
    """Causal attention with each query block's forward under `keras.remat` (the alternative)."""
    import importlib

    import keras
    from keras import ops

    module = importlib.import_module("keras_vit.layers.blockwise_attention")
    tokens = query.shape[1]
    scale = 1.0 / query.shape[-1] ** 0.5
    outputs = []
    for start in range(0, tokens, block_size):
        stop = min(start + block_size, tokens)
        # Queries start .. stop - 1 see keys 0 .. stop - 1: a causal problem with an offset of `start`.
        plan = module._Plan(stop - start, stop, block_size, True, scale, query.dtype)

        def block(q, k, v, plan=plan):
            return module._forward(plan, q, k, v, unroll=True)[0]

        outputs.append(keras.remat(block)(query[:, start:stop], key[:, :stop], value[:, :stop]))
    return ops.concatenate(outputs, axis=1)


def _attention(variant, block_size):
    from keras import ops

    from keras_vit.layers.blockwise_attention import blockwise_attention

    if variant == "baseline":
        return lambda q, k, v: q * k * v
    if variant == "dense":
        return lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=True)
    if variant == "blockwise":
        return lambda q, k, v: blockwise_attention(q, k, v, causal=True, block_size=block_size)
    if variant == "blockwise_autodiff":
        return lambda q, k, v: blockwise_attention(q, k, v, causal=True, block_size=block_size, remat=False)
    if variant == "keras_remat":
        return lambda q, k, v: _keras_remat_attention(q, k, v, block_size)
    raise ValueError(f"Unknown variant {variant!r}; expected one of {VARIANTS}.")


def _gradient_step(attention, mode):
    """`(step, sync)`: `step(q, k, v)` returns the gradients of `sum(attention(q, k, v) ** 2)`
    wrt q, k, v, compiled per backend; `sync` waits for them."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(q, k, v):
            return (attention(q, k, v) ** 2).sum()

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2))), jax.block_until_ready
    if backend == "tensorflow":
        import tensorflow as tf

        def step(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                loss = tf.reduce_sum(attention(q, k, v) ** 2)
            return tape.gradient(loss, [q, k, v])

        return tf.function(step, jit_compile=mode == "xla"), lambda x: [t.numpy() for t in x]
    if backend == "torch":

        def step(q, k, v):
            q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
            (attention(q, k, v) ** 2).sum().backward()
            return q.grad, k.grad, v.grad

        return step, lambda x: x
    raise ValueError(f"benchmarks/blockwise_attention.py: no autodiff on the {backend} backend.")


def _peak_rise(run):
    """Run `run()`; return its result and the rise of peak resident memory above the resident memory before it."""
    before = _status_bytes("VmRSS")
    _reset_peak_rss()
    result = run()
    return result, _status_bytes("VmHWM") - before


def measure_one(variant, mode, tokens, heads, head_dim, batch, block_size, repeats, torch_threads=None):
    """One record, in this (fresh) process."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    if backend == "torch" and torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    rng = np.random.RandomState(0)
    q, k, v = (
        keras.ops.convert_to_tensor(rng.randn(batch, tokens, heads, head_dim).astype("float32")) for _ in range(3)
    )
    step, sync = _gradient_step(_attention(variant, block_size), mode)
    record = {"backend": backend, "mode": mode, "variant": variant, "tokens": tokens, "heads": heads}
    start = time.perf_counter()
    if backend == "jax":  # compile ahead, so that the first run's peak holds the run only
        step = step.lower(q, k, v).compile()
        record["xla_temp_mib"] = step.memory_analysis().temp_size_in_bytes / MIB
    elif backend == "tensorflow":  # trace ahead (XLA still compiles during the first run)
        step = step.get_concrete_function(q, k, v)
    record["prepare_s"] = time.perf_counter() - start

    def timed():
        start = time.perf_counter()
        sync(step(q, k, v))
        return time.perf_counter() - start

    record["first_call_s"], first_peak = _peak_rise(timed)
    record["first_peak_mib"] = first_peak / MIB
    record["step_s"] = statistics.median(timed() for _ in range(repeats))
    record["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB
    return record


def _run(variant, mode, args):
    command = [
        sys.executable, os.path.abspath(__file__), "--one", f"{variant}:{mode}",
        "--tokens", str(args.tokens), "--heads", str(args.heads), "--head-dim", str(args.head_dim),
        "--batch", str(args.batch), "--block-size", str(args.block_size), "--repeats", str(args.repeats),
    ]
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{variant} ({mode}) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(records, baselines):
    has_xla = any("xla_temp_mib" in record for record in records)
    header = "| mode | variant | " + ("XLA temp MiB | " if has_xla else "")
    header += "first-run peak MiB | process peak MiB | compile + first run s | step s |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for record in records:
        row = f"| {record['mode']} | {record['variant']} | "
        if has_xla:
            row += f"{record.get('xla_temp_mib', float('nan')):.1f} | "
        row += (
            f"{record['first_peak_mib']:.1f} | "
            f"{record['maxrss_mib'] - baselines[record['mode']]['maxrss_mib']:.1f} | "
            f"{record['prepare_s'] + record['first_call_s']:.2f} | {record['step_s']:.2f} |"
        )
        lines.append(row)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--torch-threads", type=int,
        help="torch.set_num_threads in the workers: on a busy machine, fewer threads than cores avoids "
        "OpenMP barriers waiting on descheduled threads, which slow block-wise attention's many small ops "
        "by up to 20x",
    )
    parser.add_argument("--modes", help="tensorflow: graph,xla (default both); jax: jit; torch: eager")
    parser.add_argument("--json", help="append one JSON record per line to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: VARIANT:MODE in this process
    args = parser.parse_args(argv)
    if args.one:
        variant, mode = args.one.split(":")
        record = measure_one(
            variant, mode, args.tokens, args.heads, args.head_dim, args.batch, args.block_size, args.repeats,
            args.torch_threads,
        )
        print(json.dumps(record))
        return

    import keras

    from keras_vit.layers.blockwise_attention import attention_scratch_bytes

    backend = keras.backend.backend()
    default_modes = {"jax": "jit", "tensorflow": "graph,xla", "torch": "eager"}[backend]
    modes = (args.modes or default_modes).split(",")
    scratch = attention_scratch_bytes(args.tokens, args.heads, args.batch, block_size=args.block_size)
    print(
        f"{backend}: T={args.tokens}, heads={args.heads}, head_dim={args.head_dim}, batch={args.batch}, "
        f"block={scratch['block_size']}, causal tiles {scratch['tiles_computed']}/{scratch['tiles_total']}; "
        f"scores held: dense {scratch['dense'] / MIB:.0f} MiB, block-wise {scratch['blockwise'] / MIB:.0f} MiB",
        file=sys.stderr,
    )
    records, baselines = [], {}
    for mode in modes:
        baselines[mode] = _run("baseline", mode, args)
        for variant in args.variants.split(","):
            record = _run(variant, mode, args)
            print(f"  {mode} {variant}: {json.dumps(record)}", file=sys.stderr)
            records.append(record)
    if args.json:
        with open(args.json, "a") as file:
            for record in records:
                file.write(json.dumps(record) + "\n")
    print(table(records, baselines))


if __name__ == "__main__":
    main()
