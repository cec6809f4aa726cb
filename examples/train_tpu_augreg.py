"""Train a ViT on ImageNet-1k on a Cloud TPU with an AugReg recipe: a plain Keras script.

On a TPU VM (the dataset prepared once with TFDS into a GCS bucket):

    pip install keras-vit
    python train_tpu_augreg.py --data-dir gs://my-bucket/tensorflow_datasets \
        --model-dir gs://my-bucket/runs/vit_s16 --model vit_s16 --recipe augreg-medium2-reg

`--tpu` names a TPU node (or grpc://ip:8470) when the script runs elsewhere. The run
resumes from `--model-dir/backup` when it is started again after a preemption.
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
    parser.add_argument("--tpu", default=None, help="TPU name or grpc://ip:8470 (default: this TPU VM's)")
    parser.add_argument("--strategy", default="tpu", help="tpu; other get_strategy kinds for a dry run")
    parser.add_argument("--data-dir", required=True, help="TFDS data_dir holding imagenet2012 (gs://...)")
    parser.add_argument("--dataset", default="imagenet2012")
    parser.add_argument("--model-dir", required=True, help="where checkpoints and the model go (gs://...)")
    parser.add_argument("--model", default="vit_s16")
    parser.add_argument("--recipe", default="augreg-medium2-reg")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--per-replica-batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    args = parser.parse_args()

    strategy = distribute.get_strategy(args.strategy, tpu_address=args.tpu)  # ValueError when no TPU answers
    precision = distribute.set_precision("auto", strategy)  # mixed_bfloat16 on TPU
    batch = distribute.global_batch_size(args.per_replica_batch, distribute.num_replicas(strategy))
    recipe = get_recipe(args.recipe)

    one_hot = recipe.augmentation.mixes_labels or recipe.label_smoothing > 0
    label_mode = "categorical" if one_hot else "int"
    train_ds, info = load_dataset(args.dataset, "train", data_dir=args.data_dir, training=True,
                                  image_size=args.image_size, batch_size=batch,
                                  augmentation=recipe.augmentation, label_mode=label_mode)
    val_ds, _ = load_dataset(args.dataset, "validation", data_dir=args.data_dir, image_size=args.image_size,
                             batch_size=batch, label_mode=label_mode, drop_remainder=True)
    steps = args.steps_per_epoch or info.num_examples // batch
    if args.steps_per_epoch:
        train_ds = train_ds.take(steps)
    total_steps = steps * args.epochs

    with strategy.scope():
        model = keras_vit.create_model(args.model, classes=info.num_classes, classifier_activation=None,
                                       input_shape=(args.image_size, args.image_size, 3), **recipe.model_kwargs())
        if one_hot:
            loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(
            optimizer=build_optimizer(recipe.scaled_learning_rate(batch), recipe.weight_decay, total_steps,
                                      round(recipe.warmup_fraction * total_steps), clip_norm=recipe.clip_norm,
                                      model=model),
            loss=loss,
            metrics=["accuracy"],
            **distribute.compile_options(strategy, steps_per_epoch=steps),
        )
    print(f"{args.model} with {args.recipe}: {distribute.num_replicas(strategy)} replicas, global batch {batch}, "
          f"lr {recipe.scaled_learning_rate(batch):.2e}, {precision}")
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        callbacks=[
            # Keras' own backup writes through tf.io.gfile, so it works on gs:// paths.
            keras.callbacks.BackupAndRestore(os.path.join(args.model_dir, "backup"), save_freq="epoch"),
            keras.callbacks.TerminateOnNaN(),
        ],
    )
    model.save(os.path.join(args.model_dir, "model.keras"))


if __name__ == "__main__":
    main()
