"""`keras-vit train` for detectors: DETR's recipe (AdamW, a 10x lower backbone learning rate,
gradient clipping 0.1, one learning-rate drop), COCO mAP each epoch, the same run folder,
checkpoints and resumption as the classification trainer."""

import contextlib
import math
import os
import shutil
import time

import keras

from keras_vit.applications.registry import model_info
from keras_vit.applications.saving import ClassifierMetadata, save_classifier
from keras_vit.training.callbacks import optimizer_steps
from keras_vit.training.distribute import check_global_batch, compile_options, num_replicas, select_distribution, set_precision
from keras_vit.training.run_folder import LOCK_FILE, RunFolder
from keras_vit.training.pretrained import checkpoint_kind, load_pretrained
from keras_vit.training.train import (
    GENERIC_NO_WEIGHT_DECAY,
    TrainResult,
    _check_positive,
    _check_positive_or_none,
    _fit,
    _resume,
    _worker_index,
    _write_json,
    create_training_model,
    register_trainer,
)


@keras.saving.register_keras_serializable(package="keras_vit")
class AdamWWithMultipliers(keras.optimizers.AdamW):
    """AdamW whose learning rate is scaled per variable (DETR trains its backbone at 1/10 the rate).

    Call `set_learning_rate_multiplier(variables, factor)` after building; other variables use
    factor 1. Like `exclude_from_weight_decay(var_list=...)`, the choice is not serialized.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._multipliers = {}

    def set_learning_rate_multiplier(self, variables, factor):
        self._multipliers.update({self._var_key(variable): float(factor) for variable in variables})

    def update_step(self, gradient, variable, learning_rate):
        factor = self._multipliers.get(self._var_key(variable), 1.0)
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)


def build_detection_optimizer(network, learning_rate, backbone_learning_rate, weight_decay, clip_norm, total_steps, drop_step):
    """DETR's optimizer: AdamW, `learning_rate` (the backbone's `backbone_learning_rate`) dropped
    10x at `drop_step`, global-norm clipping, no decay on biases, norms and the object queries."""
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([max(1, drop_step)], [learning_rate, learning_rate / 10])
    optimizer = AdamWWithMultipliers(learning_rate=schedule, weight_decay=weight_decay, global_clipnorm=clip_norm)
    optimizer.exclude_from_weight_decay(var_names=[*GENERIC_NO_WEIGHT_DECAY, "embeddings"])
    backbone = getattr(network, "backbone", None)
    if backbone is not None and backbone_learning_rate != learning_rate:
        optimizer.set_learning_rate_multiplier(backbone.trainable_weights, backbone_learning_rate / learning_rate)
    return optimizer


def load_backbone_weights(network, backbone, path):
    """Fills `network.backbone` (registry architecture `backbone`) from the classifier checkpoint
    at `path` (see `load_pretrained`), dropping its head; returns what was loaded."""
    if not isinstance(backbone, str):
        raise ValueError(
            f"backbone_weights needs the backbone as a registry name (such as 'resnet_pico') to read a classifier "
            f"checkpoint into, got {type(backbone).__name__}. Load the weights into your backbone model before "
            "passing it, or pass its registry name."
        )
    return load_pretrained(network.backbone, backbone, path, option="backbone_weights")


def train_detector(
    model="detr_r50",
    dataset="shapes_detection",
    *,
    data_dir=None,
    image_size=None,
    max_size=None,
    batch_size=8,
    epochs=50,
    learning_rate=1e-4,
    backbone_learning_rate=None,
    weight_decay=1e-4,
    clip_norm=0.1,
    lr_drop_fraction=0.8,
    max_objects=None,
    weights=None,
    backbone_weights=None,
    output_dir="runs/detr_r50_shapes_detection",
    overwrite=False,
    seed=0,
    steps_per_epoch=None,
    validation_steps=None,
    checkpoint_every=None,
    strategy="auto",
    tpu_address=None,
    precision="float32",
    verbose=1,
    model_kwargs=None,
    **unused,
):
    """Trains a detector with `DETRLoss`; writes model.keras, history.json, summary.json, curves.png
    and predictions.png (validation images with predicted and true boxes).

    Args:
        model: a detection registry name ("detr_r50").
        dataset: "shapes_detection", a prepared TFDS detection dataset ("coco/2017" in
            `data_dir`), or a COCO-format folder / instances JSON.
        image_size, max_size: evaluation shorter side and longer-side cap (defaults per
            dataset: 128 for shapes_detection, DETR's 800 / 1333 otherwise); training
            resizes to DETR's scales scaled by `image_size / 800`.
        batch_size, epochs: global batch and epochs (DETR: 64 and 500).
        learning_rate, backbone_learning_rate, weight_decay, clip_norm: DETR's AdamW
            (1e-4, 1e-5, 1e-4, 0.1); the rate drops 10x after `lr_drop_fraction` of the run.
            The backbone's rate defaults to `learning_rate / 10` for a pretrained-style
            backbone (frozen BatchNorm) and to `learning_rate` for one trained from
            scratch (`freeze_batchnorm=False`, as `detr_pico`).
        max_objects: boxes per image in the targets (default: the model's queries, at most 100).
        weights: start from a checkpoint (transformers DETR folder, original DETR
            `.safetensors`, `.weights.h5`) of the same architecture and classes.
        backbone_weights: start the backbone from an image classifier of its registry
            architecture, as DETR starts from an ImageNet ResNet: a keras-vit run folder or
            `.keras` (e.g. of `keras-vit train --model resnet_pico --dataset shapes`), a
            timm `.safetensors` or a transformers folder; its head is dropped.
        output_dir, overwrite, seed, steps_per_epoch, checkpoint_every, strategy,
            tpu_address, precision, verbose: as `train_classifier`.
        validation_steps: cap on the validation batches of each COCO evaluation.
        model_kwargs: more constructor arguments (`num_queries`, `backbone`, `hidden_dim`, ...).

    The validation COCO mAP (`val_AP`, `val_AP50`, ...) is in the history of every
    epoch. Returns a `TrainResult` whose `val_accuracy` is the last validation AP.
    """
    from keras_vit.applications.detr.loss import DETRLoss
    from keras_vit.data.detection import load_detection_dataset
    from keras_vit.data.pipeline import _epoch_seed
    from keras_vit.evaluation.detection import CocoEvaluationCallback, plot_validation_predictions

    if unused:
        raise ValueError(
            f"{sorted(unused)} are classification options; the detection trainer takes: data_dir, image_size, "
            "max_size, batch_size, epochs, learning_rate, backbone_learning_rate, weight_decay, clip_norm, "
            "lr_drop_fraction, max_objects, weights, backbone_weights, output_dir, overwrite, seed, steps_per_epoch, validation_steps, "
            "checkpoint_every, strategy, precision, model_kwargs."
        )
    _check_positive(batch_size=batch_size, epochs=epochs, learning_rate=learning_rate)
    _check_positive_or_none(backbone_learning_rate=backbone_learning_rate, image_size=image_size, steps_per_epoch=steps_per_epoch, checkpoint_every=checkpoint_every,
                            max_objects=max_objects, validation_steps=validation_steps)
    if not 0 < lr_drop_fraction <= 1:
        raise ValueError(f"lr_drop_fraction must be in (0, 1], got {lr_drop_fraction}.")
    if backbone_weights is not None:
        checkpoint_kind(backbone_weights, "backbone_weights")  # a path that is no checkpoint fails before any data work
    spec = model_info(model)
    if spec.task != "detection":
        raise ValueError(f"{model!r} is a {spec.task} model; train_detector trains detection models ({', '.join(_detectors())}).")
    distribution = select_distribution(strategy, tpu_address, model=model)
    check_global_batch(batch_size, num_replicas(distribution))
    keras.utils.set_random_seed(seed)
    model_kwargs = dict(model_kwargs or {})
    num_queries = model_kwargs.get("num_queries", spec.config.get("num_queries", 100))
    max_objects = max_objects or min(num_queries, 100)
    if max_objects > num_queries:
        raise ValueError(f"max_objects={max_objects} exceeds the model's {num_queries} queries: lower it or raise num_queries.")
    common = dict(data_dir=data_dir, image_size=image_size, max_size=max_size, batch_size=batch_size, max_objects=max_objects)
    val_data, val_info = load_detection_dataset(dataset, "validation", **common)
    if keras.backend.backend() != "torch":
        # Compiled steps (XLA, tf.function) are built per input shape: one padded size for every batch.
        common["pad_to"] = val_info.max_size
        val_data, val_info = load_detection_dataset(dataset, "validation", **common)
    train_options = dict(training=True, drop_remainder=True, **common)
    epoch_data = lambda epoch: load_detection_dataset(dataset, "train", seed=_epoch_seed(seed, epoch), **train_options)[0]
    _, info = load_detection_dataset(dataset, "train", seed=seed, **train_options)
    steps = min(steps_per_epoch or math.inf, info.num_examples // batch_size)
    if steps < 1:
        raise ValueError(f"{dataset!r} has {info.num_examples} training images, fewer than one batch of {batch_size}.")
    total_steps = steps * epochs

    previous_policy = keras.config.dtype_policy()
    precision = set_precision(precision, distribution)
    try:
        with distribution.scope() if distribution is not None else contextlib.nullcontext():
            network = create_training_model(model, "model_kwargs", classes=info.num_classes, weights=weights, **model_kwargs)
            if backbone_weights is not None:
                loaded = load_backbone_weights(network, model_kwargs.get("backbone", spec.config.get("backbone")), backbone_weights)
                if verbose:
                    print(f"Backbone: {loaded}.")
            if backbone_learning_rate is None:
                backbone_learning_rate = learning_rate / 10 if getattr(network, "freeze_batchnorm", True) else learning_rate
            network.compile(
                optimizer=build_detection_optimizer(
                    network, learning_rate, backbone_learning_rate, weight_decay, clip_norm, total_steps,
                    round(lr_drop_fraction * total_steps),
                ),
                loss=DETRLoss(),
                **compile_options(distribution, steps),
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    summary = {
        "model": model,
        "task": "detection",
        "dataset": dataset,
        "image_size": info.image_size,
        "max_size": info.max_size,
        "classes": info.class_names,
        "train_examples": info.num_examples,
        "validation_examples": val_info.num_examples,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "backbone_learning_rate": backbone_learning_rate,
        "weight_decay": weight_decay,
        "clip_norm": clip_norm,
        "lr_drop_fraction": lr_drop_fraction,
        "max_objects": max_objects,
        "weights": None if weights is None else os.fspath(weights),
        "backbone_weights": None if backbone_weights is None else os.fspath(backbone_weights),
        "seed": seed,
        "backend": keras.backend.backend(),
        "replicas": num_replicas(distribution),
        "precision": precision,
        "params": network.count_params(),
        "trainable_params": sum(int(math.prod(variable.shape)) for variable in network.trainable_weights),
    }
    worker = _worker_index(distribution)
    checkpoint_dir = os.path.join(output_dir, "checkpoint" if not worker else f"checkpoint-worker{worker}")
    lock_name = LOCK_FILE if not worker else f"{LOCK_FILE}-worker{worker}"
    with RunFolder(output_dir, summary, overwrite=overwrite, lock_name=lock_name, artifacts=not worker) as run_folder:
        state = _resume(network, checkpoint_dir, summary, overwrite, run_keys=_RUN_KEYS)
        start = time.time()
        if state is not None and verbose:
            print(f"Resuming {output_dir!r} after {state['epoch']} epochs + {state['step']} steps.")
        coco = CocoEvaluationCallback(val_data, num_classes=info.num_classes, steps=validation_steps)
        data = dict(epoch_data=epoch_data, val_data=val_data.take(validation_steps) if validation_steps else val_data, steps=steps)
        history = _fit(network, data, epochs, state, checkpoint_dir, checkpoint_every, verbose, metric_callbacks=[coco])
        seconds = time.time() - start
        summary.update(
            train_seconds=round(seconds, 1),
            optimizer_steps=optimizer_steps(network),
            resumed_from=None if state is None else {"epoch": state["epoch"], "step": state["step"]},
            final_val_AP=history["val_AP"][-1],
            final_val_AP50=history["val_AP50"][-1],
        )
        metadata = ClassifierMetadata(
            class_names=info.class_names, model=model, image_size=info.image_size, task="detection", max_size=info.max_size
        )
        if not worker:
            run_folder.write_artifacts({
                "model.keras": lambda path: save_classifier(network, path, metadata),
                "history.json": lambda path: _write_json(path, history),
                "curves.png": lambda path: plot_detection_history(history, path, title=f"{model} on {dataset}"),
                "predictions.png": lambda path: plot_validation_predictions(network, val_data, info.class_names, path),
                "summary.json": lambda path: _write_json(path, summary),
            })
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return TrainResult(network, history, output_dir, history["val_AP"][-1], seconds)


# Settings that must not change between an interrupted run and its resumption.
_RUN_KEYS = ("model", "dataset", "image_size", "max_size", "epochs", "steps_per_epoch", "batch_size", "learning_rate",
             "backbone_learning_rate", "weight_decay", "clip_norm", "lr_drop_fraction", "max_objects", "weights",
             "backbone_weights", "seed", "params")


def plot_detection_history(history, path, title=""):
    """Writes a PNG with the training / validation loss and the validation AP and AP50 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, history["loss"], marker="o", label="train loss")
    if "val_loss" in history:
        left.plot(epochs, history["val_loss"], marker="o", label="validation loss")
    for key in ("val_AP", "val_AP50"):
        points = [(epoch, value) for epoch, value in zip(epochs, history.get(key, [])) if value is not None]
        if points:
            right.plot(*zip(*points), marker="o", label=key.replace("val_", "validation "))
    for axis, label in ((left, "loss"), (right, "COCO AP")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _detectors():
    from keras_vit.applications.registry import list_models

    return list_models(task="detection")


register_trainer("detection", train_detector)
