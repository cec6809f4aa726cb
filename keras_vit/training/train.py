"""`keras-vit train`: fit a registry model on a dataset and write its artifacts."""

import dataclasses
import json
import os
import shutil
import tempfile
import time

import keras

# Weights that decoupled weight decay must leave alone, matched against variable names
# (q/v biases included) and, for layers whose weights have generic names, paths.
NO_WEIGHT_DECAY = ["bias", "gamma", "beta", "class_token", "position_embedding", "relative_position_bias_table", "logit_scale"]
NO_WEIGHT_DECAY_LAYERS = ["continuous_position_bias"]


@dataclasses.dataclass
class TrainResult:
    """What a training run produced."""

    model: keras.Model
    history: dict
    output_dir: str
    val_accuracy: float
    seconds: float


def warmup_cosine_schedule(learning_rate, total_steps, warmup_steps):
    """Linear warmup from 0 to `learning_rate`, then cosine decay to 0 at `total_steps`."""
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


def build_optimizer(learning_rate, weight_decay, total_steps, warmup_steps, clip_norm=1.0, model=None):
    """AdamW on `warmup_cosine_schedule`, global-norm clipping, and no decay on
    biases, norms, class tokens, position embeddings, relative position tables,
    Swin-V2's logit scales and (given the `model`) its continuous-position-bias MLPs."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=warmup_cosine_schedule(learning_rate, total_steps, warmup_steps), weight_decay=weight_decay, beta_1=0.9, beta_2=0.999, global_clipnorm=clip_norm
    )
    skipped = [] if model is None else [
        variable for variable in model.trainable_weights
        if any(f"{layer}/" in variable.path for layer in NO_WEIGHT_DECAY_LAYERS)
    ]
    optimizer.exclude_from_weight_decay(var_list=skipped, var_names=NO_WEIGHT_DECAY)
    return optimizer


def train(
    model="vit_pico8",
    dataset="shapes",
    *,
    data_dir=None,
    image_size=None,
    batch_size=64,
    epochs=15,
    learning_rate=2e-3,
    weight_decay=0.05,
    warmup_epochs=1,
    min_crop_scale=None,
    output_dir="runs/vit_pico8_shapes",
    seed=0,
    steps_per_epoch=None,
    verbose=1,
    model_kwargs=None,
):
    """Trains `model` on `dataset` and writes model.keras, history.json and curves.png.

    `min_crop_scale` is the smallest area fraction of the random resized crop
    (default 0.08, Inception-style; 0.5 for `shapes`, whose object a small crop
    would cut out). Arguments are checked and the data and model built before anything is
    written; the artifacts are written to a temporary folder and moved into
    `output_dir` only when training finished, so a failed run leaves nothing
    half-written behind.

    Returns a `TrainResult`.
    """
    from keras_vit.applications.registry import create_model, get_constructor
    from keras_vit.data import load_dataset

    _check_positive(batch_size=batch_size, epochs=epochs, learning_rate=learning_rate)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    get_constructor(model)  # unknown names fail before any data work
    keras.utils.set_random_seed(seed)
    image_size = image_size or _default_size(model)
    if min_crop_scale is None:
        # A shapes image holds one object: small crops would cut it out and mislabel the crop.
        min_crop_scale = 0.5 if str(dataset).split("/")[0] == "shapes" else 0.08
    common = dict(data_dir=data_dir, image_size=image_size, batch_size=batch_size, seed=seed)
    train_data, info = load_dataset(dataset, "train", training=True, crop_scale=(min_crop_scale, 1.0), **common)
    val_data, val_info = load_dataset(dataset, "validation", training=False, **common)
    if steps_per_epoch:
        train_data = train_data.take(steps_per_epoch)
    steps = steps_per_epoch or max(1, info.num_examples // batch_size)

    network = create_model(
        model,
        input_shape=(image_size, image_size, 3),
        classes=info.num_classes,
        classifier_activation=None,
        **(model_kwargs or {}),
    )
    network.compile(
        optimizer=build_optimizer(learning_rate, weight_decay, steps * epochs, steps * warmup_epochs, model=network),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.time()
    history = network.fit(train_data, validation_data=val_data, epochs=epochs, verbose=verbose)
    seconds = time.time() - start
    history = {key: [float(v) for v in values] for key, values in history.history.items()}
    summary = {
        "model": model,
        "dataset": dataset,
        "image_size": image_size,
        "classes": info.class_names,
        "train_examples": info.num_examples,
        "validation_examples": val_info.num_examples,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "seed": seed,
        "backend": keras.backend.backend(),
        "params": network.count_params(),
        "train_seconds": round(seconds, 1),
        "final_val_accuracy": history["val_accuracy"][-1],
    }
    _write_artifacts(network, history, summary, output_dir)
    return TrainResult(network, history, output_dir, history["val_accuracy"][-1], seconds)


def _write_artifacts(model, history, summary, output_dir):
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".keras-vit-", dir=parent)
    try:
        model.save(os.path.join(staging, "model.keras"))
        with open(os.path.join(staging, "history.json"), "w") as file:
            json.dump(history, file, indent=2)
        with open(os.path.join(staging, "summary.json"), "w") as file:
            json.dump(summary, file, indent=2)
        plot_history(history, os.path.join(staging, "curves.png"), title=f"{summary['model']} on {summary['dataset']}")
        os.makedirs(output_dir, exist_ok=True)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def plot_history(history, path, title=""):
    """Writes a PNG with loss and accuracy curves (train and validation) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(epochs, history[metric], marker="o", label=f"train {metric}")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _default_size(model_name):
    from keras_vit.applications.vit import VIT_VARIANTS

    return VIT_VARIANTS.get(model_name, {}).get("default_size", 224)


def _check_positive(**values):
    for name, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")
