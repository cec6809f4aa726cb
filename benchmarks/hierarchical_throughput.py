"""Throughput of MViTv2-T next to Swin-T and ViT-S/16, on every backend, in one run.

For each backend (one subprocess each) the three keras-vit classifiers are built
with random weights (1000 classes, no preprocessing) and timed interleaved with
`throughput.time_interleaved`:

* inference: `model.predict_on_batch(x)`;
* one training step: `model.train_on_batch(x, y)` with AdamW(1e-4) and sparse
  categorical cross-entropy (forward, backward, update).

The median per-iteration time becomes images/second; the table gives each
model's rate and its ratio to Swin-T (the anchor) on the same backend.

Usage:

    python benchmarks/hierarchical_throughput.py                       # all backends
    KERAS_BACKEND=jax python benchmarks/hierarchical_throughput.py --one-backend --iters 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from throughput import environment, time_interleaved  # noqa: E402

MODELS = ("mvitv2_t", "swin_t", "vit_s16")
ANCHOR = "swin_t"


def run_backend(args):
    import keras
    import numpy as np

    import keras_vit

    keras.utils.set_random_seed(0)
    shape = (args.image_size, args.image_size, 3)
    models = {}
    for name in args.models:
        model = keras_vit.create_model(name, input_shape=shape, include_preprocessing=False, classifier_activation=None)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        models[name] = model
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.batch_size, *shape)).astype("float32")
    y = rng.integers(0, 1000, (args.batch_size,))
    records = []
    for mode in ("infer", "train"):
        calls = {
            name: (lambda m=model: m.predict_on_batch(x)) if mode == "infer" else (lambda m=model: m.train_on_batch(x, y))
            for name, model in models.items()
        }
        first, times = time_interleaved(calls, args.iters, args.warmup)
        for name in models:
            median = statistics.median(times[name])
            records.append(dict(backend=keras.backend.backend(), model=name, mode=mode, first_call_s=round(first[name], 2),
                                median_s=round(median, 4), images_per_s=round(args.batch_size / median, 2)))
            print(f"{records[-1]['backend']:10} {mode:5} {name:9} {records[-1]['images_per_s']:8.2f} img/s", flush=True)
    env = environment()
    return [dict(record, env=env) for record in records]


def markdown(records):
    rate = {(r["backend"], r["mode"], r["model"]): r["images_per_s"] for r in records}
    lines = ["| backend | mode | " + " | ".join(MODELS) + " |", "|---|---|" + "---:|" * len(MODELS)]
    for backend in dict.fromkeys(r["backend"] for r in records):
        for mode in ("infer", "train"):
            anchor = rate.get((backend, mode, ANCHOR))
            cells = []
            for name in MODELS:
                value = rate.get((backend, mode, name))
                ratio = f" ({value / anchor:.2f}x)" if value and anchor else ""
                cells.append("-" if value is None else f"{value:.2f}{ratio}")
            lines.append(f"| {backend} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--one-backend", action="store_true", help="only the backend of KERAS_BACKEND")
    parser.add_argument("--json", default=None, help="write the records here (JSON lines)")
    args = parser.parse_args(argv)
    args.models = [name for name in args.models.split(",") if name]
    if args.one_backend:
        records = run_backend(args)
    else:
        records, start = [], time.perf_counter()
        for backend in ("tensorflow", "jax", "torch"):
            with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as tmp:
                path = tmp.name
            forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--one-backend"]
            command = [sys.executable, os.path.abspath(__file__), *forwarded, "--one-backend", "--json", path]
            subprocess.run(command, env=dict(os.environ, KERAS_BACKEND=backend), check=False)
            with open(path) as f:
                records += [json.loads(line) for line in f if line.strip()]
            os.unlink(path)
        env = records[0]["env"] if records else {}
        print(f"\n{env.get('cpu')} ({env.get('cores')} cores), load {os.getloadavg()[0]:.1f}; batch {args.batch_size}, "
              f"{args.image_size} px, float32, median of {args.iters} after {args.warmup} + 1 warm-up calls; "
              f"{time.perf_counter() - start:.0f} s in all\n")
        print(markdown(records))
    if args.json:
        with open(args.json, "a") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
