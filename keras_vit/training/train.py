"""`keras-vit train`: fit a registry model on a dataset and write its artifacts.

`train` dispatches on the model's task (`ModelSpec.task`) to the trainer registered
for it; `train_classifier` is the classification trainer. A new task registers its
own with `register_trainer`.
"""

import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import shutil
import time

import keras

from keras_vit.applications.registry import create_model, list_models, model_info
from keras_vit.training.callbacks import STATE_FILE, StopOnNonFiniteLoss, TrainingCheckpoint, optimizer_steps, restore_checkpoint
from keras_vit.training.distribute import (
    check_global_batch,
    compile_options,
    num_replicas,
    read_tf_config,
    select_distribution,
    set_precision,
)
from keras_vit.applications.saving import ClassifierMetadata, save_classifier
from keras_vit.training.pretrained import checkpoint_kind, load_pretrained
from keras_vit.training.pretrained import freeze_backbone as freeze_backbone_layers
from keras_vit.training.recipes import get_recipe
from keras_vit.training.run_folder import LOCK_FILE, RunFolder, read_json, write_json_atomically

# Keras' names of biases (q/v biases included) and norm scales/offsets: never decayed.
GENERIC_NO_WEIGHT_DECAY = ("bias", "gamma", "beta")


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


def build_optimizer(
    learning_rate, weight_decay, total_steps, warmup_steps, clip_norm=1.0, model=None, ema_momentum=None, beta_2=0.999,
    no_weight_decay=None, optimizer="adamw", momentum=0.9,
):
    """AdamW (or SGD with momentum, `optimizer="sgd"`) on `warmup_cosine_schedule`,
    global-norm clipping, and no decay on biases, norms and the weights the model
    declares (`ModelSpec.no_weight_decay`: class tokens, position embeddings, relative
    position tables, Swin-V2's logit scales and continuous-position-bias MLPs, ...).

    `no_weight_decay` is a list of regexes on variable paths (default: every registered
    model's); path patterns need the `model`, name patterns apply without it.
    `ema_momentum` keeps an exponential moving average of the weights, which
    replaces them when `fit` ends."""
    common = dict(
        learning_rate=warmup_cosine_schedule(learning_rate, total_steps, warmup_steps),
        weight_decay=weight_decay or None,
        global_clipnorm=clip_norm,
        use_ema=ema_momentum is not None,
        ema_momentum=0.99 if ema_momentum is None else ema_momentum,
    )
    if optimizer == "sgd":
        optimizer = keras.optimizers.SGD(momentum=momentum, **common)
    elif optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(beta_1=0.9, beta_2=beta_2, **{**common, "weight_decay": weight_decay})
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}.")
    if optimizer.weight_decay is None:  # SGD without decay: nothing to exclude
        return optimizer
    if no_weight_decay is None:
        no_weight_decay = sorted({pattern for name in list_models() for pattern in model_info(name).no_weight_decay})
    skipped = [] if model is None else [
        variable for variable in model.trainable_weights if any(re.search(p, variable.path) for p in no_weight_decay)
    ]
    optimizer.exclude_from_weight_decay(var_list=skipped, var_names=[*GENERIC_NO_WEIGHT_DECAY, *no_weight_decay])
    return optimizer


_TRAINERS = {}


def register_trainer(task, trainer):
    """Makes `trainer(model, dataset, **options)` the one `train` uses for models of `task`."""
    _TRAINERS[task] = trainer
    return trainer


def train(model="vit_pico8", dataset="shapes", **options):
    """Trains registry `model` on `dataset` with the trainer of the model's task.

    Classification models go to `train_classifier` (its docstring lists the options).
    Returns a `TrainResult`.
    """
    task = model_info(model).task
    if task not in _TRAINERS:
        raise ValueError(
            f"{model!r} is a {task} model, and keras-vit has no trainer for {task} yet; "
            f"trainers exist for: {', '.join(sorted(_TRAINERS))}."
        )
    trainer = _TRAINERS[task]
    parameters = inspect.signature(trainer).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            taken = ", ".join(name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
            raise ValueError(f"{unknown} are not options of {task} training ({model!r}); {trainer.__name__} takes: {taken}.")
    return trainer(model, dataset, **options)


def train_classifier(
    model="vit_pico8",
    dataset="shapes",
    *,
    recipe="baseline",
    data_dir=None,
    image_size=None,
    batch_size=64,
    epochs=None,
    weights=None,
    keep_head=False,
    freeze_backbone=False,
    learning_rate=None,
    weight_decay=None,
    warmup_epochs=None,
    label_smoothing=None,
    ema_momentum=None,
    min_crop_scale=None,
    output_dir="runs/vit_pico8_shapes",
    overwrite=False,
    seed=0,
    steps_per_epoch=None,
    checkpoint_every=None,
    strategy="auto",
    tpu_address=None,
    precision="float32",
    verbose=1,
    model_kwargs=None,
):
    """Trains a classifier on `dataset` with a recipe; writes model.keras, history.json, summary.json, curves.png.

    Args:
        model: registry name.
        dataset: "shapes", a prepared TFDS name, or a folder of class sub-folders.
        recipe: a name from `list_recipes()` or a `Recipe`: optimizer, schedule,
            augmentation, label smoothing and model regularization.
        batch_size: global batch size.
        epochs: default `default_epochs`: the recipe's, or more on a small
            dataset (at least the recipe's `min_steps` optimizer steps).
        weights: start from this checkpoint (a transformers folder, a timm
            `.safetensors`, a keras-vit run folder or `.keras`, a `.weights.h5`)
            of the same architecture; the head is new, sized for the dataset.
        keep_head: keep the checkpoint's head too (same classes needed).
        freeze_backbone: train the head alone (a linear probe).
        learning_rate: peak learning rate (default: the recipe's, scaled
            linearly from its reference batch to `batch_size`).
        weight_decay, label_smoothing, ema_momentum: override the recipe's.
        warmup_epochs: linear warmup (default: the recipe's share of the run).
        min_crop_scale: smallest area fraction of the random resized crop
            (default `default_min_crop_scale`: 0.08, Inception-style, but 0.8
            for images of at most 64 px, `shapes` included, where a small crop
            keeps a few blurred pixels).
        output_dir: the run folder (see below).
        overwrite: replace a finished run in `output_dir`, or discard the
            checkpoint of an interrupted run with other settings there.
        steps_per_epoch: cap on the training steps of an epoch.
        checkpoint_every: also checkpoint every this many steps (epochs always are).
        strategy: where to train. TensorFlow backend: a kind for
            `get_strategy` ("auto", "tpu", "gpu", "multiworker", "mirrored",
            "cpu") or a `tf.distribute.Strategy`. JAX: "auto" or "data"
            (data parallel over all devices when there are several), "model"
            (the model's layout map over all devices), "cpu" (one device).
            PyTorch: "auto" or "cpu" (one device).
        tpu_address: the TPU for `strategy="tpu"` (default: TPU_NAME / this VM's).
        precision: "float32", "mixed_bfloat16", "mixed_float16" or "auto"
            (bfloat16 on TPU, float16 with loss scaling on GPU, float32 on CPU).
        model_kwargs: more constructor arguments; they override the recipe's
            `dropout_rate` / `drop_path_rate`.

    Arguments are checked and the data and model built before anything is
    written. One process at a time writes `output_dir` (a second one gets a
    ValueError), and a folder that holds a finished run (`summary.json`) is
    refused unless `overwrite`. Progress is checkpointed to
    `output_dir/checkpoint` (weights, optimizer state, epoch and step); running
    the same command again after an interruption resumes from it, with the
    batches an uninterrupted run would have seen (each epoch's order and
    augmentation follow from `(seed, epoch)`). The artifacts are written to a
    staging folder inside `output_dir` and moved into place when training
    finished, `summary.json` last. A loss that becomes NaN raises
    `NonFiniteLossError` and keeps the last good checkpoint.

    Returns a `TrainResult`.
    """
    from keras_vit.data import default_min_crop_scale, image_side, load_dataset, load_epochs

    _check_positive(batch_size=batch_size)
    if (keep_head or freeze_backbone) and weights is None:
        raise ValueError("keep_head and freeze_backbone (--keep-head, --freeze-backbone) need weights (--weights PATH).")
    _check_positive_or_none(
        epochs=epochs, image_size=image_size, steps_per_epoch=steps_per_epoch, checkpoint_every=checkpoint_every
    )
    recipe = get_recipe(recipe)
    spec = model_info(model)  # unknown names fail before any data work
    distribution = select_distribution(strategy, tpu_address, model=model)
    check_global_batch(batch_size, num_replicas(distribution))
    learning_rate = recipe.scaled_learning_rate(batch_size) if learning_rate is None else learning_rate
    weight_decay = recipe.weight_decay if weight_decay is None else weight_decay
    label_smoothing = recipe.label_smoothing if label_smoothing is None else label_smoothing
    ema_momentum = recipe.ema_momentum if ema_momentum is None else ema_momentum
    _check_positive(learning_rate=learning_rate)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    if ema_momentum is not None and not 0 < ema_momentum < 1:
        raise ValueError(f"ema_momentum must be in (0, 1), e.g. 0.9999, got {ema_momentum}.")
    keras.utils.set_random_seed(seed)
    if weights is not None:
        checkpoint_kind(weights)  # a path that is no checkpoint fails before any data work
    image_size = image_size or recipe.image_size or default_image_size(model)
    chosen = []
    if min_crop_scale is None:
        side = image_side(dataset, data_dir)
        min_crop_scale = default_min_crop_scale(dataset, side)
        chosen.append(f"min crop scale {min_crop_scale:g}" + (f" (images of {side} px)" if side else ""))
    one_hot = recipe.augmentation.mixes_labels or label_smoothing > 0
    common = dict(
        data_dir=data_dir, image_size=image_size, batch_size=batch_size, seed=seed,
        label_mode="categorical" if one_hot else "int",
    )
    epoch_data, info = load_epochs(
        dataset, "train", crop_scale=(min_crop_scale, 1.0), augmentation=recipe.augmentation, **common
    )
    val_data, val_info = load_dataset(dataset, "validation", training=False, **common)
    steps = min(steps_per_epoch or math.inf, info.num_examples // batch_size)
    if epochs is None:
        epochs = default_epochs(recipe, steps)
        chosen.append(f"{epochs} epochs ({epochs * steps:,} steps of {steps}; recipe {recipe.name!r})")
    if verbose and chosen:
        print(f"Defaults for {dataset!r} ({info.num_examples:,} training images): {', '.join(chosen)}.")
    total_steps = steps * epochs
    if warmup_epochs is None:
        warmup_steps = round(recipe.warmup_fraction * total_steps)
    else:
        warmup_steps = round(steps * warmup_epochs)

    previous_policy = keras.config.dtype_policy()
    precision = set_precision(precision, distribution)
    try:
        with distribution.scope() if distribution is not None else contextlib.nullcontext():
            network = create_training_model(
                model, f"recipe {recipe.name!r} or model_kwargs", input_shape=(image_size, image_size, 3), classes=info.num_classes,
                classifier_activation=None, **{**recipe.model_kwargs(), **(model_kwargs or {})},
            )
            if weights is not None:
                loaded = load_pretrained(network, model, weights, keep_head=keep_head, class_names=info.class_names)
                if verbose:
                    print(f"Loaded {loaded}.")
            if freeze_backbone:
                freeze_backbone_layers(network)
            if one_hot:
                loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)
            else:
                loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            network.compile(
                optimizer=build_optimizer(
                    learning_rate, weight_decay, total_steps, warmup_steps, clip_norm=recipe.clip_norm, model=network,
                    ema_momentum=ema_momentum, beta_2=recipe.beta_2, no_weight_decay=spec.no_weight_decay,
                    optimizer=recipe.optimizer, momentum=recipe.momentum,
                ),
                loss=loss,
                metrics=["accuracy"],
                **compile_options(distribution, steps),
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    summary = {
        "model": model,
        "dataset": dataset,
        "recipe": recipe.name,
        "image_size": image_size,
        "classes": info.class_names,
        "train_examples": info.num_examples,
        "validation_examples": val_info.num_examples,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_steps": warmup_steps,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "ema_momentum": ema_momentum,
        "weights": None if weights is None else os.fspath(weights),
        "keep_head": keep_head,
        "freeze_backbone": freeze_backbone,
        "min_crop_scale": min_crop_scale,
        "augmentation": dataclasses.asdict(recipe.augmentation),
        "seed": seed,
        "backend": keras.backend.backend(),
        "replicas": num_replicas(distribution),
        "precision": precision,
        "params": network.count_params(),
        "trainable_params": sum(int(math.prod(variable.shape)) for variable in network.trainable_weights),
    }
    worker = _worker_index(distribution)
    # Multi-worker runs: every worker checkpoints (to resume in step), only the first writes the artifacts.
    checkpoint_dir = os.path.join(output_dir, "checkpoint" if not worker else f"checkpoint-worker{worker}")
    lock_name = LOCK_FILE if not worker else f"{LOCK_FILE}-worker{worker}"
    with RunFolder(output_dir, summary, overwrite=overwrite, lock_name=lock_name, artifacts=not worker) as run_folder:
        state = _resume(network, checkpoint_dir, summary, overwrite)
        start = time.time()
        if state is not None and verbose:
            print(f"Resuming {output_dir!r} after {state['epoch']} epochs + {state['step']} steps.")
        data = dict(epoch_data=epoch_data, val_data=val_data, steps=steps)
        history = _fit(network, data, epochs, state, checkpoint_dir, checkpoint_every, verbose)
        seconds = time.time() - start
        summary.update(
            train_seconds=round(seconds, 1),
            optimizer_steps=optimizer_steps(network),
            resumed_from=None if state is None else {"epoch": state["epoch"], "step": state["step"]},
            final_val_accuracy=history["val_accuracy"][-1],
        )
        if not worker:
            run_folder.write_artifacts({
                "model.keras": lambda path: save_classifier(
                    network, path, ClassifierMetadata(class_names=info.class_names, model=model, image_size=image_size)
                ),
                "history.json": lambda path: _write_json(path, history),
                "curves.png": lambda path: plot_history(history, path, title=f"{model} on {dataset}"),
                "summary.json": lambda path: _write_json(path, summary),
            })
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return TrainResult(network, history, output_dir, history["val_accuracy"][-1], seconds)


# Settings that must not change between an interrupted run and its resumption.
_RUN_KEYS = ("model", "dataset", "recipe", "image_size", "epochs", "steps_per_epoch", "batch_size", "learning_rate",
             "weight_decay", "label_smoothing", "ema_momentum", "weights", "keep_head", "freeze_backbone",
             "min_crop_scale", "augmentation", "seed", "params")


def _resume(network, checkpoint_dir, summary, overwrite=False, run_keys=None):
    """Loads the checkpoint of an interrupted run of the same settings, if any; records the settings.

    A checkpoint of other settings, or one whose run record is missing or damaged, is refused
    (or, with `overwrite`, deleted): a run never silently starts over beside a valid checkpoint."""
    run = {key: summary[key] for key in (run_keys or _RUN_KEYS)}
    run_path = os.path.join(checkpoint_dir, "run.json")
    has_checkpoint = os.path.exists(os.path.join(checkpoint_dir, STATE_FILE))
    if overwrite and os.path.isdir(checkpoint_dir):
        shutil.rmtree(checkpoint_dir)
    elif has_checkpoint or os.path.exists(run_path):
        way_out = (
            "Rerun the command that started it to resume, pass another --output-dir (output_dir), or pass "
            "--overwrite (overwrite=True) to discard that checkpoint and start over."
        )
        if not os.path.exists(run_path):
            raise ValueError(
                f"{checkpoint_dir!r} holds a checkpoint but no run record (run.json), so its settings are unknown "
                f"and it cannot be resumed safely. {way_out}"
            )
        saved = read_json(run_path, "The run record of the checkpoint", way_out)
        if not isinstance(saved, dict):
            raise ValueError(f"The run record {run_path!r} is not a JSON object. {way_out}")
        changed = {key: (saved.get(key), value) for key, value in run.items() if saved.get(key) != value}
        if changed:
            details = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise ValueError(
                f"{checkpoint_dir!r} holds the checkpoint of an interrupted run with other settings ({details}). "
                f"{way_out}"
            )
        state = restore_checkpoint(network, checkpoint_dir)
        if state is not None:
            return state
    os.makedirs(checkpoint_dir, exist_ok=True)
    write_json_atomically(run_path, run)
    return None


class _StopAfterOneEpoch(keras.callbacks.Callback):
    """Ends `fit` after one epoch: `_fit` calls `fit` once per epoch, with that epoch's data."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


@contextlib.contextmanager
def _keep_training_weights(optimizer):
    """Keeps `fit` from replacing the weights by their moving average (`use_ema`) when it returns:
    that must happen once, after the last epoch."""
    optimizer.finalize_variable_values = lambda var_list: None
    try:
        yield
    finally:
        del optimizer.finalize_variable_values


def _fit(network, data, epochs, state, checkpoint_dir, checkpoint_every, verbose, metric_callbacks=()):
    """Fits from the checkpoint `state` (or the start) to `epochs`, one `fit` per epoch on
    `data["epoch_data"](epoch)`; returns the whole history.

    Epoch `e`'s batches depend only on `(seed, e)`, so a resumed run trains on exactly the
    batches the interrupted one had left. `metric_callbacks` add entries to the epoch logs
    (e.g. COCO mAP) before the checkpoint records them."""
    epoch, step, past = (0, 0, []) if state is None else (state["epoch"], state["step"], state["history"])
    steps = data["steps"]
    checkpoint = TrainingCheckpoint(checkpoint_dir, checkpoint_every, past, steps_per_epoch=steps, initial_step=step)
    callbacks = [StopOnNonFiniteLoss(checkpoint_dir), *metric_callbacks, checkpoint, _StopAfterOneEpoch()]
    for current in range(epoch, epochs):
        batches = data["epoch_data"](current).take(steps)
        if current == epoch and step:  # the interrupted epoch: the batches it had left
            batches = batches.skip(step)
        last = current == epochs - 1
        with contextlib.nullcontext() if last else _keep_training_weights(network.optimizer):
            network.fit(batches, validation_data=data["val_data"], initial_epoch=current, epochs=epochs,
                        callbacks=callbacks, verbose=verbose, shuffle=False)
    if epoch >= epochs:  # resumed after the last epoch (the artifacts were not written): no fit applied the average
        network.optimizer.finalize_variable_values(network.trainable_weights)
    keys = sorted({key for logs in checkpoint.history for key in logs})
    return {key: [logs.get(key) for logs in checkpoint.history] for key in keys}


def _worker_index(distribution):
    """0 for the chief (or a single-host run), else this worker's index from TF_CONFIG."""
    if distribution is None or "MultiWorker" not in type(distribution).__name__:
        return 0
    config = read_tf_config(required=True)
    task = config["task"]
    return 0 if task["type"] == "chief" else int(task["index"]) + ("chief" in config["cluster"])


def create_training_model(name, source, **kwargs):
    """`create_model(name, **kwargs)`; an argument the model does not take (e.g.
    `drop_path_rate` for a ResNet) is a ValueError naming its `source`."""
    unknown = sorted(set(kwargs) - set(model_info(name).arguments()))
    if unknown:
        raise ValueError(
            f"Model {name!r} does not take the argument(s) {', '.join(unknown)}, which {source} set. "
            f"Arguments given: {sorted(kwargs)}."
        )
    return create_model(name, **kwargs)


def _write_json(path, data):
    with open(path, "w") as file:
        json.dump(data, file, indent=2)


def plot_history(history, path, title="", metrics=("loss", "accuracy")):
    """Writes a PNG with one panel per metric (default loss and accuracy), train and validation per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
    for axis, metric in zip(axes, metrics):
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


def default_epochs(recipe, steps_per_epoch):
    """The recipe's epochs, or more when an epoch is short: at least `recipe.min_steps` optimizer
    steps in all (`baseline`: 1,800, which `shapes` reaches in its 20 epochs of 93 steps; a folder
    of 1,400 images at batch 64 gets 82 epochs instead of 20)."""
    return max(recipe.epochs, math.ceil(recipe.min_steps / steps_per_epoch))


def default_image_size(model_name):
    """The input side a registry model was designed for (`ModelSpec.default_size`)."""
    return model_info(model_name).default_size


def _check_positive(**values):
    for name, value in values.items():
        if value is None or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be positive, got {value}.")


def _check_positive_or_none(**values):
    _check_positive(**{name: value for name, value in values.items() if value is not None})


register_trainer("classification", train_classifier)
