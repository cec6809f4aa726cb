"""Peak memory of one forward pass: Swin-T against ViT-S/16 as the image grows.

Window attention costs `M^2 * H * W` per layer, global attention `(H * W)^2`:
doubling the image side should multiply Swin's activation memory by about 4
and ViT's by about 16 once attention dominates. This script measures it on the
JAX backend, where XLA states the buffers a compiled program needs:

* **XLA temp**: `jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes`,
  the peak of the intermediate buffers XLA's buffer assignment keeps alive at
  once during the forward pass (activations, attention logits), excluding the
  weights and the input (`args`) and the output.
* **measured peak**: the rise of the process' peak resident memory (VmHWM,
  reset through `/proc/self/clear_refs` after compilation) during the first
  run of the compiled forward pass: what the operating system saw, weights
  excluded (they are resident before the reset). Only the first run counts:
  later runs reuse pages the allocator already holds and show almost nothing.

Each (model, size) runs in its own subprocess so one measurement cannot leak
into the next. Models have random weights, batch 1, float32, no head
preprocessing; nothing is downloaded.

Usage:

    python benchmarks/memory.py                       # swin_t, vit_s16 at 224, 448, 896
    python benchmarks/memory.py --models swin_t --sizes 224,448 --json memory.jsonl
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

MIB = 2**20


def _peak_rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (Linux only).")


def _reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure_one(name, size):
    """One record for model `name` at `size` px (run in a fresh process, JAX backend)."""
    import jax
    import keras
    import numpy as np

    import keras_vit
    from keras_vit.evaluation.complexity import measure

    if keras.backend.backend() != "jax":
        raise ValueError("benchmarks/memory.py reads XLA's memory analysis: run it with KERAS_BACKEND=jax.")
    model = keras_vit.create_model(name, input_shape=(size, size, 3), include_preprocessing=False)
    images = np.random.RandomState(0).rand(1, size, size, 3).astype("float32")
    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    def forward(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    compiled = jax.jit(forward).lower(trainable, non_trainable, images).compile()
    analysis = compiled.memory_analysis()
    trainable, non_trainable, images = jax.block_until_ready(jax.device_put((trainable, non_trainable, images)))
    _reset_peak_rss()
    baseline = _peak_rss_bytes()
    jax.block_until_ready(compiled(trainable, non_trainable, images))
    measured = _peak_rss_bytes() - baseline
    complexity = measure(model)
    return {
        "model": name,
        "size": size,
        "params": model.count_params(),
        "attention_elements": complexity.attention_elements,
        "xla_temp_mib": analysis.temp_size_in_bytes / MIB,
        "xla_args_mib": analysis.argument_size_in_bytes / MIB,
        "measured_peak_mib": measured / MIB,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
    }


def run_all(models, sizes):
    records = []
    for name in models:
        for size in sizes:
            command = [sys.executable, os.path.abspath(__file__), "--one", f"{name}:{size}"]
            env = dict(os.environ, KERAS_BACKEND="jax")
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"{name} at {size}px failed:\n{result.stderr[-3000:]}")
            record = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"  {name} {size}px: temp {record['xla_temp_mib']:.1f} MiB, "
                  f"measured {record['measured_peak_mib']:.1f} MiB", file=sys.stderr)
            records.append(record)
    return records


def markdown(records):
    first = {}
    lines = [
        "| model | image | attention elements | XLA temp MiB | x vs smallest | measured peak MiB | x vs smallest | weights+input MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for record in records:
        base = first.setdefault(record["model"], record)
        lines.append(
            f"| {record['model']} | {record['size']} | {record['attention_elements']:,} | "
            f"{record['xla_temp_mib']:.1f} | {record['xla_temp_mib'] / base['xla_temp_mib']:.1f} | "
            f"{record['measured_peak_mib']:.1f} | {record['measured_peak_mib'] / base['measured_peak_mib']:.1f} | "
            f"{record['xla_args_mib']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="swin_t,vit_s16")
    parser.add_argument("--sizes", default="224,448,896")
    parser.add_argument("--json", help="append one JSON record per line to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: NAME:SIZE in this process
    args = parser.parse_args(argv)
    if args.one:
        name, size = args.one.split(":")
        print(json.dumps(measure_one(name, int(size))))
        return
    records = run_all(args.models.split(","), [int(size) for size in args.sizes.split(",")])
    if args.json:
        with open(args.json, "a") as file:
            for record in records:
                file.write(json.dumps(record) + "\n")
    print(markdown(records))


if __name__ == "__main__":
    main()
