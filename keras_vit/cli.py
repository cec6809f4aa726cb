"""The `keras-vit` command: train and inspect models (a thin layer over the package)."""

import argparse
import os
import sys

from keras_vit.applications.registry import TASKS


# `keras-vit train` options and the trainer argument each sets (when given).
_TRAIN_OPTIONS = {
    "data_dir": "data_dir", "image_size": "image_size", "batch_size": "batch_size", "epochs": "epochs",
    "weights": "weights", "keep_head": "keep_head", "freeze_backbone": "freeze_backbone", "recipe": "recipe",
    "learning_rate": "learning_rate", "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs",
    "label_smoothing": "label_smoothing", "ema": "ema_momentum", "overwrite": "overwrite", "seed": "seed",
    "steps_per_epoch": "steps_per_epoch", "checkpoint_every": "checkpoint_every", "strategy": "strategy",
    "tpu_address": "tpu_address", "precision": "precision", "min_crop_scale": "min_crop_scale",
    "max_objects": "max_objects", "validation_steps": "validation_steps", "backbone_learning_rate": "backbone_learning_rate",
    "backbone_weights": "backbone_weights",
    "palette": "palette", "palette_size": "palette_size", "objective": "objective", "remat": "remat", "samples": "samples",
    "pretrain_epochs": "pretrain_epochs", "unseen": "unseen",
}


def _train(args):
    from keras_vit.applications.registry import model_info
    from keras_vit.training import train

    task = model_info(args.model).task
    detection = task == "detection"
    dataset = args.dataset or ("shapes_detection" if task in ("detection", "open_vocabulary_detection") else "shapes")
    output_dir = args.output_dir or os.path.join("runs", f"{args.model}_{os.path.basename(str(dataset).rstrip('/'))}")
    given = lambda value: value is not None and value is not False  # flags left at their default are not passed
    options = {name: getattr(args, flag) for flag, name in _TRAIN_OPTIONS.items() if given(getattr(args, flag))}
    if "unseen" in options:
        options["unseen"] = tuple(name.strip() for name in options["unseen"].split(",") if name.strip())
    result = train(args.model, dataset, output_dir=output_dir, verbose=1 if sys.stdout.isatty() else 2, **options)
    epochs = len(result.history["loss"])
    if detection:
        print(
            f"\nvalidation AP {result.val_accuracy:.4f} (AP50 {result.history['val_AP50'][-1]:.4f}) after {epochs} epochs "
            f"({result.seconds:.0f} s). Wrote {output_dir}/model.keras, history.json, summary.json, curves.png, predictions.png"
        )
        return
    if task == "open_vocabulary_detection":
        history = result.history
        print(
            f"\nvalidation AP (text queries) {history['val_AP'][-1]:.4f}: seen categories "
            f"{history.get('val_seen_AP', [float('nan')])[-1]:.4f}, held-out categories "
            f"{history.get('val_unseen_AP', [float('nan')])[-1]:.4f}, after {epochs} epochs ({result.seconds:.0f} s). Wrote "
            f"{output_dir}/model.keras, history.json, summary.json, curves.png, predictions.png"
        )
        return
    if task == "generation":
        print(
            f"\nvalidation {result.val_accuracy:.4f} bits per dimension ({result.history['val_loss'][-1]:.4f} nats per token) "
            f"after {epochs} epochs ({result.seconds:.0f} s). Wrote {output_dir}/model.keras, palette.npy, history.json, "
            "summary.json, curves.png, samples.png"
        )
        return
    print(
        f"\nvalidation accuracy {result.val_accuracy:.4f} after {epochs} epochs "
        f"({result.seconds:.0f} s). Wrote {output_dir}/model.keras, history.json, summary.json, curves.png"
    )


def _load_classifier(args):
    """The model and metadata of --model; --class-names / --image-size fill in what a plain .keras lacks."""
    from keras_vit.applications.saving import ClassifierMetadata, load_classifier

    model, metadata = load_classifier(args.model, metadata_required=not args.class_names)
    if metadata is not None and metadata.task in ("detection", "open_vocabulary_detection"):
        return model, metadata, metadata.image_size
    if args.class_names:
        names = [name.strip() for name in args.class_names.split(",")]
        metadata = ClassifierMetadata(class_names=names, image_size=metadata and metadata.image_size)
    image_size = args.image_size or metadata.image_size or model.input_shape[1]
    if model.input_shape[1] is not None and image_size != model.input_shape[1]:
        raise ValueError(f"--image-size {image_size}: the model takes {model.input_shape[1]} px images.")
    return model, metadata, image_size


def _evaluate(args):
    from keras_vit.applications.saving import resolve_model_path
    from keras_vit.data import load_dataset
    from keras_vit.evaluation import evaluate_classifier, plot_confusion_matrix
    from keras_vit.training.run_folder import write_json_atomically

    model, metadata, image_size = _load_classifier(args)
    if metadata.task == "detection":
        return _evaluate_detector(args, model, metadata)
    if metadata.task == "open_vocabulary_detection":
        return _evaluate_open_vocabulary(args, model, metadata)
    dataset, info = load_dataset(args.dataset, args.split, data_dir=args.data_dir, image_size=image_size,
                                 batch_size=args.batch_size, eval_crop_fraction=metadata.eval_crop_fraction)
    if info.class_names != list(metadata.class_names):
        raise ValueError(
            f"The model was trained on the classes {list(metadata.class_names)}, {args.dataset!r} has "
            f"{info.class_names}: evaluate on a dataset with the model's classes, in the same order."
        )
    report = evaluate_classifier(model, dataset, info.class_names, progress=sys.stdout.isatty())
    output_dir = args.output_dir or os.path.dirname(os.path.abspath(resolve_model_path(args.model)))
    os.makedirs(output_dir, exist_ok=True)
    stem = f"evaluation_{os.path.basename(str(args.dataset).rstrip('/')).replace('/', '_')}_{args.split}"
    write_json_atomically(os.path.join(output_dir, stem + ".json"), {
        "model": os.path.abspath(args.model), "dataset": args.dataset, "split": args.split, **report.to_dict()})
    plot_confusion_matrix(report.confusion_matrix, info.class_names, os.path.join(output_dir, stem + ".png"),
                          title=f"{args.dataset} ({args.split})")
    print(f"{report.num_examples} images of {args.dataset!r} ({args.split})")
    print(f"accuracy        {report.accuracy:.4f}")
    print(f"top-{report.top_k} accuracy  {report.top5_accuracy:.4f}")
    for name, accuracy in report.per_class_accuracy.items():
        print(f"  {name:20} {'-' if accuracy is None else f'{accuracy:.4f}'}")
    print(f"Wrote {os.path.join(output_dir, stem)}.json and .png (confusion matrix)")


def _evaluate_detector(args, model, metadata):
    from keras_vit.data.detection import load_detection_dataset
    from keras_vit.evaluation import evaluate_detector

    dataset, info = load_detection_dataset(
        args.dataset, args.split, data_dir=args.data_dir, image_size=metadata.image_size, max_size=metadata.max_size,
        batch_size=args.batch_size, num_classes=len(metadata.class_names),
    )
    if info.class_names != list(metadata.class_names)[: len(info.class_names)]:
        raise ValueError(
            f"The model was trained on the classes {list(metadata.class_names)}, {args.dataset!r} has "
            f"{info.class_names}: evaluate on a dataset with the model's classes, in the same order."
        )
    metrics = evaluate_detector(model, dataset, num_classes=len(metadata.class_names), progress=sys.stdout.isatty())
    _report_detection_metrics(args, metrics, info.num_examples)


def _evaluate_open_vocabulary(args, model, metadata):
    """COCO AP of an OWL-ViT run with every category it was evaluated on queried by text, and AP on the
    categories held out of its training (read from the run's summary.json) apart."""
    from keras_vit.applications.saving import resolve_model_path
    from keras_vit.data.open_vocabulary import DEFAULT_UNSEEN, load_open_vocabulary_dataset
    from keras_vit.evaluation import evaluate_detector
    from keras_vit.evaluation.detection import post_process_open_vocabulary
    from keras_vit.training.run_folder import SUMMARY_FILE, read_json

    summary_path = os.path.join(os.path.dirname(os.path.abspath(resolve_model_path(args.model))), SUMMARY_FILE)
    summary = read_json(summary_path, "The run summary", "Re-run keras-vit train to write it.") if os.path.isfile(summary_path) else {}
    unseen = tuple(summary.get("unseen", DEFAULT_UNSEEN))
    dataset, info = load_open_vocabulary_dataset(
        args.split, tokenizer=model.tokenizer, name=args.dataset, data_dir=args.data_dir, categories=metadata.class_names,
        unseen=unseen, queries="all", image_size=metadata.image_size, batch_size=args.batch_size,
    )
    names = list(info.query_names)
    groups = {"seen": [i for i, name in enumerate(names) if name not in unseen],
              "unseen": [names.index(name) for name in unseen]} if unseen else None
    metrics = evaluate_detector(model, dataset, num_classes=len(names), post_process=post_process_open_vocabulary,
                                label_groups=groups, progress=sys.stdout.isatty())
    _report_detection_metrics(args, metrics, info.num_examples)


def _report_detection_metrics(args, metrics, num_examples):
    from keras_vit.applications.saving import resolve_model_path
    from keras_vit.training.run_folder import write_json_atomically

    output_dir = args.output_dir or os.path.dirname(os.path.abspath(resolve_model_path(args.model)))
    os.makedirs(output_dir, exist_ok=True)
    stem = f"evaluation_{os.path.basename(str(args.dataset).rstrip('/')).replace('/', '_')}_{args.split}"
    write_json_atomically(os.path.join(output_dir, stem + ".json"), {
        "model": os.path.abspath(args.model), "dataset": args.dataset, "split": args.split, **metrics})
    print(f"{num_examples} images of {args.dataset!r} ({args.split}), COCO mAP:")
    for name, value in metrics.items():
        print(f"  {name:10} {value:.4f}")
    print(f"Wrote {os.path.join(output_dir, stem)}.json")


def _detect(args):
    from keras_vit.applications.registry import list_models
    from keras_vit.applications.saving import load_classifier
    from keras_vit.evaluation import detect_images, list_image_files

    open_vocabulary = args.queries is not None or args.query_image is not None
    if args.model in list_models(task="open_vocabulary_detection"):
        return _write_detections(args, *_detect_open_vocabulary(args, None))
    if open_vocabulary and args.model in list_models():
        raise ValueError(f"--queries and --query-image need an open-vocabulary detector (owlvit_*, owlv2_*), not {args.model!r}.")
    model, metadata = load_classifier(args.model)
    if metadata.task == "open_vocabulary_detection":
        return _write_detections(args, *_detect_open_vocabulary(args, model))
    if metadata.task != "detection":
        raise ValueError(f"{args.model!r} is a {metadata.task} model; keras-vit detect needs a detector (keras-vit predict classifies).")
    if open_vocabulary:
        raise ValueError(f"{args.model!r} detects its {len(metadata.class_names)} trained classes; --queries and --query-image "
                         "need an open-vocabulary detector (owlvit_*, owlv2_*).")
    threshold = 0.5 if args.threshold is None else args.threshold
    paths = list_image_files(args.images)
    detections = detect_images(model, paths, metadata.image_size, metadata.max_size, threshold, args.batch_size)
    _write_detections(args, paths, detections, metadata.class_names, threshold)


def _detect_open_vocabulary(args, model):
    """`(paths, detections, label names, threshold)` of an OWL-ViT detector: a registry name with
    --weights (a transformers checkpoint), or a trained model; text --queries or a --query-image."""
    from keras_vit.applications.owl_vit import OwlViTDetector
    from keras_vit.applications.registry import model_info
    from keras_vit.convert import load_transformers_checkpoint
    from keras_vit.evaluation import list_image_files
    from keras_vit.evaluation.detect import read_image

    if model is None:
        if args.weights is None:
            raise ValueError(
                f"{args.model} needs --weights: a transformers OwlViTForObjectDetection / Owlv2ForObjectDetection "
                "save_pretrained directory (with its tokenizer files); random weights detect nothing."
            )
        model = load_transformers_checkpoint(args.weights)  # the checkpoint's own size (L/14 at 840, ...)
        expected = "OWLv2" if model_info(args.model).config.get("objectness") else "OWL-ViT"
        found = None if not isinstance(model, OwlViTDetector) else "OWLv2" if model.objectness else "OWL-ViT"
        if found != expected:
            raise ValueError(f"--weights {args.weights!r} holds {found or 'no OWL-ViT'} checkpoint, but --model {args.model} "
                             f"is an {expected}; pass the matching name (owlvit_* or owlv2_*).")
    if (args.queries is None) == (args.query_image is None):
        raise ValueError('Pass --queries "red circle, blue star" (text) or --query-image PATH (an example of the object), one of them.')
    threshold = 0.1 if args.threshold is None else args.threshold
    paths = list_image_files(args.images)
    images = [read_image(path) for path in paths]
    if args.queries is not None:
        names = [query.strip() for query in args.queries.split(",")]
        if not any(names) or not all(names):
            raise ValueError(f"--queries {args.queries!r} holds an empty query; separate non-empty queries with commas.")
        embeddings = model.embed_queries(names)  # once, for every image
        detections = [found for start in range(0, len(images), args.batch_size)
                      for found in model.detect(images[start:start + args.batch_size], query_embeddings=embeddings,
                                                threshold=threshold)]
    else:
        names = [os.path.basename(args.query_image)]
        query = [read_image(args.query_image)]
        detections = [found for start in range(0, len(images), args.batch_size)
                      for found in model.detect(images[start:start + args.batch_size], query_images=query, threshold=threshold)]
    return paths, detections, names, threshold


def _write_detections(args, paths, detections, class_names, threshold):
    import numpy as np

    from keras_vit.evaluation import detection_records, draw_detections, write_detections_json
    from keras_vit.evaluation.detect import read_image

    os.makedirs(args.output_dir, exist_ok=True)
    for index, (path, found) in enumerate(zip(paths, detections)):
        original = read_image(path)
        name = f"{index:05d}_{os.path.splitext(os.path.basename(path))[0]}.png"
        draw_detections(np.asarray(original), found, class_names, os.path.join(args.output_dir, name),
                        title=f"{len(found['scores'])} objects (score > {threshold:g})")
    records = detection_records(detections, class_names, [os.fspath(path) for path in paths])
    write_detections_json(records, os.path.join(args.output_dir, "detections.json"))
    for record in records:
        found = ", ".join(f"{item['class']} {item['score']:.2f}" for item in record["detections"]) or "nothing"
        print(f"{record['image']}: {found}")
    print(f"Wrote {len(paths)} images with boxes and detections.json to {args.output_dir}")


def _load_generator(path):
    """`(model, metadata, palette, run_summary)` of a trained generative model."""
    import numpy as np

    from keras_vit.applications.saving import load_classifier, resolve_model_path
    from keras_vit.training.run_folder import read_json

    model, metadata = load_classifier(path)
    if metadata.task != "generation":
        raise ValueError(f"{path!r} is a {metadata.task} model; keras-vit generate and probe need a generative model (igpt_*).")
    summary_path = os.path.join(os.path.dirname(resolve_model_path(path)), "summary.json")
    summary = read_json(summary_path, "The run summary", "Pass --dataset explicitly.") if os.path.isfile(summary_path) else {}
    return model, metadata, np.asarray(metadata.palette, "float32"), summary


def _generate(args):
    import time

    import numpy as np

    from keras_vit.applications.igpt.generate import generate
    from keras_vit.data.pixels import load_pixel_dataset
    from keras_vit.evaluation.generation import completion_grid, image_grid, tokens_to_images, write_png

    model, metadata, palette, summary = _load_generator(args.model)
    if args.samples < 0 or args.complete < 0:
        raise ValueError(f"--samples and --complete must be >= 0, got {args.samples} and {args.complete}.")
    output_dir = args.output_dir or (args.model if os.path.isdir(args.model) else os.path.dirname(os.path.abspath(args.model)))
    os.makedirs(output_dir, exist_ok=True)
    options = dict(temperature=args.temperature, top_k=args.top_k, use_cache=not args.no_cache)
    if args.samples:
        start = time.time()
        tokens = generate(model, num_samples=args.samples, seed=args.seed, **options)
        write_png(os.path.join(output_dir, "samples.png"), image_grid([tokens_to_images(tokens, palette)]))
        print(f"{args.samples} samples of {tokens.shape[1]} pixels in {time.time() - start:.1f} s -> {output_dir}/samples.png")
    if args.complete:
        dataset = args.dataset or summary.get("dataset")
        if dataset is None:
            raise ValueError("--complete needs images: pass --dataset (the model's run folder names none).")
        batches = load_pixel_dataset(dataset, "validation", data_dir=args.data_dir, image_size=metadata.image_size,
                                     palette=palette, batch_size=args.complete)
        images = np.asarray(next(iter(batches[0]))[1])
        start = time.time()
        grid = completion_grid(model, palette, images, seed=args.seed, temperature=args.temperature, top_k=args.top_k)
        write_png(os.path.join(output_dir, "completions.png"), grid)
        print(f"{len(images)} completions in {time.time() - start:.1f} s -> {output_dir}/completions.png "
              "(rows: given top halves, two samples, originals)")


def _probe(args):
    from keras_vit.data.pixels import load_pixel_dataset
    from keras_vit.evaluation.probe import linear_probe
    from keras_vit.training.run_folder import write_json_atomically

    model, metadata, palette, summary = _load_generator(args.model)
    dataset = args.dataset or summary.get("dataset")
    if dataset is None:
        raise ValueError("keras-vit probe needs labelled images: pass --dataset (the model's run folder names none).")
    for flag, value in (("--train-examples", args.train_examples), ("--test-examples", args.test_examples)):
        if value < 1:
            raise ValueError(f"{flag} must be positive, got {value}.")
    load = lambda split, count: load_pixel_dataset(dataset, split, data_dir=args.data_dir, image_size=metadata.image_size,
                                                   palette=palette, batch_size=64, with_labels=True)[0].unbatch().take(count).batch(64)
    result = linear_probe(model, load("train", args.train_examples).as_numpy_iterator(),
                          load("validation", args.test_examples).as_numpy_iterator(), layers=args.layers, palette=palette)
    print(f"linear probe on {dataset}: {result['train_examples']} training, {result['test_examples']} test images")
    print(f"{'features':12} {'accuracy':>8}")
    print(f"{'raw pixels':12} {result['pixels']:8.4f}")
    for layer, accuracy in result["layers"].items():
        print(f"{'block ' + str(layer):12} {accuracy:8.4f}")
    if args.output:
        write_json_atomically(args.output, {**result, "layers": {str(k): v for k, v in result["layers"].items()}})


def _predict(args):
    import json

    import numpy as np

    from keras_vit.evaluation import attention_maps, list_image_files, load_images, predict_images
    from keras_vit.evaluation import save_attention_overlay
    from keras_vit.evaluation.predict import attention_map_kind

    model, metadata, image_size = _load_classifier(args)
    paths = list_image_files(args.images)
    results = predict_images(model, paths, metadata.class_names, image_size, metadata.eval_crop_fraction,
                             top_k=args.top_k, batch_size=args.batch_size, progress=not args.json and sys.stdout.isatty())
    if args.attention_map:
        kind = attention_map_kind(model)
        os.makedirs(args.attention_map, exist_ok=True)
        for start in range(0, len(paths), args.batch_size):
            batch = paths[start:start + args.batch_size]
            images = load_images(batch, image_size, metadata.eval_crop_fraction)
            maps = attention_maps(model, images)
            for path, image, attention, result in zip(batch, images, maps, results[start:start + args.batch_size]):
                name = os.path.splitext(os.path.basename(path))[0]
                out = os.path.join(args.attention_map, f"{start + batch.index(path):05d}_{name}.png")
                top = result["top"][0]
                save_attention_overlay(np.asarray(image), attention, out, title=f"{top['class']} {top['probability']:.2f}",
                                       kind=kind)
                result["attention_map"] = out
    if args.json:
        print(json.dumps(results, indent=1))
        return
    width = max(len(result["path"]) for result in results)
    for result in results:
        top = "  ".join(f"{item['class']} {item['probability']:.3f}" for item in result["top"])
        print(f"{result['path']:{width}}  {top}")
    if args.attention_map:
        print(f"Wrote {len(results)} attention maps to {args.attention_map}")


def _tune(args):
    from keras_vit.training import select_distribution
    from keras_vit.tuning import get_space, parse_overrides, tune

    _set_tuner_role(args)
    strategy = select_distribution(args.strategy, args.tpu_address)
    space = parse_overrides(args.search or [], base=get_space(args.space))
    output_dir = args.output_dir or os.path.join(
        "runs", f"tune_{args.model}_{os.path.basename(str(args.dataset).rstrip('/'))}_{args.tuner}"
    )
    result = tune(
        args.model,
        args.dataset,
        tuner=args.tuner,
        search_space=space,
        max_trials=args.max_trials,
        complete_grid=args.complete_grid,
        epochs_per_trial=args.epochs_per_trial,
        output_dir=output_dir,
        data_dir=args.data_dir,
        image_size=args.image_size,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        seed=args.seed,
        overwrite=args.overwrite,
        max_retries_per_trial=args.max_retries,
        heartbeat_timeout=args.heartbeat_timeout,
        distribution_strategy=strategy,
        verbose=2 if args.verbose else 1,
    )
    if result.role == "worker":
        print(f"\nworker {os.environ.get('KERASTUNER_TUNER_ID')}: the search is over ({result.seconds:.0f} s).")
        return
    wrote = [name for name in ("best_hyperparameters.json", "best_model.keras", "trials.csv", "trials.json", "augreg.png")
             if os.path.exists(os.path.join(output_dir, name))]
    print(f"\n{len(result.trials)} trials in {result.seconds:.0f} s. Wrote {output_dir}/{{{','.join(wrote)}}}")


def _set_tuner_role(args):
    """--chief / --worker ID / --oracle-address set KerasTuner's environment variables."""
    if args.chief and args.worker:
        raise ValueError("--chief and --worker exclude each other: start one chief and any number of workers.")
    if args.oracle_address:
        host, sep, port = args.oracle_address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--oracle-address must be HOST:PORT (e.g. 10.0.0.5:8000), got {args.oracle_address!r}.")
        os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"] = host, port
    if args.chief or args.worker:
        if "KERASTUNER_ORACLE_IP" not in os.environ or "KERASTUNER_ORACLE_PORT" not in os.environ:
            raise ValueError(
                "--chief/--worker need the chief's address: --oracle-address HOST:PORT (or the environment "
                "variables KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT)."
            )
        os.environ["KERASTUNER_TUNER_ID"] = "chief" if args.chief else args.worker
        if "chief" in os.environ["KERASTUNER_TUNER_ID"] and not args.chief:
            raise ValueError(f"A worker id must not contain 'chief' (KerasTuner reads it as the chief): {args.worker!r}.")


def _info(args):
    import keras_vit
    from keras_vit.evaluation.complexity import image_input_shape, measure

    if args.sides:
        return _attention_memory_table([args.model, *args.against], args.sides)
    if args.against:
        raise ValueError("--against compares models in the --sides table: add --sides, e.g. --sides 224 448.")
    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size must be positive, got {args.image_size}.")
    if keras_vit.model_info(args.model).task == "generation":
        return _info_generation(keras_vit.model_info(args.model), args.image_size)
    kwargs = {}
    if args.image_size is not None:
        kwargs["input_shape"] = (args.image_size, args.image_size, 3)
    task = keras_vit.model_info(args.model).task
    model = keras_vit.create_model(args.model, **kwargs)
    size = args.image_size or keras_vit.model_info(args.model).default_size
    image_side = _image_side(model, task)
    cost = measure(image_side, default_size=size)
    _, height, width, channels = image_input_shape(image_side, size)
    print(f"model               {args.model} ({model.name})")
    print(f"input               {height}x{width}x{channels}")
    print(f"parameters          {model.count_params():,}")
    if image_side is not model:
        text = model.get_layer("text_encoder")
        print(f"text tower          {text.count_params():,} parameters, {text.input['input_ids'].shape[1]} tokens per "
              "text, run once per text (the costs below are the image side's, per image)")
    print(f"GMACs               {cost.gmacs:.2f}   (multiply-adds; papers' 'FLOPs')")
    print(f"GFLOPs              {cost.gflops:.2f}")
    if cost.attention_layers:
        _, heads, queries, keys = cost.attention_layers[0]
        print(f"attention layers    {len(cost.attention_layers)}; the first: {heads} heads x {queries}x{keys}")
        print(
            f"attention matrices  {cost.attention_elements:,} elements per image = "
            f"{cost.attention_bytes(4) / 2**20:.1f} MiB float32, {cost.attention_bytes(2) / 2**20:.1f} MiB bfloat16"
        )


def _image_side(model, task):
    """What one image costs: the model itself, or the query-independent part of an image-text model."""
    if task == "open_vocabulary_detection":
        from keras_vit.applications.owl_vit.detect import image_side_model

        return image_side_model(model)
    if task == "image_text":
        return model.get_layer("vision_encoder")
    return model


def _info_generation(spec, image_size):
    """A pixel model's sequence and the memory of its attention, dense against block-wise,
    from the variant's configuration (building igpt_l at 128 px would take 5 GiB for nothing)."""
    from keras_vit.layers.blockwise_attention import attention_scratch_bytes

    side = image_size or spec.default_size
    tokens, depth, heads = side * side, spec.config["depth"], spec.config["num_heads"]
    scratch = attention_scratch_bytes(tokens, heads)
    gib = 2**30
    print(f"model               {spec.name} ({spec.description})")
    print(f"sequence            {side}x{side} pixels = {tokens:,} tokens ({depth} layers, {heads} heads)")
    if spec.params:
        print(f"parameters          {spec.params:,} (at {spec.default_size}x{spec.default_size}; positions grow with the image)")
    print(
        f"dense attention     {scratch['dense'] * depth / gib:,.1f} GiB float32 of score matrices per image, all layers "
        f"({scratch['dense'] / gib:,.2f} GiB per layer)"
    )
    print(
        f"keras-vit           {scratch['blockwise'] / 2**20:,.2f} MiB of scores in flight per image (block-wise, "
        f"{scratch['block_size']}x{scratch['block_size']} tiles, {scratch['tiles_computed']} of {scratch['tiles_total']} "
        "tiles per head computed; the backward pass recomputes them)"
    )


def _attention_memory_table(models, sides):
    """Prints the float32 MiB of every attention matrix of one image, per model and image side."""
    import keras_vit
    from keras_vit.evaluation.complexity import measure

    bad = [side for side in sides if side < 1]
    if bad:
        raise ValueError(f"--sides must be positive image sides, got {bad}.")
    print("attention matrices per image, float32 MiB (all layers and heads)")
    print(f"{'model':14}" + "".join(f"{side:>11}" for side in sides) + f"   growth {sides[0]} -> {sides[-1]}")
    for name in models:
        cells = []
        for side in sides:
            model = keras_vit.create_model(name, input_shape=(side, side, 3))
            cells.append(measure(model, default_size=side).attention_bytes(4) / 2**20)
        growth = f"x{cells[-1] / cells[0]:.1f}" if cells[0] else "-"
        print(f"{name:14}" + "".join(f"{cell:11.4g}" for cell in cells) + f"   {growth}")


def _recipes(args):
    from keras_vit.training import RECIPES

    print(f"{'recipe':26} {'optimizer':9} {'lr@batch':>13} {'wd':>5} {'warmup':>6} {'clip':>4} {'RandAug':>7} {'mixup':>5} "
          f"{'cutmix':>6} {'erase':>5} {'smooth':>6} {'dropout':>7} {'droppath':>8}")
    for recipe in RECIPES.values():
        aug = recipe.augmentation
        randaugment = f"{aug.randaugment_layers}x{aug.randaugment_magnitude:g}" if aug.randaugment_layers else "-"
        print(f"{recipe.name:26} {recipe.optimizer:9} {recipe.learning_rate:>8g}@{recipe.reference_batch_size:<4} "
              f"{recipe.weight_decay:>5g} "
              f"{recipe.warmup_fraction:>6.1%} {recipe.clip_norm:>4g} {randaugment:>7} {aug.mixup_alpha:>5g} "
              f"{aug.cutmix_alpha:>6g} {aug.random_erasing:>5g} {recipe.label_smoothing:>6g} "
              f"{_or_model(recipe.dropout_rate):>7} {_or_model(recipe.drop_path_rate):>8}")


def _or_model(value):
    return "model" if value is None else f"{value:g}"


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-vit", description="Vision transformers for Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (default: a small ViT on the offline shapes dataset)")
    train.add_argument("--model", default="vit_pico8", help="registry name (keras-vit info --list)")
    train.add_argument("--dataset", default=None,
                       help="'shapes', a TFDS name, or a folder of class sub-folders; detection: 'shapes_detection' "
                            "(default), a TFDS detection dataset (coco/2017) or a COCO-format folder / instances JSON")
    train.add_argument("--data-dir", default=None, help="TFDS data_dir (default: ~/.cache/keras_vit/tensorflow_datasets)")
    train.add_argument("--image-size", type=int, default=None, help="square input side (default: the model's)")
    train.add_argument("--batch-size", type=int, default=None,
                       help="global batch (default: 64; detection: 8; open-vocabulary detection: 16)")
    train.add_argument("--pretrain-epochs", type=int, default=None,
                       help="open-vocabulary detection: epochs of contrastive image-caption pretraining first (default 10; 0: none)")
    train.add_argument("--unseen", default=None,
                       help='open-vocabulary detection: comma-separated categories held out of detection training, e.g. '
                            '"red triangle, blue ring" (default: six, one per shape; "" holds out none)')
    train.add_argument("--epochs", type=int, default=None,
                       help="default: the recipe's, or more on a small dataset (baseline: at least 1,800 steps)")
    train.add_argument("--weights", default=None, metavar="PATH",
                       help="start from a checkpoint of the same architecture: a transformers folder, a timm "
                            ".safetensors, a keras-vit run folder or .keras, a .weights.h5; the head is new")
    train.add_argument("--keep-head", action="store_true", help="with --weights: keep its head too (same classes)")
    train.add_argument("--freeze-backbone", action="store_true",
                       help="with --weights: train the head alone (a linear probe)")
    train.add_argument("--recipe", default=None,
                       help="training recipe: augreg-<none|light1|...|strong2>[-reg][-wd0.1|-wd0.03], swin, baseline, "
                            "augreg-finetune, finetune-small (keras-vit recipes lists them)")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="peak learning rate after warmup (default: the recipe's, scaled to --batch-size)")
    train.add_argument("--weight-decay", type=float, default=None, help="decoupled AdamW weight decay (default: the recipe's)")
    train.add_argument("--warmup-epochs", type=float, default=None, help="linear warmup (default: the recipe's share of the run)")
    train.add_argument("--label-smoothing", type=float, default=None, help="default: the recipe's")
    train.add_argument("--ema", type=float, default=None, metavar="MOMENTUM",
                       help="keep an exponential moving average of the weights (e.g. 0.9999); it replaces them at the end")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                       help="checkpoint every STEPS steps too (epochs always are); rerun the same command to resume")
    train.add_argument("--min-crop-scale", type=float, default=None,
                       help="smallest area fraction of the random resized crop (default 0.08; 0.8 for images of "
                            "at most 64 px, shapes included)")
    train.add_argument("--steps-per-epoch", type=int, default=None, help="cap on training steps per epoch")
    train.add_argument("--strategy", default="auto",
                       help="TensorFlow: auto|tpu|gpu|multiworker|mirrored|cpu; JAX: auto|data|model|cpu; PyTorch: auto|cpu")
    train.add_argument("--tpu-address", default=None, help="TPU name or grpc://ip:8470 for --strategy tpu")
    train.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16", "auto"],
                       help="auto: bfloat16 on TPU, float16 with loss scaling on GPU, float32 on CPU")
    train.add_argument("--output-dir", default=None,
                       help="the run folder: model.keras, history.json, summary.json, curves.png and, while "
                            "training, checkpoint/ (default: runs/<model>_<dataset>)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a finished run in --output-dir, or discard an interrupted run's checkpoint "
                            "of other settings there (without it, both are refused)")
    train.add_argument("--seed", type=int, default=None, help="default 0")
    train.add_argument("--max-objects", type=int, default=None,
                       help="detection: boxes per image in the targets (default: the model's queries, at most 100)")
    train.add_argument("--backbone-learning-rate", type=float, default=None,
                       help="detection: the backbone's learning rate (default: --learning-rate / 10, DETR's, "
                            "for a frozen-BatchNorm backbone; --learning-rate for one trained from scratch, as detr_pico)")
    train.add_argument("--backbone-weights", default=None, metavar="PATH",
                       help="detection: start the backbone from a classifier of its architecture, as DETR starts from "
                            "ImageNet (a run folder of e.g. keras-vit train --model resnet_pico --dataset shapes, a .keras, "
                            "a timm .safetensors or a transformers folder); its head is dropped")
    train.add_argument("--validation-steps", type=int, default=None,
                       help="detection: cap on the validation batches of each epoch's COCO evaluation")
    train.add_argument("--palette", default=None, metavar="NPY",
                       help="generation: a (colors, 3) palette .npy in [-1, 1] (default: k-means on the training images)")
    train.add_argument("--palette-size", type=int, default=None,
                       help="generation: colors of the fitted palette (default: the model's, 512)")
    train.add_argument("--objective", default=None, choices=["causal", "masked"],
                       help="generation: next-pixel (default) or BERT-style masked-pixel prediction")
    train.add_argument("--remat", action="store_true",
                       help="generation: recompute block activations in the backward pass (long sequences, less memory)")
    train.add_argument("--samples", type=int, default=None,
                       help="generation: images per row of samples.png (default 8; 0: no sampling at the end)")
    train.set_defaults(handler=_train)

    generate = commands.add_parser("generate", help="sample images, and complete images' bottom halves, with a trained iGPT")
    generate.add_argument("--model", required=True, help="a run folder of keras-vit train or its model.keras")
    generate.add_argument("--samples", type=int, default=8, help="unconditional samples (0: none)")
    generate.add_argument("--complete", type=int, default=8, metavar="N",
                          help="complete the bottom halves of N validation images of --dataset (0: none)")
    generate.add_argument("--dataset", default=None, help="images to complete (default: the run's dataset, from summary.json)")
    generate.add_argument("--data-dir", default=None)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k most likely colors")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--no-cache", action="store_true", help="a full forward pass per pixel (slow; for comparison)")
    generate.add_argument("--output-dir", default=None, help="where samples.png and completions.png go (default: the run folder)")
    generate.set_defaults(handler=_generate)

    probe = commands.add_parser("probe", help="linear-probe accuracy of each layer of a trained iGPT, next to raw pixels")
    probe.add_argument("--model", required=True, help="a run folder of keras-vit train or its model.keras")
    probe.add_argument("--dataset", default=None, help="labelled images (default: the run's dataset)")
    probe.add_argument("--data-dir", default=None)
    probe.add_argument("--layers", type=int, nargs="+", default=None, help="block indices (default: all)")
    probe.add_argument("--train-examples", type=int, default=2000)
    probe.add_argument("--test-examples", type=int, default=500)
    probe.add_argument("--output", default=None, metavar="JSON", help="also write the accuracies here")
    probe.set_defaults(handler=_probe)

    evaluate = commands.add_parser(
        "evaluate", help="a trained classifier's accuracy, top-5, per-class accuracy and confusion matrix, or a "
                         "detector's COCO mAP")
    evaluate.add_argument("--model", required=True, help="a run folder of keras-vit train, or its model.keras")
    evaluate.add_argument("--dataset", required=True,
                          help="'shapes', a TFDS name, or a folder of class sub-folders (detectors: a detection dataset)")
    evaluate.add_argument("--split", default="validation", help="default: validation (a folder's held-out part)")
    evaluate.add_argument("--data-dir", default=None, help="TFDS data_dir")
    _add_model_file_arguments(evaluate, batch_size=64)
    evaluate.add_argument("--output-dir", default=None,
                          help="where evaluation_<dataset>_<split>.json/.png go (default: the model's folder)")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="top-k classes of images (and attention maps) with a trained classifier")
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders (recursive)")
    predict.add_argument("--model", required=True, help="a run folder of keras-vit train, or its model.keras")
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.add_argument("--attention-map", default=None, metavar="DIR",
                         help="write per image a PNG with the attention overlaid (ViT: rollout; Swin: the last "
                              "stage's attention)")
    _add_model_file_arguments(predict, batch_size=32)
    predict.set_defaults(handler=_predict)

    detect = commands.add_parser("detect", help="boxes, labels and scores of objects in images with a trained detector")
    detect.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders (recursive)")
    detect.add_argument("--model", required=True,
                        help="a run folder of keras-vit train (a detector), its model.keras, or an open-vocabulary "
                             "registry name (owlvit_b32, owlv2_b16, ...) with --weights")
    detect.add_argument("--weights", default=None,
                        help="with an owlvit_*/owlv2_* name: a transformers save_pretrained directory (weights + tokenizer)")
    detect.add_argument("--queries", default=None,
                        help='open-vocabulary detectors: comma-separated text queries, e.g. "red circle, blue star"')
    detect.add_argument("--query-image", default=None,
                        help="open-vocabulary detectors: an image of the object to find (image-conditioned detection)")
    detect.add_argument("--threshold", type=float, default=None,
                        help="keep detections scoring above this (default 0.5; open-vocabulary detectors 0.1)")
    detect.add_argument("--batch-size", type=int, default=8)
    detect.add_argument("--output-dir", default="detections",
                        help="where one PNG per image with its boxes drawn and detections.json go (default: detections)")
    detect.set_defaults(handler=_detect)

    _add_tune_parser(commands)

    recipes = commands.add_parser("recipes", help="list the training recipes and their settings")
    recipes.set_defaults(handler=_recipes)

    info = commands.add_parser("info", help="parameters, GFLOPs and attention memory of a model")
    info.add_argument("model", nargs="?", help="registry name, e.g. vit_b16")
    info.add_argument("--image-size", type=int, default=None)
    info.add_argument("--sides", type=int, nargs="+", default=None, metavar="SIDE",
                      help="instead: a table of attention memory per image at these image sides, e.g. 224 448 896")
    info.add_argument("--against", nargs="+", default=(), metavar="MODEL",
                      help="with --sides: more models in the table, e.g. vit_s16 swin_t")
    info.add_argument("--list", action="store_true", help="list the registered models as a table")
    info.add_argument("--task", default=None, choices=TASKS, help="with --list: only the models of this task")
    info.set_defaults(handler=_info_or_list)
    return parser


def _add_model_file_arguments(parser, batch_size):
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--class-names", default=None, metavar="A,B,...",
                        help="class names of a .keras file saved without them (keras-vit train records them)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the one recorded with the model")


def _add_tune_parser(commands):
    # The same defaults as keras_vit.tuning.tune(), from one place.
    from keras_vit.tuning import defaults

    tune = commands.add_parser(
        "tune",
        help=f"search augmentation and regularization with KerasTuner (default: {defaults.DEFAULT_TUNER} search over "
             f"AugReg's grid on {defaults.DEFAULT_DATASET})",
        description="Searches RandAugment/MixUp strength, dropout, stochastic depth, weight decay and learning rate. "
                    "Writes best_hyperparameters.json, best_model.keras, trials.csv/json and augreg.png. Running the "
                    "same command again continues an interrupted search.",
    )
    tune.add_argument("--model", default=defaults.DEFAULT_MODEL, help="registry name (keras-vit info --list)")
    tune.add_argument("--dataset", default=defaults.DEFAULT_DATASET,
                      help="'shapes', a TFDS name, or a folder of class sub-folders")
    tune.add_argument("--data-dir", default=None, help="TFDS data_dir (default: ~/.cache/keras_vit/tensorflow_datasets)")
    tune.add_argument("--tuner", default=defaults.DEFAULT_TUNER,
                      help=f"grid, random, bayesian or hyperband (default: {defaults.DEFAULT_TUNER})")
    tune.add_argument("--space", default=defaults.DEFAULT_SEARCH_SPACE,
                      help="preset: 'augreg' (7 augmentations x noreg/reg x wd 0.1/0.03, lr 1e-3) or 'continuous' "
                           "(the same knobs as ranges)")
    tune.add_argument("--search", action="append", metavar="KNOB=SPEC",
                      help="change one knob: a value (0.1), choices (0.1,0.03), a range (1e-4:1e-2:log, 0:20, 0:20:5) "
                           "or 'unset'. Knobs: augmentation, randaugment_layers, randaugment_magnitude, mixup_alpha, "
                           "cutmix_alpha, regularization, dropout_rate, drop_path_rate, weight_decay, learning_rate")
    tune.add_argument("--max-trials", type=int, default=None,
                      help=f"trial cap (default: grid: all its points; random/bayesian: {defaults.DEFAULT_MAX_TRIALS}; "
                           "hyperband: its brackets)")
    tune.add_argument("--complete-grid", action="store_true",
                      help="with --tuner grid: refuse a --max-trials below the grid size")
    tune.add_argument("--epochs-per-trial", type=int, default=defaults.DEFAULT_EPOCHS_PER_TRIAL,
                      help=f"epochs of each trial (hyperband: the most; default {defaults.DEFAULT_EPOCHS_PER_TRIAL})")
    tune.add_argument("--image-size", type=int, default=defaults.DEFAULT_IMAGE_SIZE,
                      help=f"square input side (default {defaults.DEFAULT_IMAGE_SIZE}, which keeps the default search "
                           "to a few minutes; pass the model's size, e.g. 224, for real runs)")
    tune.add_argument("--batch-size", type=int, default=defaults.DEFAULT_BATCH_SIZE)
    tune.add_argument("--steps-per-epoch", type=int, default=None, help="cap on training steps per epoch")
    tune.add_argument("--output-dir", default=None, help="results and the KerasTuner project (default: runs/tune_...)")
    tune.add_argument("--overwrite", action="store_true", help="start afresh instead of continuing a search found there")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--max-retries", type=int, default=defaults.DEFAULT_MAX_RETRIES,
                      help="runs again a trial that crashed or whose worker died this many times before it is FAILED")
    tune.add_argument("--strategy", default="cpu",
                      help="where each trial trains: TensorFlow auto|tpu|gpu|multiworker|mirrored|cpu; "
                           "JAX auto|data|model|cpu (default cpu: one device)")
    tune.add_argument("--tpu-address", default=None, help="TPU name or grpc://ip:8470 for --strategy tpu")
    tune.add_argument("--verbose", action="store_true", help="also one line per epoch")
    tune.add_argument("--chief", action="store_true",
                      help="distributed: run the oracle that workers connect to (KERASTUNER_TUNER_ID=chief)")
    tune.add_argument("--worker", default=None, metavar="ID", help="distributed: run trials as worker ID (e.g. worker0)")
    tune.add_argument("--oracle-address", default=None, metavar="HOST:PORT",
                      help="the chief's address (KERASTUNER_ORACLE_IP/PORT); the chief listens on it")
    tune.add_argument("--heartbeat-timeout", type=float, default=defaults.DEFAULT_HEARTBEAT_TIMEOUT, metavar="SECONDS",
                      help="chief: give a trial to another worker when its worker is silent this long "
                           f"(default {defaults.DEFAULT_HEARTBEAT_TIMEOUT:g})")
    tune.set_defaults(handler=_tune)


def _info_or_list(args):
    if args.list or not args.model:
        _list_models(args.task)
        return
    _info(args)


def _list_models(task=None):
    """The registry as a table: name, task, family, default size, published parameters, description."""
    import keras_vit

    specs = [keras_vit.model_info(name) for name in keras_vit.list_models(task=task)]
    print(f"{'name':14} {'task':15} {'family':7} {'size':>4} {'params':>13}  description")
    for spec in specs:
        params = f"{spec.params:,}" if spec.params else "-"
        print(f"{spec.name:14} {spec.task:15} {spec.family:7} {spec.default_size:>4} {params:>13}  {spec.description}")


def main(argv=None):
    from keras_vit.training.callbacks import NonFiniteLossError

    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except KeyboardInterrupt:
        kept = " Checkpoints written so far are kept: the same command resumes." if args.command in ("train", "tune") else ""
        print(f"\nkeras-vit {args.command}: interrupted.{kept}", file=sys.stderr)
        return 130
    except ValueError as error:
        print(f"keras-vit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"keras-vit {args.command}: training stopped: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
