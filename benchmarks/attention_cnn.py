"""LR-Net-50 (and NL-ResNet-50) next to ResNet-50: img/s and peak memory per backend.

Models, all with random weights, 224 px, batch 8, float32, no preprocessing:

* `keras.applications.ResNet50(weights=None)`: the reference;
* keras-vit `resnet50`: the same network (ResNet v1.5, no conv biases) from
  keras-vit's generic ResNet builder, to separate builder overhead from the
  layer's cost;
* keras-vit `lrnet50`: 7x7 local relation layers instead of the 3x3 convs;
* keras-vit `nl_resnet50`: ResNet-50 + 5 non-local blocks (with `--models`).

Inference is `predict_on_batch`; training is `train_on_batch` with
global-average pooling, `Dense(1000)`, AdamW and cross-entropy from logits
(as `benchmarks/throughput.py`). All models are timed interleaved in one
process per backend. On JAX the script also reports XLA's activation memory
(`memory_analysis().temp_size_in_bytes`) of the forward pass and of one
gradient step.

Usage:

    python benchmarks/attention_cnn.py --all-backends --iters 3 --warmup 1
    KERAS_BACKEND=jax python benchmarks/attention_cnn.py --models resnet50,lrnet50 --modes infer
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

from throughput import BACKENDS, build_train_model, environment, load_average, time_interleaved  # noqa: E402

MIB = 2**20


def build_features(name, size):
    import keras

    import keras_vit

    keras.utils.set_random_seed(0)
    if name == "keras_resnet50":
        return keras.applications.ResNet50(weights=None, include_top=False, input_shape=(size, size, 3))
    return keras_vit.create_model(
        name, include_top=False, pooling=None, include_preprocessing=False, input_shape=(size, size, 3)
    )


def xla_memory(model, images, labels):
    """XLA's temp buffers (MiB) for the forward pass and one gradient step (JAX only)."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def forward(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    def loss(trainable, non_trainable, images, labels):
        logits, _ = model.stateless_call(trainable, non_trainable, images, training=True)
        return jax.numpy.mean(jax.nn.logsumexp(logits, -1) - jax.numpy.take_along_axis(logits, labels[:, None], -1)[:, 0])

    infer = jax.jit(forward).lower(trainable, non_trainable, images).compile().memory_analysis()
    grad = jax.jit(jax.grad(loss)).lower(trainable, non_trainable, images, labels).compile().memory_analysis()
    return infer.temp_size_in_bytes / MIB, grad.temp_size_in_bytes / MIB


def run_backend(args):
    import keras
    import numpy as np

    from keras_vit.evaluation.complexity import measure

    env = environment()
    print(f"# backend={env['backend']} cpu={env['cpu']!r} cores={env['cores']} loadavg={load_average()}", flush=True)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch_size, args.image_size, args.image_size, 3), dtype=np.float32)
    labels = rng.integers(0, 1000, size=(args.batch_size,)).astype("int32")
    features = {name: build_features(name, args.image_size) for name in args.models}
    records = {
        name: dict(
            backend=env["backend"],
            model=name,
            params=sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            gmacs=measure(model).gmacs if name != "keras_resnet50" else None,
        )
        for name, model in features.items()
    }
    for mode in args.modes:
        if mode == "infer":
            calls = {name: (lambda m=model: m.predict_on_batch(images)) for name, model in features.items()}
        else:
            trainers = {name: build_train_model(model, pool="mean") for name, model in features.items()}
            calls = {name: (lambda t=trainer: t.train_on_batch(images, labels)) for name, trainer in trainers.items()}
        _, times = time_interleaved(calls, args.iters, args.warmup)
        for name, values in times.items():
            records[name][f"{mode}_img_s"] = args.batch_size / statistics.median(values)
            print(f"{env['backend']:10s} {name:15s} {mode:5s} {records[name][f'{mode}_img_s']:7.2f} img/s", flush=True)
    if keras.backend.backend() == "jax":
        for name, model in features.items():
            trainer = build_train_model(model, pool="mean")
            records[name]["xla_infer_mib"], records[name]["xla_train_mib"] = xla_memory(trainer, images, labels)
    return list(records.values())


def markdown(records):
    lines = [
        "| backend | model | params | GMACs | infer img/s | train img/s | vs keras ResNet50 (infer / train) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    reference = {r["backend"]: r for r in records if r["model"] == "keras_resnet50"}
    for r in records:
        ref = reference.get(r["backend"])
        ratio = "" if ref is None else " / ".join(
            f"{r[f'{m}_img_s'] / ref[f'{m}_img_s']:.2f}" for m in ("infer", "train") if f"{m}_img_s" in r
        )
        gmacs = "" if r["gmacs"] is None else f"{r['gmacs']:.2f}"
        lines.append(
            f"| {r['backend']} | {r['model']} | {r['params']:,} | {gmacs} | {r.get('infer_img_s', 0):.2f} | "
            f"{r.get('train_img_s', 0):.2f} | {ratio} |"
        )
    memory = [r for r in records if "xla_infer_mib" in r]
    if memory:
        lines += ["", "| model (JAX) | XLA temp MiB, forward | XLA temp MiB, gradient step |", "|---|---:|---:|"]
        lines += [f"| {r['model']} | {r['xla_infer_mib']:.0f} | {r['xla_train_mib']:.0f} |" for r in memory]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="keras_resnet50,resnet50,lrnet50")
    parser.add_argument("--modes", default="infer,train")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--all-backends", action="store_true")
    parser.add_argument("--json", default=None, help="append the records, one JSON per line")
    args = parser.parse_args(argv)
    args.models, args.modes = args.models.split(","), args.modes.split(",")
    if args.all_backends:
        records = []
        for backend in BACKENDS:
            command = [
                sys.executable, os.path.abspath(__file__), "--models", ",".join(args.models),
                "--modes", ",".join(args.modes), "--batch-size", str(args.batch_size),
                "--image-size", str(args.image_size), "--iters", str(args.iters), "--warmup", str(args.warmup),
            ]
            env = dict(os.environ, KERAS_BACKEND=backend, ATTENTION_CNN_EMIT="1")
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            sys.stderr.write(result.stdout)
            if result.returncode:
                raise RuntimeError(f"{backend} failed:\n{result.stderr[-3000:]}")
            records += [json.loads(line[len("@record "):]) for line in result.stdout.splitlines() if line.startswith("@record ")]
    else:
        records = run_backend(args)
        if os.environ.get("ATTENTION_CNN_EMIT"):  # a subprocess of --all-backends
            for record in records:
                print("@record " + json.dumps(record))
            return
    if args.json:
        with open(args.json, "a") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)
    print(markdown(records))


if __name__ == "__main__":
    main()
