"""Profiles one Swin step on the torch backend: what the masks and the bias gather cost.

Swin's shifted-window mask and the relative-position index are NumPy arrays
built once per input shape in `build`; per step, only the gather of the
learned bias table (a weight, so it must run every training step) and the
addition of the precomputed mask remain. This script runs the torch profiler
over one inference step and one training step of a Swin model (batch 8,
random weights) and prints:

* the ops that take the most time, and
* every op that gathers the bias (index_select / embedding and its backward)
  or that would build a mask (comparisons, masked_fill, arange), with their
  call counts and share of the step.

Torch runs eagerly, so the profile lists each op of the step as it runs;
TensorFlow and JAX would fold the NumPy constants into their graphs.

Usage:

    python benchmarks/profile_swin.py --model swin_t --batch 8
"""

import argparse
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

GATHER_OPS = ("aten::index_select", "aten::embedding", "aten::embedding_dense_backward", "aten::take", "aten::gather")
MASK_OPS = ("aten::ne", "aten::eq", "aten::ge", "aten::lt", "aten::gt", "aten::masked_fill", "aten::arange")


def profile_step(step):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        step()
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    return events, total


def report(title, events, total, top):
    print(f"\n## {title}: {total / 1000:.1f} ms of op time\n")
    print("| op | calls | share |\n|---|---:|---:|")
    for event in sorted(events, key=lambda event: -event.self_cpu_time_total)[:top]:
        print(f"| {event.key} | {event.count} | {100 * event.self_cpu_time_total / total:.2f}% |")
    labels = (
        ("bias gather", GATHER_OPS),
        ("comparisons, masked_fill, arange (keras' ops.take adds one `lt` per gather; a mask built per step would add more)", MASK_OPS),
    )
    for label, names in labels:
        found = [event for event in events if event.key in names]
        share = sum(event.self_cpu_time_total for event in found) / total
        listed = ", ".join(f"{event.key} x{event.count}" for event in found) or "none"
        print(f"\n{label}: {listed}; {100 * share:.2f}% of the step")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="swin_t")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import torch

    import keras_vit

    model = keras_vit.create_model(args.model, include_preprocessing=False, classifier_activation=None)
    size = model.input_shape[1]
    images = np.random.RandomState(0).rand(args.batch, size, size, 3).astype("float32")
    labels = np.arange(args.batch) % 1000
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(2):  # warm up both paths
        model.predict_on_batch(images)
        model.train_on_batch(images, labels)
    print(f"# {args.model}, batch {args.batch}, {size}px, torch {torch.__version__}, {torch.get_num_threads()} threads")
    report("inference step", *profile_step(lambda: model.predict_on_batch(images)), args.top)
    report("training step", *profile_step(lambda: model.train_on_batch(images, labels)), args.top)


if __name__ == "__main__":
    main()
