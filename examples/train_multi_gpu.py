"""Train a Swin or ViT on the GPUs of one machine (tf.distribute.MirroredStrategy): a plain Keras script.

    python train_multi_gpu.py --dataset /data/my_images --model swin_t --recipe swin \
        --per-replica-batch 64 --epochs 100 --output-dir runs/swin_t

`--dataset` is a folder with one sub-folder of images per class, or a prepared TFDS name.
Mixed float16 with loss scaling is used on GPUs (float32 on a CPU dry run:
`--strategy cpu`). Started again after an interruption, it resumes from the last epoch.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit.data import load_dataset  # noqa: E402
from keras_vit.training import build_optimizer, distribute, get_recipe  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir")
    parser.add_argument("--strategy", default="gpu", help="gpu (all visible GPUs), or cpu for a dry run")
    parser.add_argument("--model", default="swin_t")
    parser.add_argument("--recipe", default="swin")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--per-replica-batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--output-dir", default="runs/multi_gpu")
    args = parser.parse_args()

    strategy = distribute.get_strategy(args.strategy)
    distribute.set_precision("auto", strategy)  # mixed_float16 on GPUs; compile adds loss scaling
    batch = distribute.global_batch_size(args.per_replica_batch, distribute.num_replicas(strategy))
    recipe = get_recipe(args.recipe)

    common = dict(data_dir=args.data_dir, image_size=args.image_size, batch_size=batch, label_mode="categorical")
    train_ds, info = load_dataset(args.dataset, "train", training=True, augmentation=recipe.augmentation, **common)
    val_ds, _ = load_dataset(args.dataset, "validation", **common)
    steps = args.steps_per_epoch or info.num_examples // batch
    if args.steps_per_epoch:
        train_ds = train_ds.take(steps)
    total_steps = steps * args.epochs

    with strategy.scope():
        model = keras_vit.create_model(args.model, classes=info.num_classes, classifier_activation=None,
                                       input_shape=(args.image_size, args.image_size, 3), **recipe.model_kwargs())
        model.compile(
            optimizer=build_optimizer(recipe.scaled_learning_rate(batch), recipe.weight_decay, total_steps,
                                      round(recipe.warmup_fraction * total_steps), clip_norm=recipe.clip_norm,
                                      model=model),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
            metrics=["accuracy"],
            **distribute.compile_options(strategy, steps_per_epoch=steps),
        )
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        callbacks=[
            keras.callbacks.BackupAndRestore(os.path.join(args.output_dir, "backup")),
            keras.callbacks.TerminateOnNaN(),
        ],
    )
    model.save(os.path.join(args.output_dir, "model.keras"))
    print(f"wrote {args.output_dir}/model.keras")


if __name__ == "__main__":
    main()
