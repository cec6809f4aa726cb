"""DETR-R50 inference at 512 px: keras-vit's `detr_r50` vs transformers' `DetrForObjectDetection`.

Both with random weights and the same architecture (transformers' own ResNet-50 backbone,
`use_timm_backbone=False`), batch `--batch` of 512x512 images, float32, CPU. keras-vit runs
`predict_on_batch` on the current backend (JAX: jit; TensorFlow: tf.function; torch: eager);
transformers runs eager torch under `no_grad`, in the same process, alternating, so the ratio
is measured on the same machine state. Prints one JSON line with img/s and the ratio.

Usage:

    KERAS_BACKEND=jax python benchmarks/detr_inference.py --iters 5
"""

import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from benchmarks.timing import time_alternating  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()

    import keras
    import torch
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    import keras_vit

    ours = keras_vit.create_model("detr_r50", include_preprocessing=False)
    config = DetrConfig(backbone_config=ResNetConfig(out_features=["stage4"]), use_timm_backbone=False, num_labels=91)
    reference = DetrForObjectDetection(config).eval()
    pixels = np.random.default_rng(0).standard_normal((args.batch, args.size, args.size, 3)).astype("float32")
    inputs = {"images": pixels, "pixel_mask": np.ones(pixels.shape[:3], "float32")}
    torch_pixels = torch.tensor(np.transpose(pixels, (0, 3, 1, 2)))

    def run_ours():
        keras.ops.convert_to_numpy(ours.predict_on_batch(inputs)["pred_boxes"])

    def run_reference():
        with torch.no_grad():
            reference(pixel_values=torch_pixels).pred_boxes.numpy()

    start = time.perf_counter()
    run_ours()
    first_call = time.perf_counter() - start
    seconds = time_alternating({"keras-vit": run_ours, "transformers": run_reference}, args.iters)
    rate = {name: args.batch / value for name, value in seconds.items()}
    print(json.dumps({
        "backend": keras.backend.backend(), "batch": args.batch, "size": args.size, "iters": args.iters,
        "first_call_s": round(first_call, 1), "keras_vit_img_s": round(rate["keras-vit"], 3),
        "transformers_img_s": round(rate["transformers"], 3),
        "ratio": round(rate["keras-vit"] / rate["transformers"], 3), "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
