"""OWL-ViT inference: text and image queries in, per-image boxes, scores and query labels out.

The towers run separately so that work is not repeated: `embed_queries` embeds text once
for any number of images, `image_outputs` runs the vision side (compiled) once per
image batch, and the class head compares the two. Image-conditioned detection picks each
query image's most object-like box embedding (OWL-ViT: a box covering the image that is
least like the others; OWLv2: the highest objectness) and uses it as the query.
"""

import weakref

import keras
import numpy as np

from keras_vit.ops import box_iou, center_to_corners, generalized_box_iou

_IMAGE_MODELS = weakref.WeakKeyDictionary()  # detector -> its compiled vision-side model


def image_side_model(model):
    """A `keras.Model` over `model`'s own layers: images `(batch, H, W, 3)` -> `{"image_features":
    (batch, patches, width), "pred_boxes": (batch, patches, 4), "class_embeddings": (batch,
    patches, dim)}` (+ OWLv2's `"objectness_logits": (batch, patches)`): everything that does not
    depend on the queries. Built once per detector."""
    if model not in _IMAGE_MODELS:
        features = model.get_layer("layer_norm").output
        outputs = {
            "image_features": features,
            "pred_boxes": model.get_layer("box_bias").output,
            "class_embeddings": model.get_layer("class_head").dense0(features),
        }
        if model.objectness:
            outputs["objectness_logits"] = model.output["objectness_logits"]
        _IMAGE_MODELS[model] = keras.Model(model.input["images"], outputs, name=f"{model.name}_image_side")
    return _IMAGE_MODELS[model]


def image_outputs(model, images):
    """`image_side_model(model)`'s NumPy outputs on a batch of model-sized images `(batch, H, W, 3)`."""
    outputs = image_side_model(model).predict_on_batch(np.asarray(images, "float32"))
    return {key: np.asarray(value) for key, value in outputs.items()}


def embed_queries(model, queries, tokenizer=None):
    """Text queries -> their embeddings `(queries, dim)` (NumPy), computed once for any images.

    Args:
        queries: a non-empty list of str, or the tokenizer's `{"input_ids",
            "attention_mask"}` arrays `(queries, length)`.
        tokenizer: a `CLIPTokenizer`; default `model.tokenizer` (set when loading a checkpoint).
    """
    if isinstance(queries, dict):
        tokens = queries
    else:
        if isinstance(queries, str):
            queries = [queries]
        if not isinstance(queries, (list, tuple)) or not queries:
            raise ValueError(f"queries must be a non-empty list of str such as ['red circle', 'blue star'], got {queries!r}.")
        tokenizer = tokenizer or getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(
                f"{model.name} has no tokenizer for text queries: pass tokenizer=CLIPTokenizer.from_directory(DIR) "
                "(a directory with vocab.json and merges.txt), or load the model from a checkpoint that ships them."
            )
        tokens = tokenizer(list(queries))
    input_ids = np.asarray(tokens["input_ids"], "int32")
    attention_mask = np.asarray(tokens["attention_mask"], "int32")
    return np.asarray(model.text_encoder.predict_on_batch({"input_ids": input_ids, "attention_mask": attention_mask})["embedding"])


def class_logits(model, class_features, query_embeddings, query_mask=None):
    """Logits `(batch, patches, queries)` of image features against query embeddings.

    Args:
        class_features: `image_outputs(...)["image_features"]`, `(batch, patches, width)`.
        query_embeddings: `(queries, dim)` shared by every image, or `(batch, queries, dim)`.
        query_mask: optional `(batch, queries)`, 1 for real queries.
    """
    class_features = np.asarray(class_features, "float32")
    query_embeddings = np.asarray(query_embeddings, "float32")
    if query_embeddings.ndim == 2:
        query_embeddings = np.broadcast_to(query_embeddings, (len(class_features), *query_embeddings.shape))
    if len(query_embeddings) != len(class_features):
        raise ValueError(
            f"{len(class_features)} images but query embeddings for {len(query_embeddings)}: pass one row of queries per "
            "image, or a (queries, dim) array shared by all."
        )
    logits, _ = model.get_layer("class_head")(class_features, query_embeddings, query_mask)
    return keras.ops.convert_to_numpy(logits)


def embed_image_queries(model, query_images):
    """Each query image's query embedding: the class embedding of the box that best stands for
    the object it shows.

    OWL-ViT (as transformers' `image_guided_detection`): among the boxes whose IoU with the
    whole image is at least 0.8 x the best (generalized IoU when no box overlaps it), the
    one whose class embedding is least similar to the image's mean. OWLv2: the box with
    the highest objectness.

    Returns `(embeddings (batch, dim), box_indices (batch,), pred_boxes (batch, patches, 4))`.
    """
    outputs = image_outputs(model, query_images)
    embeddings, boxes = outputs["class_embeddings"], outputs["pred_boxes"]
    if model.objectness:
        indices = np.argmax(outputs["objectness_logits"], axis=-1)
    else:
        indices = np.array([_most_distinct_covering_box(b, e) for b, e in zip(boxes, embeddings)])
    return embeddings[np.arange(len(indices)), indices], indices, boxes


def _most_distinct_covering_box(boxes, class_embeddings):
    whole_image = np.array([[0.0, 0.0, 1.0, 1.0]], "float32")
    corners = keras.ops.convert_to_numpy(center_to_corners(boxes))
    ious = keras.ops.convert_to_numpy(box_iou(whole_image, corners)[0])[0]
    if np.all(ious == 0.0):
        ious = keras.ops.convert_to_numpy(generalized_box_iou(whole_image, corners))[0]
    selected = np.flatnonzero(ious >= ious.max() * 0.8)
    mean_similarity = class_embeddings[selected] @ class_embeddings.mean(axis=0)
    return int(selected[np.argmin(mean_similarity)])


def non_max_suppression(boxes, scores, iou_threshold):
    """Indices kept by greedy NMS, highest score first. `boxes` `(n, 4)` corners, `scores` `(n,)`."""
    order = np.argsort(-scores, kind="stable")
    corners = np.asarray(boxes, "float64")
    area = np.prod(np.clip(corners[:, 2:] - corners[:, :2], 0, None), axis=-1)
    kept, suppressed = [], np.zeros(len(order), bool)
    for rank, index in enumerate(order):
        if suppressed[rank]:
            continue
        kept.append(index)
        rest = order[rank + 1 :]
        low = np.maximum(corners[index, :2], corners[rest, :2])
        high = np.minimum(corners[index, 2:], corners[rest, 2:])
        intersection = np.prod(np.clip(high - low, 0, None), axis=-1)
        iou = intersection / np.maximum(area[index] + area[rest] - intersection, 1e-12)
        suppressed[rank + 1 :] |= iou > iou_threshold
    return np.array(kept, dtype="int64")


def prepare_images(model, images):
    """Raw images -> `(batch, H, W, 3)` float32 at the model's input size, and each image's
    `(height, width)` that normalized boxes refer to. OWLv2 pads each image to a square at
    the bottom and right first (black), as its processor does, so boxes refer to the square."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    height, width = model.image_size
    prepared, sizes = [], []
    for index, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Image {index} has shape {image.shape}; pass (height, width, 3) RGB arrays in [0, 255].")
        image = image.astype("float32")
        if model.objectness:
            side = max(image.shape[:2])
            image = np.pad(image, ((0, side - image.shape[0]), (0, side - image.shape[1]), (0, 0)))
        sizes.append(image.shape[:2])
        if image.shape[:2] != (height, width):
            image = keras.ops.convert_to_numpy(keras.ops.image.resize(image, (height, width), antialias=True))
        prepared.append(image)
    if not prepared:
        raise ValueError("No images given: pass one (height, width, 3) array or a list of them.")
    return np.stack(prepared), sizes


def detect(model, images, queries=None, *, query_embeddings=None, query_images=None, threshold=0.1,
           nms_threshold=None, tokenizer=None):
    """Open-vocabulary detection of `queries` in `images`.

    Args:
        model: an `OwlViTDetector`.
        images: one `(height, width, 3)` array in [0, 255] or a list of them (any sizes;
            each is resized to the model's input).
        queries: text queries shared by every image (`["red circle", "blue star"]`).
        query_embeddings: instead of `queries`, embeddings from `embed_queries`, `(queries, dim)`,
            computed once and reused.
        query_images: instead of text, one image per query: each query image's object is
            searched in every image.
        threshold: keep boxes whose score (the sigmoid of their best query's logit) is above it.
        nms_threshold: drop boxes overlapping a better one by more than this IoU; default 0.3
            for image queries (as transformers) and none (1.0) for text.
        tokenizer: for text queries when `model.tokenizer` is not set.

    Returns one dict per image: `"boxes"` `(n, 4)` pixel (x1, y1, x2, y2) in that image,
    `"scores"` `(n,)`, `"labels"` `(n,)` the query index, best first.
    """
    given = [name for name, value in (("queries", queries), ("query_embeddings", query_embeddings),
                                      ("query_images", query_images)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"Pass exactly one of queries, query_embeddings and query_images; got {given or 'none'}.")
    batch, sizes = prepare_images(model, images)
    if query_images is not None:
        query_batch, _ = prepare_images(model, query_images)
        query_embeddings, _, _ = embed_image_queries(model, query_batch)
        nms_threshold = 0.3 if nms_threshold is None else nms_threshold
    elif queries is not None:
        query_embeddings = embed_queries(model, queries, tokenizer)
    query_embeddings = np.asarray(query_embeddings, "float32")
    if query_embeddings.ndim != 2 or len(query_embeddings) == 0:
        raise ValueError(f"query_embeddings must be (queries, dim) with at least one query, got shape {query_embeddings.shape}.")
    outputs = image_outputs(model, batch)
    logits = class_logits(model, outputs["image_features"], query_embeddings)
    return [
        _detections(image_logits, boxes, size, threshold, 1.0 if nms_threshold is None else nms_threshold)
        for image_logits, boxes, size in zip(logits, outputs["pred_boxes"], sizes)
    ]


def _detections(logits, boxes, size, threshold, nms_threshold):
    scores = 1.0 / (1.0 + np.exp(-logits.max(axis=-1)))
    labels = logits.argmax(axis=-1)
    height, width = size
    corners = keras.ops.convert_to_numpy(center_to_corners(boxes)) * np.array([width, height, width, height], "float32")
    keep = np.flatnonzero(scores > threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    if nms_threshold < 1.0 and len(keep):
        keep = keep[non_max_suppression(corners[keep], scores[keep], nms_threshold)]
    return {"boxes": corners[keep], "scores": scores[keep], "labels": labels[keep]}
