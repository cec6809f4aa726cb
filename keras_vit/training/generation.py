"""`keras-vit train` for generative pixel models (iGPT): fit a palette, train on pixel tokens
with the next-pixel (or masked-pixel) cross-entropy, report bits per dimension, and write
sample and completion grids. Same run folder, checkpoints and resumption as the other trainers."""

import contextlib
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from keras_vit.applications.registry import model_info
from keras_vit.applications.saving import ClassifierMetadata, load_classifier, read_metadata, save_classifier
from keras_vit.training.callbacks import optimizer_steps
from keras_vit.training.distribute import check_global_batch, compile_options, num_replicas, select_distribution, set_precision
from keras_vit.training.pretrained import checkpoint_kind, transfer_weights
from keras_vit.training.run_folder import LOCK_FILE, RunFolder
from keras_vit.training.train import (
    TrainResult,
    _check_positive,
    _check_positive_or_none,
    _fit,
    _resume,
    _worker_index,
    _write_json,
    build_optimizer,
    create_training_model,
    plot_history,
    register_trainer,
)

PALETTE_FILE = "palette.npy"


@keras.saving.register_keras_serializable(package="keras_vit")
def bits_per_dim(y_true, y_pred):
    """Cross-entropy in bits per color channel: nats per pixel token / (3 ln 2), the unit of
    image likelihoods (a 9-bit palette has at most 3 bits per dimension)."""
    nats = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    return nats / (3.0 * math.log(2.0))


def train_generator(
    model="igpt_pico",
    dataset="shapes",
    *,
    data_dir=None,
    image_size=None,
    palette=None,
    palette_size=None,
    palette_examples=2000,
    objective="causal",
    mask_rate=0.15,
    batch_size=32,
    epochs=10,
    learning_rate=1e-3,
    weight_decay=0.01,
    warmup_epochs=1,
    clip_norm=1.0,
    remat=False,
    weights=None,
    output_dir="runs/igpt_pico_shapes",
    overwrite=False,
    seed=0,
    steps_per_epoch=None,
    validation_steps=None,
    checkpoint_every=None,
    strategy="auto",
    tpu_address=None,
    precision="float32",
    verbose=1,
    samples=8,
    model_kwargs=None,
    **unused,
):
    """Trains an iGPT on a dataset's images as palette-token sequences; writes model.keras (with
    its palette), palette.npy, history.json, summary.json, curves.png and samples.png
    (unconditional samples, and validation images' bottom halves completed from their top halves).

    Args:
        model: a generation registry name ("igpt_pico").
        dataset: "shapes", a TFDS name or an image folder (as `train_classifier`).
        image_size: the images' side (default the model's, 32); the model reads
            `image_size**2` tokens.
        palette: a `.npy` palette to use; default: k-means fitted on `palette_examples`
            training images with `palette_size` colors (default the model's, 512).
        objective: "causal" (next pixel) or "masked" (BERT-style, `mask_rate` of the
            pixels masked, the loss on them only).
        batch_size, epochs, learning_rate, weight_decay, warmup_epochs, clip_norm: AdamW
            (beta_2 0.95 as GPT-2 and iGPT) with linear warmup and cosine decay.
        remat: recompute block activations in the backward pass (long sequences).
        weights: start from a checkpoint of the same architecture: a keras-vit run folder or
            `.keras` file (its palette is used unless `palette` is given, which must then
            equal it), a transformers ImageGPT folder (with its palette when it has one) or
            a `.weights.h5` file. Every weight is loaded, the head included.
        output_dir, overwrite, seed, steps_per_epoch, validation_steps, checkpoint_every,
            strategy, tpu_address, precision, verbose: as `train_classifier`.
        samples: images in each row of samples.png (0: no grid).
        model_kwargs: more constructor arguments (`depth`, `hidden_dim`, `attention_implementation`, ...).

    The history holds `loss` (nats per token) and `bits_per_dim`, with their validation
    values. Returns a `TrainResult` whose `val_accuracy` is the last validation bits per dim.
    """
    from keras_vit.data.palette import load_palette
    from keras_vit.data.pixels import fit_dataset_palette
    from keras_vit.data.pipeline import _epoch_seed
    from keras_vit.data.pixels import load_pixel_dataset

    if unused:
        raise ValueError(
            f"{sorted(unused)} are not options of the generative trainer; it takes: data_dir, image_size, palette, "
            "palette_size, palette_examples, objective, mask_rate, batch_size, epochs, learning_rate, weight_decay, "
            "warmup_epochs, clip_norm, remat, weights, output_dir, overwrite, seed, steps_per_epoch, validation_steps, "
            "checkpoint_every, strategy, precision, samples, model_kwargs."
        )
    _check_positive(batch_size=batch_size, epochs=epochs, learning_rate=learning_rate)
    _check_positive_or_none(image_size=image_size, palette_size=palette_size, steps_per_epoch=steps_per_epoch,
                            validation_steps=validation_steps, checkpoint_every=checkpoint_every)
    spec = model_info(model)
    if spec.task != "generation":
        raise ValueError(f"{model!r} is a {spec.task} model; train_generator trains generative models ({', '.join(_generators())}).")
    distribution = select_distribution(strategy, tpu_address, model=model)
    check_global_batch(batch_size, num_replicas(distribution))
    keras.utils.set_random_seed(seed)
    image_size = image_size or spec.default_size
    model_kwargs = dict(model_kwargs or {})

    start_kind, start_palette = _checkpoint_palette(weights) if weights is not None else (None, None)
    if palette is not None:
        colors = load_palette(palette)
    elif start_palette is not None:
        colors = start_palette
    else:
        colors = fit_dataset_palette(
            dataset, "train", image_size=image_size, clusters=palette_size or model_kwargs.get("palette_size", 512),
            max_images=palette_examples, data_dir=data_dir, seed=seed,
        )
    if palette_size is not None and palette_size != len(colors):
        raise ValueError(f"palette_size={palette_size} but the palette {palette!r} has {len(colors)} colors: drop one of the two.")
    if start_palette is not None and (colors.shape != start_palette.shape or not np.allclose(colors, start_palette, atol=1e-6)):
        raise ValueError(
            f"palette={palette!r} is not the palette {weights!r} was trained with, so its tokens would name other "
            "colors. Drop the palette to train on the checkpoint's."
        )
    data = dict(dataset=dataset, data_dir=data_dir, image_size=image_size, palette=colors, batch_size=batch_size,
                objective=objective, mask_rate=mask_rate)
    val_data, val_info = load_pixel_dataset(split="validation", shuffle=False, seed=seed, **data)
    val_batches = min(validation_steps or math.inf, math.ceil(val_info.num_examples / batch_size))
    val_data = val_data.take(val_batches).apply(tf.data.experimental.assert_cardinality(val_batches))
    train_examples = load_pixel_dataset(split="train", **data)[1].num_examples
    steps = min(steps_per_epoch or math.inf, train_examples // batch_size)
    if steps < 1:
        raise ValueError(f"{dataset!r} has {train_examples} training images, fewer than one batch of {batch_size}.")
    # The pipeline unbatches (one image quantized at a time), so tf.data no longer knows the batch
    # counts; Keras warns that the data "ran out" unless they are stated.
    known_length = tf.data.experimental.assert_cardinality(steps)
    epoch_data = lambda epoch: load_pixel_dataset(
        split="train", shuffle=True, seed=_epoch_seed(seed, epoch), **data
    )[0].take(steps).apply(known_length)
    total_steps = steps * epochs

    previous_policy = keras.config.dtype_policy()
    precision = set_precision(precision, distribution)
    try:
        with distribution.scope() if distribution is not None else contextlib.nullcontext():
            network = create_training_model(
                model, "model_kwargs", image_size=image_size, palette_size=len(colors), objective=objective,
                remat=remat, weights=None if start_kind == "keras" else weights, **model_kwargs,
            )
            if start_kind == "keras":
                transfer_weights(load_classifier(weights, metadata_required=False)[0], network, include_head=True,
                                 source_name=weights)
            network.compile(
                optimizer=build_optimizer(
                    learning_rate, weight_decay, total_steps, round(warmup_epochs * steps), clip_norm, model=network,
                    beta_2=0.95, no_weight_decay=list(spec.no_weight_decay),
                ),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.MeanMetricWrapper(bits_per_dim, name="bits_per_dim")],
                **compile_options(distribution, steps),
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    summary = {
        "model": model,
        "task": "generation",
        "dataset": dataset,
        "image_size": image_size,
        "tokens": image_size**2,
        "palette_size": len(colors),
        "palette": None if palette is None else os.fspath(palette),
        "objective": objective,
        "mask_rate": mask_rate if objective == "masked" else None,
        "train_examples": train_examples,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "clip_norm": clip_norm,
        "remat": remat,
        "weights": None if weights is None else os.fspath(weights),
        "seed": seed,
        "backend": keras.backend.backend(),
        "replicas": num_replicas(distribution),
        "precision": precision,
        "params": network.count_params(),
    }
    worker = _worker_index(distribution)
    checkpoint_dir = os.path.join(output_dir, "checkpoint" if not worker else f"checkpoint-worker{worker}")
    lock_name = LOCK_FILE if not worker else f"{LOCK_FILE}-worker{worker}"
    with RunFolder(output_dir, summary, overwrite=overwrite, lock_name=lock_name, artifacts=not worker) as run_folder:
        state = _resume(network, checkpoint_dir, summary, overwrite, run_keys=_RUN_KEYS)
        start = time.time()
        if state is not None and verbose:
            print(f"Resuming {output_dir!r} after {state['epoch']} epochs + {state['step']} steps.")
        history = _fit(network, dict(epoch_data=epoch_data, val_data=val_data, steps=steps), epochs, state,
                       checkpoint_dir, checkpoint_every, verbose)
        seconds = time.time() - start
        summary.update(
            train_seconds=round(seconds, 1),
            optimizer_steps=optimizer_steps(network),
            resumed_from=None if state is None else {"epoch": state["epoch"], "step": state["step"]},
            final_loss=history["loss"][-1],
            final_val_loss=history["val_loss"][-1],
            final_val_bits_per_dim=history["val_bits_per_dim"][-1],
        )
        metadata = ClassifierMetadata(
            class_names=[], model=model, image_size=image_size, task="generation", palette=colors.tolist()
        )
        if not worker:
            artifacts = {
                "model.keras": lambda path: save_classifier(network, path, metadata),
                PALETTE_FILE: lambda path: _save_npy(path, colors),
                "history.json": lambda path: _write_json(path, history),
                "curves.png": lambda path: plot_history(history, path, f"{model} on {dataset}", metrics=("loss", "bits_per_dim")),
                "summary.json": lambda path: _write_json(path, summary),
            }
            if samples and objective == "causal":
                artifacts["samples.png"] = lambda path: _write_samples(network, colors, data, samples, seed, path)
            run_folder.write_artifacts(artifacts)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return TrainResult(network, history, output_dir, history["val_bits_per_dim"][-1], seconds)


# Settings that must not change between an interrupted run and its resumption.
_RUN_KEYS = ("model", "dataset", "image_size", "palette_size", "palette", "objective", "mask_rate", "epochs",
             "steps_per_epoch", "batch_size", "learning_rate", "weight_decay", "warmup_epochs", "clip_norm", "weights",
             "seed", "params")


def _checkpoint_palette(weights):
    """`(kind, palette)` of the checkpoint a run starts from (`checkpoint_kind`); the palette is
    None when the checkpoint records none (a `.weights.h5` file, a transformers folder without
    `preprocessor_config.json`)."""
    from keras_vit.applications.igpt.convert import read_palette

    kind = checkpoint_kind(weights, "weights")
    if kind == "transformers":
        return kind, read_palette(weights)
    if kind != "keras":
        return kind, None
    try:
        metadata = read_metadata(weights)
    except ValueError:
        return kind, None
    if metadata.task != "generation":
        raise ValueError(
            f"weights={os.fspath(weights)!r} is a {metadata.task} model; a generative run starts from a generative "
            "checkpoint (a keras-vit igpt run folder or .keras file, or a transformers ImageGPT folder)."
        )
    return kind, np.asarray(metadata.palette, "float32")


def _save_npy(path, array):
    with open(path, "wb") as handle:
        np.save(handle, array)


def _write_samples(network, colors, data, samples, seed, path):
    """samples.png: a row of unconditional samples, then validation completions (top halves given)."""
    from keras_vit.data.pixels import load_pixel_dataset
    from keras_vit.evaluation.generation import completion_grid, sample_grid, write_png

    batches, _ = load_pixel_dataset(split="validation", **{**data, "objective": "causal", "batch_size": samples})
    _, targets = next(iter(batches))
    parts = [sample_grid(network, colors, num_samples=samples, seed=seed), completion_grid(network, colors, np.asarray(targets), seed=seed)]
    width = max(part.shape[1] for part in parts)
    write_png(path, np.concatenate([np.pad(part, ((0, 0), (0, width - part.shape[1]), (0, 0)), constant_values=255) for part in parts]))


def _generators():
    from keras_vit.applications.registry import list_models

    return list_models(task="generation")


register_trainer("generation", train_generator)
