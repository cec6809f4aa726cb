"""OWL-ViT's heads: every image token predicts a box and a score per text (or image) query."""

import keras
import numpy as np
from keras import ops

# The logit of a padded query (transformers: the float32 minimum): its sigmoid is 0.
PADDED_QUERY_LOGIT = float(np.finfo("float32").min)


@keras.saving.register_keras_serializable(package="keras_vit")
class PredictionMlp(keras.layers.Layer):
    """Three dense layers with exact GELU between them: OWL-ViT's box and objectness heads.

    Args:
        output_dim: 4 for boxes, 1 for objectness.

    Shape: `(..., width)` in, `(..., output_dim)` out (the middle layers keep the width).
    """

    def __init__(self, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim

    def build(self, input_shape):
        width = input_shape[-1]
        self.dense0 = keras.layers.Dense(width, activation="gelu", dtype=self.dtype_policy, name="dense0")
        self.dense1 = keras.layers.Dense(width, activation="gelu", dtype=self.dtype_policy, name="dense1")
        self.dense2 = keras.layers.Dense(self.output_dim, dtype=self.dtype_policy, name="dense2")
        self.dense0.build(input_shape)
        self.dense1.build(input_shape)
        self.dense2.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self.dense2(self.dense1(self.dense0(inputs)))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config["output_dim"] = self.output_dim
        return config


def grid_box_bias(grid_height, grid_width):
    """OWL-ViT's box prior, `(grid_height * grid_width, 4)` float32: the logit of each token's
    bottom-right grid corner `((col + 1) / W, (row + 1) / H)` and of one cell's size `(1/W, 1/H)`
    (epsilon 1e-4), in row-major token order. Added to the box head before the sigmoid, so an
    untrained head predicts a cell-sized box at its token's corner."""
    rows, cols = np.meshgrid(np.arange(1, grid_height + 1), np.arange(1, grid_width + 1), indexing="ij")
    corners = np.stack([cols / grid_width, rows / grid_height], axis=-1).reshape(-1, 2).clip(0.0, 1.0)
    sizes = np.broadcast_to([1.0 / grid_width, 1.0 / grid_height], corners.shape)
    logit = lambda p: np.log(p + 1e-4) - np.log1p(-p + 1e-4)
    return np.concatenate([logit(corners), logit(sizes)], axis=-1).astype("float32")


@keras.saving.register_keras_serializable(package="keras_vit")
class GridBoxes(keras.layers.Layer):
    """Box logits plus the grid prior (`grid_box_bias`), through a sigmoid.

    Args:
        grid_size: `(height, width)` of the token grid.

    Shape: `(batch, height * width, 4)` in; normalized `(cx, cy, w, h)` of the same shape out.
    """

    def __init__(self, grid_size, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(int(side) for side in grid_size)
        self.bias = grid_box_bias(*self.grid_size)

    def call(self, box_logits):
        return ops.sigmoid(ops.cast(box_logits, "float32") + ops.convert_to_tensor(self.bias))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["grid_size"] = list(self.grid_size)
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class OwlClassHead(keras.layers.Layer):
    """Open-vocabulary classification: each image token's similarity to each query.

    `dense0` maps the image tokens to the query space; image and query embeddings are
    L2-normalized (+1e-6); `logits = (cosine + shift) * (elu(scale) + 1)` with `shift`
    and `scale` predicted per token by `logit_shift` and `logit_scale` (Dense to 1).
    Padded queries get `PADDED_QUERY_LOGIT`.

    Args:
        embedding_dim: width of the query embeddings (the text projection's).

    Call arguments:
        image_features: `(batch, patches, width)`.
        query_embeddings: `(batch, queries, embedding_dim)`, or None for the class
            embeddings alone (image-conditioned queries are picked among them).
        query_mask: optional `(batch, queries)`, 1 for real queries.

    Returns `(logits (batch, patches, queries) float32, class_embeddings (batch, patches,
    embedding_dim))`; the logits are None without queries.
    """

    def __init__(self, embedding_dim, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim

    def build(self, image_features_shape, query_embeddings_shape=None, query_mask_shape=None):
        self.dense0 = keras.layers.Dense(self.embedding_dim, dtype=self.dtype_policy, name="dense0")
        self.logit_shift = keras.layers.Dense(1, dtype=self.dtype_policy, name="logit_shift")
        self.logit_scale = keras.layers.Dense(1, dtype=self.dtype_policy, name="logit_scale")
        for dense in (self.dense0, self.logit_shift, self.logit_scale):
            dense.build(image_features_shape)
        self.built = True

    def call(self, image_features, query_embeddings=None, query_mask=None):
        class_embeddings = self.dense0(image_features)
        if query_embeddings is None:
            return None, class_embeddings
        image = _normalize(ops.cast(class_embeddings, "float32"))
        queries = _normalize(ops.cast(query_embeddings, "float32"))
        similarity = ops.einsum("bpd,bqd->bpq", image, queries)
        shift = ops.cast(self.logit_shift(image_features), "float32")
        scale = ops.elu(ops.cast(self.logit_scale(image_features), "float32")) + 1.0
        logits = (similarity + shift) * scale
        if query_mask is not None:
            logits = ops.where(ops.cast(query_mask, "bool")[:, None, :], logits, PADDED_QUERY_LOGIT)
        return logits, class_embeddings

    def compute_output_spec(self, image_features, query_embeddings=None, query_mask=None):
        batch, patches = image_features.shape[:2]
        class_embeddings = keras.KerasTensor((batch, patches, self.embedding_dim), dtype=self.compute_dtype)
        if query_embeddings is None:
            return None, class_embeddings
        return keras.KerasTensor((batch, patches, query_embeddings.shape[1]), dtype="float32"), class_embeddings

    def get_config(self):
        config = super().get_config()
        config["embedding_dim"] = self.embedding_dim
        return config


def _normalize(x):
    return x / (ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)) + 1e-6)


@keras.saving.register_keras_serializable(package="keras_vit")
class UnflattenQueries(keras.layers.Layer):
    """`(batch * queries, dim)` embeddings -> `(batch, queries, dim)`, the query layout of `reference`
    (`(batch, queries, length)` token ids)."""

    def call(self, embeddings, reference):
        shape = ops.shape(reference)
        return ops.reshape(embeddings, (shape[0], shape[1], embeddings.shape[-1]))

    def compute_output_shape(self, embeddings_shape, reference_shape):
        return (reference_shape[0], reference_shape[1], embeddings_shape[-1])
