"""Bipartite matcher: `keras_vit.ops.linear_sum_assignment` vs `scipy.optimize.linear_sum_assignment`.

DETR's matching costs (100 queries, 20 targets, 91 classes): `-p(class) + 5 L1(cxcywh) - 2 GIoU`
from random predictions and targets, float32. Two layouts of the same problems:

* `100x20`: the cost of the real targets only, `(B, 100, 20)`;
* `100x100 padded`: targets padded to 100 columns of cost 0 (`max_objects` = 100), `(B, 100, 100)`,
  as a loss with a fixed number of targets builds it.

Ours runs as in a train step: `jax.jit` on JAX, `tf.function(jit_compile=True)` (XLA) on TensorFlow,
eager on torch. scipy runs one matrix at a time, in a Python loop over the batch (float32 matrices,
as a DETR loss on the host would pass them). Every timed call is checked against scipy's total.
"compile" is the first call (trace + compile + run); then `--warmup` untimed calls and the median of
`--iters` timed calls, on the same batch.

Usage:

    python benchmarks/matcher.py --all-backends
    KERAS_BACKEND=jax python benchmarks/matcher.py --batch-sizes 1,64 --iters 20
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

BACKENDS = ("tensorflow", "jax", "torch")
QUERIES, TARGETS, PADDED_TARGETS, CLASSES = 100, 20, 100, 91


def _random_boxes(rng, batch, count):
    """Normalized (cx, cy, w, h): centers in [0.2, 0.8], sizes in [0.05, 0.4]."""
    return np.concatenate([rng.uniform(0.2, 0.8, (batch, count, 2)), rng.uniform(0.05, 0.4, (batch, count, 2))], -1)


def _pairwise_giou(boxes1, boxes2):
    """(B, N, 4) x (B, M, 4) cxcywh -> (B, N, M) generalized IoU."""
    a = np.concatenate([boxes1[..., :2] - boxes1[..., 2:] / 2, boxes1[..., :2] + boxes1[..., 2:] / 2], -1)[:, :, None]
    b = np.concatenate([boxes2[..., :2] - boxes2[..., 2:] / 2, boxes2[..., :2] + boxes2[..., 2:] / 2], -1)[:, None]
    inter = np.prod(np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None), -1)
    union = np.prod(a[..., 2:] - a[..., :2], -1) + np.prod(b[..., 2:] - b[..., :2], -1) - inter
    hull = np.prod(np.maximum(a[..., 2:], b[..., 2:]) - np.minimum(a[..., :2], b[..., :2]), -1)
    return inter / union - (hull - union) / hull


def detr_costs(batch, padded, seed=0):
    """`(batch, 100, 20)` DETR matching costs, or `(batch, 100, 100)` with columns 20.. set to 0."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, QUERIES, CLASSES + 1))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    pred, target = _random_boxes(rng, batch, QUERIES), _random_boxes(rng, batch, TARGETS)
    labels = np.broadcast_to(rng.integers(0, CLASSES, (batch, 1, TARGETS)), (batch, QUERIES, TARGETS))
    l1 = np.abs(pred[:, :, None] - target[:, None]).sum(-1)
    cost = -np.take_along_axis(probs, labels, -1) + 5 * l1 - 2 * _pairwise_giou(pred, target)
    if padded:
        cost = np.concatenate([cost, np.zeros((batch, QUERIES, PADDED_TARGETS - TARGETS))], -1)
    return cost.astype("float32")


def compiled_matcher():
    import keras

    from keras_vit.ops import linear_sum_assignment

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        function = jax.jit(linear_sum_assignment)
        return lambda cost: jax.block_until_ready(function(cost)), "jax.jit"
    if backend == "tensorflow":
        import tensorflow as tf

        function = tf.function(linear_sum_assignment, jit_compile=True)
        return lambda cost: [x.numpy() for x in function(cost)], "tf.function(jit_compile=True)"
    return linear_sum_assignment, "eager"


def scipy_matcher(cost):
    from scipy.optimize import linear_sum_assignment

    return [linear_sum_assignment(item) for item in cost]


def total_costs(cost, rows, cols):
    rows, cols = np.asarray(rows), np.asarray(cols)
    return cost.astype(np.float64)[np.arange(len(cost))[:, None], rows, cols].sum(1)


def timed(function, argument, iters, warmup):
    start = time.perf_counter()
    result = function(argument)
    first = time.perf_counter() - start
    for _ in range(warmup):
        function(argument)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - start)
    return result, first, statistics.median(times)


def run_backend(args):
    import keras

    matcher, mode = compiled_matcher()
    records = []
    for padded in (False, True):
        for batch in args.batch_sizes:
            cost = detr_costs(batch, padded)
            argument = keras.ops.convert_to_tensor(cost)
            (rows, cols), first, ours = timed(matcher, argument, args.iters, args.warmup)
            assignments, _, reference = timed(scipy_matcher, cost, args.iters, args.warmup)
            best = np.array([item.astype(np.float64)[pair].sum() for item, pair in zip(cost, assignments)])
            ours_total = total_costs(cost, keras.ops.convert_to_numpy(rows), keras.ops.convert_to_numpy(cols))
            records.append({
                "backend": keras.backend.backend(), "mode": mode, "shape": "x".join(map(str, cost.shape[1:])),
                "padded": padded, "batch": batch, "first_s": first, "ours_ms": ours * 1e3, "scipy_ms": reference * 1e3,
                "max_total_diff": float(np.abs(ours_total - best).max()), "load": list(os.getloadavg()),
            })
    return records


def markdown(records):
    lines = [
        "| backend (mode) | cost | batch | ours ms | scipy ms | ours / scipy | first call s | max total diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        cost = r["shape"] + (" padded" if r["padded"] else "")
        lines.append(
            f"| {r['backend']} ({r['mode']}) | {cost} | {r['batch']} | {r['ours_ms']:.2f} | {r['scipy_ms']:.2f} | "
            f"{r['ours_ms'] / r['scipy_ms']:.1f} | {r['first_s']:.1f} | {r['max_total_diff']:.1g} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--all-backends", action="store_true")
    parser.add_argument("--json", default=None, help="append the records, one JSON per line")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.all_backends:
        records = []
        for backend in BACKENDS:
            command = [sys.executable, os.path.abspath(__file__), "--batch-sizes", ",".join(map(str, args.batch_sizes)),
                       "--iters", str(args.iters), "--warmup", str(args.warmup)]
            env = dict(os.environ, KERAS_BACKEND=backend, MATCHER_EMIT="1")
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"{backend} failed:\n{result.stderr[-3000:]}")
            lines = result.stdout.splitlines()
            records += [json.loads(line[len("@record "):]) for line in lines if line.startswith("@record ")]
    else:
        records = run_backend(args)
        if os.environ.get("MATCHER_EMIT"):  # a subprocess of --all-backends
            for record in records:
                print("@record " + json.dumps(record))
            return
    if args.json:
        with open(args.json, "a") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)
    print(markdown(records))


if __name__ == "__main__":
    main()
