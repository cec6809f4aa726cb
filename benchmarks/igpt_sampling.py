"""Sampling speed of an iGPT with and without the key/value cache, on every backend.

`keras_vit.applications.igpt.generate.generate(model, num_samples=..., seed=...,
use_cache=...)` samples the pixels one at a time inside one compiled call
(`predict_on_batch` of a sampler model: `jax.jit`, a `tf.function`, eager torch;
`keras.ops.fori_loop` over the tokens):

* **cached** (`use_cache=True`): the blocks run on the one new token, which
  attends to the cached keys and values: `O(T)` work per token.
* **uncached** (`use_cache=False`): a full forward pass over all `T` tokens for
  every token (the original iGPT's sampler): `O(T^2)` per token with dense
  attention.

For each backend (one subprocess each, `KERAS_BACKEND` set) and image size, the
script builds the model with random weights (`keras.utils.set_random_seed(0)`),
calls `generate` once to warm up (tracing and compilation: "first call"), then
times a second call with another seed. It reports seconds per image and
tokens per second (batch x T / time) of the timed call, the speed-up of the
cache, and whether cached and uncached sampling gave the same tokens for the
same seed (the Gumbel noise is drawn once from the seed, so they should,
up to float rounding flipping a near-tie).

Uncached sampling at a larger size is skipped when its time, extrapolated from
the smaller size as `(T / T_small)^2`, exceeds `--max-uncached-s`.

Usage:

    python benchmarks/igpt_sampling.py                                   # jax, tensorflow, torch; 16 and 32 px
    KERAS_BACKEND=jax python benchmarks/igpt_sampling.py --one-backend --sizes 16
"""

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

BACKENDS = ("jax", "tensorflow", "torch")


def _timed_generate(model, batch, seed, use_cache):
    from keras_vit.applications.igpt.generate import generate

    start = time.perf_counter()
    tokens = generate(model, num_samples=batch, seed=seed, use_cache=use_cache)
    return time.perf_counter() - start, tokens


def run_backend(args):
    """Records for this process' backend (set KERAS_BACKEND)."""
    import keras
    import numpy as np

    import keras_vit

    backend = keras.backend.backend()
    records = []
    uncached_seconds = {}  # size -> timed seconds, to extrapolate
    for size in args.sizes:
        tokens = size * size
        keras.utils.set_random_seed(0)
        model = keras_vit.create_model(args.model, image_size=size)
        implementation = model.get_layer("block0").attention.resolved_implementation(tokens)
        sampled = {}
        for use_cache in (True, False):
            record = dict(backend=backend, model=args.model, size=size, tokens=tokens, batch=args.batch,
                          use_cache=use_cache, params=model.count_params(),
                          full_pass_attention=None if use_cache else implementation)
            if not use_cache and uncached_seconds:
                small = max(uncached_seconds)
                estimate = uncached_seconds[small] * (tokens / small**2) ** 2
                record["estimate_s"] = round(estimate, 1)
                if estimate > args.max_uncached_s:
                    record["status"] = f"not run (estimated {estimate:.0f} s > {args.max_uncached_s:g} s)"
                    records.append(record)
                    print(f"{backend:10} {size}px uncached: {record['status']}", file=sys.stderr, flush=True)
                    continue
            first_s, _ = _timed_generate(model, args.batch, args.warmup_seed, use_cache)
            seconds, out = _timed_generate(model, args.batch, args.seed, use_cache)
            sampled[use_cache] = out
            if not use_cache:
                uncached_seconds[size] = seconds
            record.update(status="ok", first_call_s=round(first_s, 2), seconds=round(seconds, 3),
                          seconds_per_image=round(seconds / args.batch, 4),
                          tokens_per_s=round(args.batch * tokens / seconds, 1),
                          token_range=[int(out.min()), int(out.max())])
            records.append(record)
            print(f"{backend:10} {size}px {'cached' if use_cache else 'uncached':8} first call {first_s:7.2f} s, "
                  f"timed {seconds:7.2f} s, {record['tokens_per_s']:9.1f} tokens/s", file=sys.stderr, flush=True)
        if len(sampled) == 2:
            equal = sampled[True] == sampled[False]
            mismatch = np.argwhere(~equal)
            for record in records[-2:]:
                record.update(equal_tokens=bool(equal.all()), equal_fraction=float(equal.mean()),
                              first_mismatch=mismatch[0].tolist() if len(mismatch) else None)
            print(f"{backend:10} {size}px cached == uncached: {bool(equal.all())} ({equal.mean():.4f} of tokens)",
                  file=sys.stderr, flush=True)
    return records


def run_all(args):
    records = []
    for backend in args.backends:
        command = [sys.executable, os.path.abspath(__file__), "--one-backend", "--sizes", ",".join(map(str, args.sizes)),
                   "--batch", str(args.batch), "--model", args.model, "--seed", str(args.seed),
                   "--warmup-seed", str(args.warmup_seed), "--max-uncached-s", str(args.max_uncached_s)]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        start = time.time()
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        if result.returncode:
            raise RuntimeError(f"{backend} failed (exit {result.returncode}); its stderr is above.")
        backend_records = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{backend}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
        records += backend_records
    return records


def markdown(records):
    """One row per (backend, size): cached and uncached speed, the speed-up, equality."""
    lines = ["| backend | image | tokens | batch | cached s/image | cached tokens/s | uncached s/image | "
             "uncached tokens/s | speed-up | first call s (cached / uncached) | cached == uncached |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    pairs = {}
    for record in records:
        pairs.setdefault((record["backend"], record["size"]), {})[record["use_cache"]] = record
    for (backend, size), pair in pairs.items():
        cached, uncached = pair.get(True), pair.get(False)
        ok = uncached is not None and uncached["status"] == "ok"
        speedup = f"{uncached['seconds'] / cached['seconds']:.1f}x" if ok else ""
        if ok:
            equal = "yes" if cached["equal_tokens"] else f"no ({cached['equal_fraction']:.4f} equal)"
            first = f"{cached['first_call_s']:.1f} / {uncached['first_call_s']:.1f}"
            uncached_cells = f"{uncached['seconds_per_image']:.3f} | {uncached['tokens_per_s']:,.0f}"
        else:
            equal, first = "", f"{cached['first_call_s']:.1f} / -"
            uncached_cells = f"{uncached['status'] if uncached else ''} | "
        attention = f" ({uncached['full_pass_attention']})" if uncached else ""
        lines.append(f"| {backend}{attention} | {size} | {cached['tokens']} | {cached['batch']} | "
                     f"{cached['seconds_per_image']:.3f} | {cached['tokens_per_s']:,.0f} | {uncached_cells} | "
                     f"{speedup} | {first} | {equal} |")
    return "\n".join(lines)


def environment():
    versions = {}
    for name in ("keras", "jax", "jaxlib", "tensorflow", "torch", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return dict(python=platform.python_version(), cores=len(os.sched_getaffinity(0)), **versions)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sizes", default="16,32", help="image sides (tokens = side^2)")
    parser.add_argument("--model", default="igpt_pico")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1, help="seed of the timed call")
    parser.add_argument("--warmup-seed", type=int, default=0, help="seed of the warm-up call")
    parser.add_argument("--max-uncached-s", type=float, default=120.0,
                        help="skip uncached sampling at a size whose extrapolated time exceeds this")
    parser.add_argument("--json", help="append one JSON record per line to this file")
    parser.add_argument("--one-backend", action="store_true", help="run in this process (KERAS_BACKEND)")
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    args.backends = args.backends.split(",")
    if args.one_backend:
        print(json.dumps(run_backend(args)))
        return
    print(json.dumps(environment()), file=sys.stderr)
    records = run_all(args)
    if args.json:
        with open(args.json, "a") as file:
            for record in records:
                file.write(json.dumps(record) + "\n")
    print(markdown(records))


if __name__ == "__main__":
    main()
