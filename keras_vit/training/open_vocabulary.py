"""`keras-vit train` for open-vocabulary detectors (OWL-ViT), in OWL-ViT's two stages:

1. contrastive image-text pretraining of both towers (CLIP's loss) on image-caption pairs
   that cover every category, the held-out ones included (CLIP saw all concepts);
2. detection training (`OWLViTLoss`) on boxes of the seen categories only, queried by
   their names; held-out objects stay unlabeled and their names are never queried.

Each epoch's COCO evaluation queries every category by text and reports AP on all, on the
seen (`val_seen_AP`) and on the held-out ones (`val_unseen_AP`): the detector boxing what it
was never trained to box. Same run folder, checkpoints and resumption as the other trainers;
an interrupted run resumes its detection stage (pretraining, short, reruns only when the
interruption came before the first detection checkpoint).
"""

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
    warmup_cosine_schedule,
)


def build_open_vocabulary_optimizer(learning_rate, weight_decay, clip_norm, total_steps, warmup_steps):
    """AdamW on a warmup-cosine schedule with global-norm clipping, no decay on biases, norms,
    embeddings and the temperature (OWL-ViT's recipe, scaled down)."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=warmup_cosine_schedule(learning_rate, total_steps, warmup_steps),
        weight_decay=weight_decay,
        global_clipnorm=clip_norm,
    )
    optimizer.exclude_from_weight_decay(
        var_names=[*GENERIC_NO_WEIGHT_DECAY, "class_token", "position_embedding", "token_embedding", "logit_scale"]
    )
    return optimizer


def pretrain_towers(network, caption_data, steps, epochs, learning_rate, weight_decay, clip_norm, verbose=1):
    """Stage 1: CLIP's contrastive loss on `caption_data` (`x` with images and caption tokens), training the
    detector's own towers and temperature in place. Returns the loss per epoch."""
    from keras_vit.applications.clip import CLIPContrastiveLoss, contrastive_model

    clip = contrastive_model(network.text_encoder, network.vision_encoder, network.contrastive_logits, name="clip_pretraining")
    clip.compile(
        optimizer=build_open_vocabulary_optimizer(learning_rate, weight_decay, clip_norm, steps * epochs, steps * epochs // 10),
        loss={"logits_per_image": CLIPContrastiveLoss()},
        **compile_options(None, steps),
    )
    pairs = caption_data.map(lambda x: (x, {"logits_per_image": x["input_ids"]}))
    history = clip.fit(pairs.repeat(), steps_per_epoch=steps, epochs=epochs, verbose=verbose)
    return [float(value) for value in history.history["loss"]]


def train_open_vocabulary_detector(
    model="owlvit_pico",
    dataset="shapes_detection",
    *,
    captions=None,
    data_dir=None,
    image_size=None,
    batch_size=16,
    epochs=30,
    learning_rate=3e-4,
    weight_decay=0.05,
    clip_norm=1.0,
    pretrain_epochs=10,
    pretrain_batch_size=64,
    pretrain_learning_rate=1e-3,
    unseen=None,
    max_objects=None,
    weights=None,
    output_dir="runs/owlvit_pico_shapes_detection",
    overwrite=False,
    seed=0,
    steps_per_epoch=None,
    pretrain_steps_per_epoch=None,
    validation_steps=None,
    checkpoint_every=None,
    strategy="auto",
    tpu_address=None,
    precision="float32",
    verbose=1,
    model_kwargs=None,
    **unused,
):
    """Trains an OWL-ViT detector; writes model.keras (with its tokenizer and category names),
    history.json, curves.png, predictions.png and summary.json.

    Args:
        model: an open-vocabulary registry name ("owlvit_pico").
        dataset: "shapes_detection" or "shapes_detection/small" (its categories are the 48
            "color shape" captions).
        captions: the image-caption dataset of stage 1: default "shapes" ("shapes/small" for
            the small detection set); with `pretrain_epochs=0` there is no stage 1.
        image_size: the detector's input side (default: the model's default size).
        batch_size, epochs, learning_rate, weight_decay, clip_norm: stage 2's AdamW.
        pretrain_epochs, pretrain_batch_size, pretrain_learning_rate: stage 1's.
        unseen: the categories held out of stage 2 (default
            `keras_vit.data.open_vocabulary.DEFAULT_UNSEEN`); `()` holds out nothing.
        max_objects: boxes per image in the targets (default the dataset's most).
        weights: start from a transformers OWL-ViT checkpoint (its tokenizer is used).
        output_dir, overwrite, seed, steps_per_epoch, validation_steps, checkpoint_every,
            strategy, tpu_address, precision, verbose: as `train_detector`.
        pretrain_steps_per_epoch: cap on stage 1's steps per epoch.
        model_kwargs: more constructor arguments (`text`, `vision`, `projection_dim`, ...).

    The history holds `val_AP`, `val_seen_AP` and `val_unseen_AP` (and AP50, ...) per epoch.
    Returns a `TrainResult` whose `val_accuracy` is the last validation AP on unseen categories.
    """
    from keras_vit.data.tokenizer import CLIPTokenizer, train_clip_tokenizer
    from keras_vit.applications.owl_vit.loss import OWLViTLoss
    from keras_vit.data.open_vocabulary import (
        DEFAULT_UNSEEN,
        SHAPES_CATEGORIES,
        load_caption_dataset,
        load_open_vocabulary_dataset,
    )
    from keras_vit.data.pipeline import _epoch_seed
    from keras_vit.evaluation.detection import (
        CocoEvaluationCallback,
        plot_validation_predictions,
        post_process_open_vocabulary,
    )

    if unused:
        raise ValueError(
            f"{sorted(unused)} are not open-vocabulary detection options; train_open_vocabulary_detector takes: "
            "captions, data_dir, image_size, batch_size, epochs, learning_rate, weight_decay, clip_norm, pretrain_epochs, "
            "pretrain_batch_size, pretrain_learning_rate, unseen, max_objects, weights, output_dir, overwrite, seed, "
            "steps_per_epoch, pretrain_steps_per_epoch, validation_steps, checkpoint_every, strategy, precision, model_kwargs."
        )
    _check_positive(batch_size=batch_size, epochs=epochs, learning_rate=learning_rate, pretrain_batch_size=pretrain_batch_size,
                    pretrain_learning_rate=pretrain_learning_rate)
    _check_positive_or_none(image_size=image_size, steps_per_epoch=steps_per_epoch, checkpoint_every=checkpoint_every,
                            max_objects=max_objects, validation_steps=validation_steps,
                            pretrain_steps_per_epoch=pretrain_steps_per_epoch)
    if isinstance(pretrain_epochs, bool) or not isinstance(pretrain_epochs, int) or pretrain_epochs < 0:
        raise ValueError(f"pretrain_epochs must be an int >= 0 (0 skips contrastive pretraining), got {pretrain_epochs!r}.")
    spec = model_info(model)
    if spec.task != "open_vocabulary_detection":
        raise ValueError(f"{model!r} is a {spec.task} model; train_open_vocabulary_detector trains owlvit_* / owlv2_* models.")
    if dataset not in ("shapes_detection", "shapes_detection/small"):
        raise ValueError(
            f"dataset={dataset!r}: open-vocabulary training reads 'shapes_detection', whose objects carry the captions "
            "its queries come from; other detection datasets have no captions to query."
        )
    distribution = select_distribution(strategy, tpu_address, model=model)
    check_global_batch(batch_size, num_replicas(distribution))
    keras.utils.set_random_seed(seed)
    image_size = image_size or spec.default_size
    captions = captions or ("shapes/small" if dataset.endswith("/small") else "shapes")
    unseen = tuple(DEFAULT_UNSEEN if unseen is None else unseen)
    tokenizer = CLIPTokenizer.from_directory(weights) if weights is not None else train_clip_tokenizer(SHAPES_CATEGORIES)

    common = dict(name=dataset, tokenizer=tokenizer, data_dir=data_dir, image_size=image_size, unseen=unseen, batch_size=batch_size)
    if max_objects is not None:
        common["max_objects"] = max_objects
    val_data, val_info = load_open_vocabulary_dataset("validation", queries="all", **common)
    epoch_data = lambda epoch: load_open_vocabulary_dataset(
        "train", training=True, seed=_epoch_seed(seed, epoch), **common)[0]
    _, info = load_open_vocabulary_dataset("train", training=True, seed=seed, **common)
    steps = min(steps_per_epoch or math.inf, info.num_examples // batch_size)
    if steps < 1:
        raise ValueError(f"{dataset!r} has {info.num_examples} training images, fewer than one batch of {batch_size}.")

    previous_policy = keras.config.dtype_policy()
    precision = set_precision(precision, distribution)
    try:
        with distribution.scope() if distribution is not None else contextlib.nullcontext():
            options = dict(model_kwargs or {})
            options.setdefault("input_shape", (image_size, image_size, 3))
            if weights is None:
                options.setdefault("vocabulary_size", tokenizer.vocabulary_size)
            network = create_training_model(model, "model_kwargs", weights=weights, **options)
            network.tokenizer = tokenizer
            network.compile(
                optimizer=build_open_vocabulary_optimizer(learning_rate, weight_decay, clip_norm, steps * epochs, steps),
                loss=OWLViTLoss(),
                **compile_options(distribution, steps),
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    names = list(val_info.query_names)
    summary = {
        "model": model,
        "task": "open_vocabulary_detection",
        "dataset": dataset,
        "captions": captions,
        "image_size": image_size,
        "categories": names,
        "seen": list(info.query_names),
        "unseen": list(unseen),
        "train_examples": info.num_examples,
        "validation_examples": val_info.num_examples,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "clip_norm": clip_norm,
        "pretrain_epochs": pretrain_epochs,
        "pretrain_batch_size": pretrain_batch_size,
        "pretrain_learning_rate": pretrain_learning_rate,
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
        pretrain_history = []
        if state is None and pretrain_epochs:
            caption_data, caption_info = load_caption_dataset(
                "train", tokenizer=tokenizer, name=captions, data_dir=data_dir, image_size=image_size,
                batch_size=pretrain_batch_size, training=True, seed=seed)
            pretrain_steps = min(pretrain_steps_per_epoch or math.inf, caption_info.num_examples // pretrain_batch_size)
            if verbose:
                print(f"Stage 1: contrastive pretraining on {captions!r} captions, {pretrain_epochs} epochs x {pretrain_steps} steps.")
            pretrain_history = pretrain_towers(network, caption_data, pretrain_steps, pretrain_epochs, pretrain_learning_rate,
                                               weight_decay, clip_norm, verbose)
        elif state is not None and verbose:
            print(f"Resuming {output_dir!r} after {state['epoch']} epochs + {state['step']} steps.")
        pretrain_seconds = time.time() - start
        seen = [names.index(name) for name in info.query_names]
        groups = {"seen": seen, "unseen": [names.index(name) for name in unseen]} if unseen else {}
        coco = CocoEvaluationCallback(val_data, num_classes=len(names), steps=validation_steps,
                                      post_process=post_process_open_vocabulary, label_groups=groups)
        data = dict(epoch_data=epoch_data, val_data=val_data.take(validation_steps) if validation_steps else val_data,
                    steps=steps)
        if verbose:
            print(f"Stage 2: detection on {len(seen)} seen categories ({len(unseen)} held out), {epochs} epochs x {steps} steps.")
        history = _fit(network, data, epochs, state, checkpoint_dir, checkpoint_every, verbose, metric_callbacks=[coco])
        seconds = time.time() - start
        summary.update(
            train_seconds=round(seconds, 1),
            pretrain_seconds=round(pretrain_seconds, 1),
            pretrain_loss=pretrain_history,
            optimizer_steps=optimizer_steps(network),
            resumed_from=None if state is None else {"epoch": state["epoch"], "step": state["step"]},
            **{f"final_val_{key}": history[f"val_{key}"][-1] for key in ("AP", "AP50", "seen_AP", "unseen_AP",
                                                                          "seen_AP50", "unseen_AP50")
               if f"val_{key}" in history},
        )
        metadata = ClassifierMetadata(class_names=names, model=model, image_size=image_size,
                                      task="open_vocabulary_detection", tokenizer=tokenizer.get_config())
        if not worker:
            run_folder.write_artifacts({
                "model.keras": lambda path: save_classifier(network, path, metadata),
                "history.json": lambda path: _write_json(path, {**history, "pretrain_loss": pretrain_history}),
                "curves.png": lambda path: plot_open_vocabulary_history(history, path, title=f"{model} on {dataset}"),
                "predictions.png": lambda path: plot_validation_predictions(
                    network, val_data, names, path, threshold=0.3, post_process=post_process_open_vocabulary),
                "summary.json": lambda path: _write_json(path, summary),
            })
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    final = history.get("val_unseen_AP", history.get("val_AP"))
    return TrainResult(network, history, output_dir, final[-1] if final else None, seconds)


# Settings that must not change between an interrupted run and its resumption.
_RUN_KEYS = ("model", "dataset", "captions", "image_size", "unseen", "epochs", "steps_per_epoch", "batch_size",
             "learning_rate", "weight_decay", "clip_norm", "pretrain_epochs", "pretrain_batch_size",
             "pretrain_learning_rate", "weights", "seed", "params")


def plot_open_vocabulary_history(history, path, title=""):
    """Writes a PNG with the training / validation loss and the validation AP on all, seen and unseen categories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, history["loss"], marker="o", label="train loss")
    if "val_loss" in history:
        left.plot(epochs, history["val_loss"], marker="o", label="validation loss")
    for key, label in (("val_AP", "all categories"), ("val_seen_AP", "seen"), ("val_unseen_AP", "unseen (held out)")):
        points = [(epoch, value) for epoch, value in zip(epochs, history.get(key, [])) if value is not None]
        if points:
            right.plot(*zip(*points), marker="o", label=label)
    for axis, label in ((left, "loss"), (right, "COCO AP (text queries)")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


register_trainer("open_vocabulary_detection", train_open_vocabulary_detector)
