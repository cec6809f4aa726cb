"""Images/second of keras-vit's training input pipeline, next to a model's training step.

Writes a folder of synthetic JPEGs the size of an average ImageNet image
(500x375, smooth random colour fields so they compress like photographs),
then times `load_dataset(folder, training=True, image_size=224,
augmentation=recipe.augmentation)` for each recipe: decode, random resized
crop, flip, the recipe's per-image RandAugment and random erasing, and its
per-batch MixUp/CutMix. The same run times `model.train_on_batch` of a
model at 224 px on the current backend, so the table tells whether the
input pipeline or the model bounds training on this machine.

tf.data runs on all CPU cores (`AUTOTUNE`); the model step then shares them,
so the two numbers are upper bounds of a real run, where both compete.

Usage:

    KERAS_BACKEND=tensorflow python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --recipes baseline,augreg-strong2,swin --model vit_s16 --batches 8
"""

import argparse
import os
import platform
import tempfile
import time

import numpy as np


def write_jpegs(folder, classes=4, per_class=32, size=(375, 500), seed=0):
    """`classes` sub-folders of `per_class` smooth random JPEGs of `size` (height, width)."""
    import tensorflow as tf

    random = np.random.RandomState(seed)
    for label in range(classes):
        os.makedirs(os.path.join(folder, f"class{label}"), exist_ok=True)
        for index in range(per_class):
            coarse = random.rand(size[0] // 25, size[1] // 25, 3).astype("float32") * 255
            image = tf.image.resize(coarse[None], size, method="bicubic")[0]
            image += random.randn(*size, 3).astype("float32") * 8  # texture, so the JPEG is not trivially small
            data = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90)
            tf.io.write_file(os.path.join(folder, f"class{label}", f"{index}.jpg"), data)


def pipeline_images_per_second(folder, recipe_name, image_size, batch_size, batches):
    from keras_vit.data import load_dataset
    from keras_vit.training import get_recipe

    recipe = get_recipe(recipe_name)
    data, _ = load_dataset(folder, "train", training=True, image_size=image_size, batch_size=batch_size,
                           augmentation=recipe.augmentation, label_mode="categorical")
    iterator = iter(data.repeat())
    for _ in range(2):  # warm up: tracing, file cache, autotuning
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
    images.numpy()
    return batches * batch_size / (time.perf_counter() - start)


def model_train_images_per_second(model_name, image_size, batch_size, steps):
    import keras

    import keras_vit

    model = keras_vit.create_model(model_name, input_shape=(image_size, image_size, 3), classes=1000,
                                   classifier_activation=None)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    x = np.random.RandomState(0).rand(batch_size, image_size, image_size, 3).astype("float32") * 255
    y = np.eye(1000, dtype="float32")[np.arange(batch_size)]
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return batch_size / float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="baseline,augreg-strong2,swin")
    parser.add_argument("--model", default="vit_s16", help="registry name; '' skips the model step")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64, help="pipeline batch")
    parser.add_argument("--model-batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=8, help="timed pipeline batches per recipe")
    parser.add_argument("--steps", type=int, default=3, help="timed model steps")
    args = parser.parse_args()

    import keras

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Keras backend {keras.backend.backend()}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        write_jpegs(folder)
        for name in args.recipes.split(","):
            rows.append((f"input pipeline, recipe {name}", pipeline_images_per_second(
                folder, name, args.image_size, args.batch_size, args.batches)))
    if args.model:
        rows.append((f"{args.model} training step (batch {args.model_batch_size})", model_train_images_per_second(
            args.model, args.image_size, args.model_batch_size, args.steps)))
    print(f"\n| what ({args.image_size} px) | images/s |\n|---|---|")
    for what, rate in rows:
        print(f"| {what} | {rate:.1f} |")


if __name__ == "__main__":
    main()
