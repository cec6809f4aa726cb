"""OWL-ViT B/32 inference at 768 px: keras-vit's detector vs transformers' `OwlViTForObjectDetection`,
and what embedding the text queries once saves.

transformers' default `OwlViTConfig` (B/32, 768 px, 16-token queries) with random weights is saved
and read back by keras-vit's converter, so both run the same network. Batches of `--batch` images
with `--queries` text queries each; keras-vit runs `predict_on_batch` on the current backend (JAX:
jit; TensorFlow: tf.function; torch: eager), transformers eager torch under `no_grad`, alternating
in one process. Then, for `--images` images searched for the same queries: the full detector per
image (queries re-embedded every time) against `embed_queries` once plus the image side per
image (`detect(query_embeddings=...)`'s path). Prints one JSON line.

Usage:

    KERAS_BACKEND=jax python benchmarks/owl_vit_inference.py --batch 1 --iters 5
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from benchmarks.timing import time_alternating  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--images", type=int, default=4, help="images of the embed-once comparison")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()

    import keras
    import torch
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    from keras_vit.applications.owl_vit.detect import class_logits, embed_queries, image_outputs
    from keras_vit.convert import load_transformers_checkpoint

    torch.manual_seed(0)
    reference = OwlViTForObjectDetection(OwlViTConfig()).eval()
    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        ours = load_transformers_checkpoint(directory)
    rng = np.random.default_rng(0)
    size = ours.image_size[0]
    pixels = rng.standard_normal((args.batch, size, size, 3)).astype("float32")
    ids = np.zeros((args.batch, args.queries, 16), "int32")
    ids[..., 0], ids[..., 1:4], ids[..., 4] = 49406, rng.integers(300, 40000, (args.batch, args.queries, 3)), 49407
    mask = (ids > 0).astype("int32")
    inputs = {"images": pixels, "input_ids": ids, "attention_mask": mask}
    torch_inputs = dict(pixel_values=torch.tensor(np.transpose(pixels, (0, 3, 1, 2))),
                        input_ids=torch.tensor(ids.reshape(-1, 16)).long(), attention_mask=torch.tensor(mask.reshape(-1, 16)).long())

    def run_ours():
        keras.ops.convert_to_numpy(ours.predict_on_batch(inputs)["logits"])

    def run_reference():
        with torch.no_grad():
            reference(**torch_inputs).logits.numpy()

    seconds = time_alternating({"keras-vit": run_ours, "transformers": run_reference}, args.iters)
    rate = {name: args.batch / value for name, value in seconds.items()}

    # The same queries searched in several images: re-embedded per image, or embedded once.
    one = {key: value[:1] for key, value in inputs.items()}
    tokens = {"input_ids": ids[0], "attention_mask": mask[0]}

    def per_image():
        for _ in range(args.images):
            keras.ops.convert_to_numpy(ours.predict_on_batch(one)["logits"])

    def embed_once():
        embeddings = embed_queries(ours, tokens)
        for _ in range(args.images):
            class_logits(ours, image_outputs(ours, pixels[:1])["image_features"], embeddings)

    reuse = time_alternating({"per_image": per_image, "embed_once": embed_once}, args.iters)
    print(json.dumps({
        "backend": keras.backend.backend(), "batch": args.batch, "size": size, "queries": args.queries,
        "iters": args.iters, "keras_vit_img_s": round(rate["keras-vit"], 3),
        "transformers_img_s": round(rate["transformers"], 3), "ratio": round(rate["keras-vit"] / rate["transformers"], 3),
        "images": args.images, "queries_per_image_s": round(reuse["per_image"], 3),
        "queries_once_s": round(reuse["embed_once"], 3), "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
