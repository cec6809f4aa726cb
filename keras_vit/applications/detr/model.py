"""DETR (Carion et al., ECCV 2020): a CNN, a transformer encoder-decoder and a fixed set of
object queries that predict boxes directly, trained with bipartite matching (`loss.py`).

`DETR` is the family's one builder; `detr_r50` and `detr_r101` are its ResNet variants
with DETR's frozen BatchNorm and frozen stem + res2. Any keras-vit model that returns a
feature map `(batch, h, w, channels)` can be the backbone (`backbone="swin_t"`).
"""

import keras

from keras_vit.applications import common
from keras_vit.applications.detr.layers import DetrDecoderLayer, DetrEncoderLayer, ObjectQueries, ResizeMask
from keras_vit.applications.detr.loss import DETRLoss
from keras_vit.applications.registry import ModelSpec, create_model, model_info, register_model
from keras_vit.layers.preprocessing import ImageNormalization
from keras_vit.layers.sine_position_embedding import SinePositionEmbedding2D

# DETR freezes the ResNet's stem and res2 ("layer1") besides every BatchNorm.
RESNET_FROZEN_LAYERS = ("stem_", "stage0_")

DETR_VARIANTS = {
    # Small enough to learn the offline shapes_detection dataset on a CPU.
    "detr_pico": dict(
        backbone="resnet_pico", num_queries=20, hidden_dim=128, num_heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=512,
        freeze_batchnorm=False,  # its backbone trains from scratch: BatchNorm must learn its statistics
    ),
    "detr_r50": dict(backbone="resnet50", frozen_backbone_layers=RESNET_FROZEN_LAYERS),
    "detr_r101": dict(backbone="resnet101", frozen_backbone_layers=RESNET_FROZEN_LAYERS),
}


@keras.saving.register_keras_serializable(package="keras_vit")
class DetrDetector(keras.Model):
    """The DETR network around a given feature-map backbone.

    Images are normalized (ImageNet statistics) when `include_preprocessing`,
    then zeroed on the padding, as DETR pads normalized images; the backbone's
    map is projected to `hidden_dim`, flattened and encoded with sine positions
    computed from the resized pixel mask; `num_queries` learned queries decode
    it; every decoder layer's output goes through the shared final LayerNorm
    and the two heads.

    Args:
        backbone: a `keras.Model` mapping `(batch, H, W, 3)` to `(batch, h, w, c)`.
        classes: object classes; the logits add one "no object" class at the end.
        num_queries, hidden_dim, num_heads, encoder_layers, decoder_layers,
            ffn_dim, dropout_rate: the transformer (DETR: 100, 256, 8, 6, 6, 2048, 0.1).
        frozen_backbone_layers: name prefixes of backbone layers whose weights
            are not trained.
        freeze_batchnorm: the backbone's BatchNorm layers use their stored
            statistics and are not trained (DETR's FrozenBatchNorm2d, for a
            pretrained backbone); False for a backbone trained from scratch.
        include_preprocessing: inputs are raw [0, 255] pixels.

    Inputs: images `(batch, H, W, 3)`, or `{"images": ..., "pixel_mask": (batch, H, W)}`
    with 1 on real pixels and 0 on padding.
    Outputs: `{"logits": (batch, num_queries, classes + 1), "pred_boxes": (batch,
    num_queries, 4)}` with boxes normalized (cx, cy, w, h) in the unpadded image; when
    called with `training=True` also `"aux_logits"` and `"aux_boxes"` of the first
    `decoder_layers - 1` layers, `(batch, decoder_layers - 1, num_queries, ...)`.
    """

    def __init__(
        self,
        backbone,
        classes=91,
        num_queries=100,
        hidden_dim=256,
        num_heads=8,
        encoder_layers=6,
        decoder_layers=6,
        ffn_dim=2048,
        dropout_rate=0.1,
        frozen_backbone_layers=(),
        freeze_batchnorm=True,
        include_preprocessing=True,
        **kwargs,
    ):
        _freeze(backbone, tuple(frozen_backbone_layers), freeze_batchnorm)
        image_shape = tuple(backbone.input_shape[1:])
        images = keras.Input(shape=image_shape, name="images")
        pixel_mask = keras.Input(shape=image_shape[:2], name="pixel_mask")
        x = images
        if include_preprocessing:
            x = ImageNormalization(common.IMAGENET_MEAN, common.IMAGENET_STD, name="preprocessing")(x)
        x = keras.layers.Multiply(name="zero_padding")([x, keras.ops.expand_dims(pixel_mask, -1)])
        features = backbone(x)
        mask = ResizeMask(name="resize_mask")(pixel_mask, features)
        position = SinePositionEmbedding2D(hidden_dim // 2, name="position_embedding")(mask)
        x = keras.layers.Conv2D(hidden_dim, 1, name="input_projection")(features)
        memory = keras.layers.Reshape((-1, hidden_dim), name="flatten")(x)
        position = keras.layers.Reshape((-1, hidden_dim), name="flatten_position")(position)
        mask = keras.layers.Reshape((-1,), name="flatten_mask")(mask)
        for index in range(encoder_layers):
            memory = DetrEncoderLayer(num_heads, ffn_dim, dropout_rate, name=f"encoder_layer{index}")(
                memory, position=position, padding_mask=mask
            )
        query_position = ObjectQueries(num_queries, hidden_dim, name="object_queries")(memory)
        target = keras.ops.zeros_like(query_position)
        decoder_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="decoder_norm")
        outputs = []
        for index in range(decoder_layers):
            target = DetrDecoderLayer(num_heads, ffn_dim, dropout_rate, name=f"decoder_layer{index}")(
                target, memory, query_position=query_position, memory_position=position, memory_mask=mask
            )
            outputs.append(decoder_norm(target))
        decoded = keras.ops.stack(outputs, axis=1)  # (batch, decoder_layers, queries, hidden_dim)
        logits = keras.layers.Dense(classes + 1, name="class_head")(decoded)
        boxes = decoded
        for index, activation in enumerate(("relu", "relu", "sigmoid")):
            boxes = keras.layers.Dense(4 if index == 2 else hidden_dim, activation=activation, name=f"box_head{index}")(boxes)
        outputs = {
            "logits": logits[:, -1],
            "pred_boxes": boxes[:, -1],
            "aux_logits": logits[:, :-1],
            "aux_boxes": boxes[:, :-1],
        }
        super().__init__(inputs={"images": images, "pixel_mask": pixel_mask}, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.classes = classes
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.ffn_dim = ffn_dim
        self.dropout_rate = dropout_rate
        self.frozen_backbone_layers = tuple(frozen_backbone_layers)
        self.freeze_batchnorm = freeze_batchnorm
        self.include_preprocessing = include_preprocessing

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(_as_input_dict(inputs), *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        outputs = super().call(inputs, training=training)
        if not training:
            outputs = {key: outputs[key] for key in ("logits", "pred_boxes")}
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`DETRLoss` reads the whole output dict; any other compiled loss goes through Keras."""
        if isinstance(self.loss, DETRLoss):
            loss = self.loss(y, y_pred)
            return loss + keras.ops.sum(self.losses) if self.losses else loss
        return super().compute_loss(x, y, y_pred, sample_weight, training)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "classes": self.classes,
            "num_queries": self.num_queries,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "encoder_layers": self.encoder_layers,
            "decoder_layers": self.decoder_layers,
            "ffn_dim": self.ffn_dim,
            "dropout_rate": self.dropout_rate,
            "frozen_backbone_layers": list(self.frozen_backbone_layers),
            "freeze_batchnorm": self.freeze_batchnorm,
            "include_preprocessing": self.include_preprocessing,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def _as_input_dict(inputs):
    """`{"images", "pixel_mask"}` from images or a dict, checking the mask's shape."""
    if not isinstance(inputs, dict):
        inputs = {"images": inputs}
    if "images" not in inputs or set(inputs) - {"images", "pixel_mask"}:
        raise ValueError(f"DETR takes images, or a dict with 'images' and 'pixel_mask'; got a dict with keys {sorted(inputs)}.")
    images, pixel_mask = inputs["images"], inputs.get("pixel_mask")
    if not isinstance(images, keras.KerasTensor):
        images = keras.ops.convert_to_tensor(images)
    if pixel_mask is None:
        pixel_mask = keras.ops.ones_like(images[..., 0])
    elif not isinstance(pixel_mask, keras.KerasTensor):
        pixel_mask = keras.ops.convert_to_tensor(pixel_mask, dtype=images.dtype)
    expected, given = tuple(images.shape[:3]), tuple(pixel_mask.shape)
    if len(given) != 3 or any(e is not None and g is not None and e != g for e, g in zip(expected, given)):
        raise ValueError(
            f"pixel_mask has shape {given} but the images are {tuple(images.shape)}: pass a (batch, height, width) "
            "mask, 1 on real pixels and 0 on padding, one per image."
        )
    return {"images": images, "pixel_mask": pixel_mask}


def _freeze(backbone, frozen_prefixes, freeze_batchnorm):
    """Freezes the layers of `backbone` whose names start with one of `frozen_prefixes`, and
    with `freeze_batchnorm` every BatchNorm (stored statistics, fixed scale and shift)."""
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        if (freeze_batchnorm and is_batchnorm) or layer.name.startswith(frozen_prefixes):
            layer.trainable = False
    unmatched = [prefix for prefix in frozen_prefixes if not any(layer.name.startswith(prefix) for layer in backbone.layers)]
    if unmatched:
        raise ValueError(
            f"frozen_backbone_layers {unmatched} match no layer of the backbone {backbone.name!r}; its layers are "
            f"{[layer.name for layer in backbone.layers[:8]]}... Pass name prefixes of its layers, or () to train them all."
        )


def feature_backbone(backbone, input_shape):
    """The backbone as a feature-map model: a registry name (built without its head, without
    preprocessing, for `input_shape`) or a `keras.Model` returning `(batch, h, w, channels)`
    or a list of such maps (`features_only=True`; the last is used)."""
    if isinstance(backbone, str):
        spec = model_info(backbone)
        if spec.task != "classification":
            raise ValueError(f"backbone {backbone!r} is a {spec.task} model; pass an image classifier's name such as 'resnet50' or 'swin_t'.")
        backbone = create_model(
            backbone, include_top=False, pooling=None, include_preprocessing=False, input_shape=input_shape
        )
    if not isinstance(backbone, keras.Model):
        raise ValueError(f"backbone must be a registry name such as 'resnet50' or a keras.Model, got {backbone!r}.")
    outputs = getattr(backbone, "outputs", None) or []
    if len(outputs) > 1:  # a multi-scale extractor (`features_only=True`): DETR reads the last, coarsest map
        backbone = keras.Model(backbone.input, outputs[-1], name=backbone.name)
    if len(backbone.output_shape) != 4:
        raise ValueError(
            f"The backbone {backbone.name!r} returns {backbone.output_shape}, not a feature map (batch, h, w, channels). "
            "Pass a convolutional or hierarchical model (ResNet, Swin) built with include_top=False, pooling=None."
        )
    return backbone


def DETR(
    backbone="resnet50",
    num_queries=100,
    hidden_dim=256,
    num_heads=8,
    encoder_layers=6,
    decoder_layers=6,
    ffn_dim=2048,
    dropout_rate=0.1,
    frozen_backbone_layers=(),
    freeze_batchnorm=True,
    *,
    weights=None,
    input_shape=None,
    classes=91,
    include_preprocessing=True,
    default_size=800,
    name="detr",
):
    """Builds a DETR detector.

    Args:
        backbone: a registry name ("resnet50", "swin_t", ...) or a feature-map
            `keras.Model` (`include_top=False, pooling=None`, or a multi-scale
            `features_only=True` model, whose last map is used).
        num_queries: object queries: the most objects one image can hold.
        hidden_dim, num_heads, encoder_layers, decoder_layers, ffn_dim,
            dropout_rate: the transformer (DETR: 256, 8, 6, 6, 2048, 0.1).
        frozen_backbone_layers: name prefixes of backbone layers not trained
            (`detr_r50`: the stem and res2).
        freeze_batchnorm: the backbone's BatchNorms keep their statistics and
            are not trained (DETR, pretrained backbone); False to train them
            (a backbone from scratch, as `detr_pico`).
        weights: None, or a local checkpoint: a transformers
            `DetrForObjectDetection` directory or DETR's original state dict.
        input_shape: `(height, width, 3)`; the default `(None, None, 3)` takes
            images of any size (a Swin backbone needs a fixed size).
        classes: object classes (COCO: 91 category ids); a "no object" logit is added.
        include_preprocessing: inputs are raw [0, 255] pixels (normalized inside).

    Returns a `DetrDetector` (see its docstring for inputs and outputs).
    """
    if not isinstance(common.as_int(classes), int) or classes < 1:
        raise ValueError(f"{name}: classes must be a positive int, got {classes!r}.")
    if not isinstance(common.as_int(num_queries), int) or num_queries < 1:
        raise ValueError(f"{name}: num_queries must be a positive int, got {num_queries!r}.")
    if hidden_dim % num_heads or hidden_dim % 4:
        raise ValueError(f"{name}: hidden_dim {hidden_dim} must be a multiple of num_heads {num_heads} and of 4 (sine positions).")
    if isinstance(backbone, str) or input_shape is not None:
        input_shape = common.image_input_shape(name, input_shape or (None, None, 3), default_size, any_size=True)
    model = DetrDetector(
        feature_backbone(backbone, input_shape),
        classes=int(classes),
        num_queries=int(num_queries),
        hidden_dim=hidden_dim,
        num_heads=num_heads,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        ffn_dim=ffn_dim,
        dropout_rate=dropout_rate,
        frozen_backbone_layers=frozen_backbone_layers,
        freeze_batchnorm=freeze_batchnorm,
        include_preprocessing=include_preprocessing,
        name=name,
    )
    return common.load_weights(model, weights, family="detr")


def register_detr(name, constructor_name, description, params, default_size=800):
    return register_model(
        ModelSpec(
            name=name,
            constructor_name=constructor_name,
            family="detr",
            builder=DETR,
            config=DETR_VARIANTS[name],
            description=description,
            task="detection",
            default_size=default_size,
            params=params,
        )
    )


DETRPico = register_detr("detr_pico", "DETRPico", "a small DETR (pico ResNet, 2 + 2 layers of 128, 20 queries)", None, 128)
DETRResNet50 = register_detr("detr_r50", "DETRResNet50", "DETR with a ResNet-50 (91 COCO ids)", 41_302_368)
DETRResNet101 = register_detr("detr_r101", "DETRResNet101", "DETR with a ResNet-101 (91 COCO ids)", 60_242_272)
