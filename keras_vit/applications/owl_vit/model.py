"""OWL-ViT (Minderer et al., ECCV 2022) and OWLv2 (Minderer et al., NeurIPS 2023): open-vocabulary
detection on CLIP's towers.

CLIP's image pooling is removed: every patch token, multiplied by the class token and
normalized, predicts a box (a 3-layer MLP plus a grid prior) and a logit per query, the
cosine similarity of its class embedding with the query's text embedding, shifted and
scaled per token. A query is free text (embedded by the text tower) or an image region
(embedded by the same class head). OWLv2 adds an objectness head. `OWLViT` is the one
builder, over any CLIP model of the registry (`clip="clip_b32"`) or one given;
`owlvit_b32/b16/l14` and `owlv2_b16/l14` are its variants.
"""

import keras
from keras import ops

from keras_vit.applications import common
from keras_vit.applications.owl_vit import detect as detection
from keras_vit.applications.owl_vit.loss import OWLViTLoss
from keras_vit.applications.owl_vit.layers import (
    GridBoxes,
    OwlClassHead,
    PredictionMlp,
    UnflattenQueries,
)
from keras_vit.applications.registry import ModelSpec, create_model, model_info, register_model

OWL_VIT_VARIANTS = {
    # Small enough to train on the offline shapes data on a CPU.
    "owlvit_pico": dict(clip="clip_pico16"),
    "owlvit_b32": dict(clip="clip_b32"),
    "owlvit_b16": dict(clip="clip_b16"),
    "owlvit_l14": dict(clip="clip_l14"),
    "owlv2_b16": dict(clip="clip_b16", objectness=True),
    "owlv2_l14": dict(clip="clip_l14", objectness=True),
}

INPUT_KEYS = ("images", "input_ids", "attention_mask")


@keras.saving.register_keras_serializable(package="keras_vit")
class OwlViTDetector(keras.Model):
    """The OWL-ViT network over a CLIP text tower and a CLIP vision tower.

    Args:
        text_encoder: a CLIP text tower (`{"input_ids", "attention_mask"}` ->
            `{"tokens", "embedding"}`).
        vision_encoder: a CLIP vision tower (images -> `{"tokens", "embedding"}`) with the
            same projection width.
        contrastive_logits: CLIP's `ContrastiveLogits` layer (its temperature), which scores
            each query against the whole image (`image_text_logits`).
        objectness: add OWLv2's objectness head (it reads the image features without
            passing gradients back into them).
        layer_norm_epsilon: of the LayerNorm after the class-token merge.

    Inputs: `{"images": (batch, H, W, 3), "input_ids": (batch, queries, length),
    "attention_mask": (batch, queries, length)}`; a query whose ids are all 0 is padding.
    Outputs: `{"logits": (batch, patches, queries)` (padded queries: the float32 minimum),
    `"pred_boxes": (batch, patches, 4)` normalized (cx, cy, w, h), `"image_embeddings":
    (batch, h, w, width)` the token features, `"class_embeddings": (batch, patches, dim)` and
    `"text_embeddings": (batch, queries, dim)` (both before L2 normalization), `"image_text_logits": (batch, queries)`
    CLIP's whole-image score of each query}, and OWLv2's `"objectness_logits": (batch, patches)`.
    """

    def __init__(self, text_encoder, vision_encoder, contrastive_logits, objectness=False, layer_norm_epsilon=1e-5, **kwargs):
        dim = text_encoder.output["embedding"].shape[-1]
        if vision_encoder.output["embedding"].shape[-1] != dim:
            raise ValueError(
                f"OWL-ViT: the vision tower projects to {vision_encoder.output['embedding'].shape[-1]} and the text "
                f"tower to {dim}; build both with the same projection_dim."
            )
        length = text_encoder.input["input_ids"].shape[-1]
        images = keras.Input(shape=vision_encoder.input_shape[1:], name="images")
        input_ids = keras.Input(shape=(None, length), dtype="int32", name="input_ids")
        attention_mask = keras.Input(shape=(None, length), dtype="int32", name="attention_mask")

        vision = vision_encoder(images)
        tokens = vision["tokens"]
        features = tokens[:, 1:] * tokens[:, :1]  # CLIP's pooling replaced: every patch token times the class token
        features = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="layer_norm")(features)
        flatten = lambda x: ops.reshape(x, (-1, length))  # every query of every image through the text tower at once
        text = text_encoder({"input_ids": flatten(input_ids), "attention_mask": flatten(attention_mask)})
        text_embeddings = UnflattenQueries(name="unflatten_queries")(text["embedding"], input_ids)
        query_mask = ops.cast(input_ids[:, :, 0] > 0, "int32")

        logits, class_embeddings = OwlClassHead(dim, name="class_head")(features, text_embeddings, query_mask)
        grid = vision_encoder.get_layer("patch_embedding").grid_size
        pred_boxes = GridBoxes(grid, name="box_bias")(PredictionMlp(4, name="box_head")(features))
        outputs = {
            "logits": logits,
            "pred_boxes": pred_boxes,
            "image_embeddings": keras.layers.Reshape((*grid, features.shape[-1]), name="feature_map")(features),
            "class_embeddings": class_embeddings,
            "text_embeddings": text_embeddings,
            "image_text_logits": contrastive_logits(vision["embedding"], text_embeddings),
        }
        if objectness:
            objectness_logits = PredictionMlp(1, name="objectness_head")(ops.stop_gradient(features))
            outputs["objectness_logits"] = objectness_logits[..., 0]
        super().__init__(
            inputs={"images": images, "input_ids": input_ids, "attention_mask": attention_mask}, outputs=outputs, **kwargs
        )
        self.text_encoder = text_encoder
        self.vision_encoder = vision_encoder
        self.contrastive_logits = contrastive_logits
        self.objectness = objectness
        self.layer_norm_epsilon = layer_norm_epsilon
        self.grid_size = tuple(grid)
        self.image_size = tuple(vision_encoder.input_shape[1:3])
        self.query_length = length
        self.tokenizer = None  # a CLIPTokenizer, set by the checkpoint loader (or by hand) for text queries

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(check_inputs(inputs, self.query_length), *args, **kwargs)

    def detect(self, images, queries=None, **kwargs):
        """Boxes, scores and query labels per image: `keras_vit.applications.owl_vit.detect.detect`
        (text `queries`, `query_embeddings=` or `query_images=`, `threshold=`, `nms_threshold=`)."""
        return detection.detect(self, images, queries, **kwargs)

    def embed_queries(self, queries, tokenizer=None):
        """Text queries -> `(queries, dim)` embeddings to reuse across images (`detect(query_embeddings=...)`)."""
        return detection.embed_queries(self, queries, tokenizer)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`OWLViTLoss` reads the whole output dict; any other compiled loss goes through Keras."""
        if isinstance(self.loss, OWLViTLoss):
            loss = self.loss(y, y_pred)
            return loss + ops.sum(self.losses) if self.losses else loss
        return super().compute_loss(x, y, y_pred, sample_weight, training)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "text_encoder": keras.saving.serialize_keras_object(self.text_encoder),
            "vision_encoder": keras.saving.serialize_keras_object(self.vision_encoder),
            "contrastive_logits": keras.saving.serialize_keras_object(self.contrastive_logits),
            "objectness": self.objectness,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("text_encoder", "vision_encoder", "contrastive_logits"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def check_inputs(inputs, query_length):
    """The detector's input dict, checked: its keys, ranks, the query length and matching batch sizes."""
    if not isinstance(inputs, dict) or set(inputs) != set(INPUT_KEYS):
        given = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(
            f"OWL-ViT takes a dict with keys {list(INPUT_KEYS)}, got {given}. Tokenize text queries with "
            "keras_vit.data.CLIPTokenizer(...).batch_queries(...), or call detector.detect(images, queries=[...])."
        )
    shapes = {key: tuple(inputs[key].shape) for key in INPUT_KEYS}
    for key, rank in (("images", 4), ("input_ids", 3), ("attention_mask", 3)):
        if len(shapes[key]) != rank:
            raise ValueError(f"OWL-ViT: {key} must have rank {rank}, got shape {shapes[key]}.")
    if shapes["input_ids"] != shapes["attention_mask"]:
        raise ValueError(f"OWL-ViT: input_ids {shapes['input_ids']} and attention_mask {shapes['attention_mask']} differ in shape.")
    if shapes["input_ids"][-1] not in (None, query_length):
        raise ValueError(
            f"OWL-ViT: queries are {shapes['input_ids'][-1]} tokens long, the text tower takes {query_length}: "
            f"tokenize with sequence_length={query_length}."
        )
    batches = {shapes["images"][0], shapes["input_ids"][0]} - {None}
    if len(batches) > 1:
        raise ValueError(
            f"OWL-ViT: {shapes['images'][0]} images but queries for {shapes['input_ids'][0]}: pass one row of queries "
            "per image (repeat the same queries for every image, padded to the same count)."
        )
    return inputs


def OWLViT(
    clip="clip_b32",
    objectness=False,
    *,
    text=None,
    vision=None,
    projection_dim=None,
    weights=None,
    input_shape=None,
    include_preprocessing=True,
    vocabulary_size=None,
    query_length=16,
    dropout_rate=0.0,
    layer_norm_epsilon=1e-5,
    default_size=768,
    name="owl_vit",
):
    """Builds an OWL-ViT (or, with `objectness`, OWLv2) detector on a CLIP model.

    Args:
        clip: a CLIP registry name ("clip_b32", "clip_b16", "clip_l14", "clip_pico16"),
            built for this input size and `query_length`-token queries; or a CLIP
            `keras.Model` (`keras_vit.applications.clip`), whose towers are used as they are.
        objectness: OWLv2's objectness head.
        text, vision, projection_dim, vocabulary_size: with a registry name, overrides of
            its towers (`CLIP`'s arguments; None keeps the variant's).
        weights: None, or a transformers `OwlViTForObjectDetection` /
            `Owlv2ForObjectDetection` directory.
        input_shape: `(height, width, 3)`, default `(default_size, default_size, 3)`;
            images are resized to it (OWLv2: padded to a square first).
        include_preprocessing: inputs are [0, 255] pixels (CLIP's statistics inside).
        query_length: tokens per query (16).
        dropout_rate, layer_norm_epsilon: of both towers (0 and 1e-5 as published).

    Returns an `OwlViTDetector` (its docstring lists the inputs and outputs).
    """
    if isinstance(clip, str):
        if model_info(clip).task != "image_text":
            raise ValueError(f"{name}: clip={clip!r} is a {model_info(clip).task} model; pass a CLIP name such as 'clip_b32'.")
        overrides = dict(text=text, vision=vision, projection_dim=projection_dim, vocabulary_size=vocabulary_size)
        clip = create_model(
            clip,
            input_shape=common.image_input_shape(name, input_shape, default_size),
            include_preprocessing=include_preprocessing,
            sequence_length=query_length,
            dropout_rate=dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            **{key: value for key, value in overrides.items() if value is not None},
        )
    layers = {layer.name for layer in getattr(clip, "layers", ())}
    if not {"text_encoder", "vision_encoder", "contrastive_logits"} <= layers:
        raise ValueError(
            f"{name}: clip must be a CLIP registry name such as 'clip_b32' or a CLIP model with text_encoder, "
            f"vision_encoder and contrastive_logits layers; got {clip!r}."
        )
    model = OwlViTDetector(
        clip.get_layer("text_encoder"),
        clip.get_layer("vision_encoder"),
        clip.get_layer("contrastive_logits"),
        objectness,
        layer_norm_epsilon,
        name=name,
    )
    return common.load_weights(model, weights, family="owl_vit")


def _register(name, constructor_name, description, params, default_size):
    return register_model(
        ModelSpec(
            name=name,
            constructor_name=constructor_name,
            family="owl_vit",
            builder=OWLViT,
            config=OWL_VIT_VARIANTS[name],
            description=description,
            task="open_vocabulary_detection",
            default_size=default_size,
            params=params,
            no_weight_decay=("class_token", "position_embedding", "logit_scale"),
        )
    )


OWLViTPico = _register("owlvit_pico", "OWLViTPico", "a small OWL-ViT (2-layer towers of 64) for 128 px images", None, 128)
OWLViTBase32 = _register("owlvit_b32", "OWLViTBase32", "OWL-ViT with CLIP B/32", 153_231_879, 768)
OWLViTBase16 = _register("owlvit_b16", "OWLViTBase16", "OWL-ViT with CLIP B/16", 152_789_511, 768)
OWLViTLarge14 = _register("owlvit_l14", "OWLViTLarge14", "OWL-ViT with CLIP L/14", 433_888_519, 840)
OWLv2Base16 = _register("owlv2_b16", "OWLv2Base16", "OWLv2 with CLIP B/16 and an objectness head", 154_966_792, 960)
OWLv2Large14 = _register("owlv2_l14", "OWLv2Large14", "OWLv2 with CLIP L/14 and an objectness head", 437_610_760, 1008)
