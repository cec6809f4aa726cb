"""Parameter, multiply-add and attention-memory counts of a model for one image."""

import contextlib
import dataclasses
import math

import keras
import numpy as np

from keras_vit.applications.mvit.attention import MultiScaleAttention
from keras_vit.applications.resnet.local_relation import LocalRelation
from keras_vit.layers import MultiHeadAttention, MultiHeadSelfAttention, NonLocalBlock, SelfAttention2D


@dataclasses.dataclass
class Complexity:
    """Per-image cost of a model.

    Attributes:
        params: number of weights.
        macs: multiply-accumulates of the dense, convolution and attention
            products (what most papers call "FLOPs"; 2 * macs is the FLOP count).
        attention_elements: entries of every attention matrix, summed over
            layers and heads.
        attention_layers: `(layer name, heads, queries, keys)` for each attention.
    """

    params: int
    macs: int
    attention_elements: int
    attention_layers: list

    @property
    def gmacs(self):
        return self.macs / 1e9

    @property
    def gflops(self):
        return 2 * self.macs / 1e9

    def attention_bytes(self, bytes_per_element=4):
        return self.attention_elements * bytes_per_element


def measure(model, default_size=224):
    """Counts the cost of `model` on one image by recording one forward pass (a model that
    takes any image size, like DETR, is measured at `default_size`).

    Every layer call is recorded with its input and output shapes; dense and
    convolution layers contribute `kernel size x output positions`
    multiply-adds, attention layers `2 x heads x queries x keys x head_dim`,
    non-local and SAGAN blocks `queries x keys x (key width + value width)`,
    local relation layers `k^2 x (C + key channels)` per output pixel (their
    1x1 convolutions are counted as dense layers).
    """
    records = []
    with _record_layer_calls(records):
        model(np.zeros(image_input_shape(model, default_size), dtype="float32"), training=False)
    macs, elements, attention_layers = 0, 0, []
    for layer, inputs, outputs, args in records:
        if isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape)) * _positions(outputs)
        elif isinstance(layer, keras.layers.Conv2D):
            macs += int(np.prod(layer.kernel.shape)) // layer.groups * _positions(outputs)
        elif isinstance(layer, MultiHeadSelfAttention):
            tokens = inputs.shape[1]
            batch_like = _positions(inputs) // tokens  # windows, for windowed attention
            count = batch_like * layer.num_heads * tokens * tokens
            elements += count
            macs += 2 * count * layer.head_dim
            attention_layers.append((layer.name, layer.num_heads, tokens, tokens))
        elif isinstance(layer, MultiHeadAttention):  # queries over keys: the keys are the call's second input
            heads, queries, keys = layer.num_heads, inputs.shape[1], args[1].shape[1]
            count = inputs.shape[0] * heads * queries * keys
            elements += count
            macs += 2 * count * layer.head_dim
            attention_layers.append((layer.name, heads, queries, keys))
        elif isinstance(layer, MultiScaleAttention):
            count, layer_macs, queries, keys = _pooling_attention_cost(layer, inputs.shape[0])
            elements += count
            macs += layer_macs
            attention_layers.append((layer.name, layer.num_heads, queries, keys))
        elif isinstance(layer, (NonLocalBlock, SelfAttention2D)):
            queries, keys, query_width, value_width = _global_attention_shape(layer, inputs)
            count = inputs.shape[0] * queries * keys
            elements += count
            macs += count * (query_width + value_width)
            attention_layers.append((layer.name, 1, queries, keys))
        elif isinstance(layer, LocalRelation):
            # per output pixel and window cell: one relation per key channel, one product per channel
            area, pixels = layer.kernel_size**2, _positions(outputs)
            count = pixels * layer.groups * area
            elements += count
            macs += pixels * area * (layer.channels + layer.groups * layer.key_channels_per_group)
            attention_layers.append((layer.name, layer.groups, pixels // outputs.shape[0], area))
    return Complexity(model.count_params(), macs, elements, attention_layers)


def image_input_shape(model, default_size=224):
    """`(1, height, width, channels)` of one image for `model` (its images input when it takes a
    dict; `default_size` for sides it leaves open)."""
    shapes = model.input_shape
    shapes = list(shapes.values()) if isinstance(shapes, dict) else shapes if isinstance(shapes, list) else [shapes]
    shape = next(shape for shape in shapes if len(shape) == 4)
    return (1, *(default_size if side is None else side for side in shape[1:3]), shape[3])


def _pooling_attention_cost(layer, batch):
    """`(attention elements, multiply-adds, queries, keys)` of MViT's pooling attention beyond its
    Dense layers: the depthwise pooling convolutions, q @ k, attention @ v and the decomposed
    relative positions (q against the height and the width tables)."""
    prefix = int(layer.has_class_token)
    q_spatial, kv_spatial = math.prod(layer.q_size), math.prod(layer.kv_size)
    queries, keys = q_spatial + prefix, kv_spatial + prefix
    count = batch * layer.num_heads * queries * keys
    macs = 2 * count * layer.head_dim
    if layer.use_rel_pos:
        macs += batch * layer.num_heads * q_spatial * sum(layer.kv_size) * layer.head_dim
    if layer.pool_mode == "conv":
        if layer.pools_q:
            macs += batch * layer.dim * math.prod(layer.kernel_q) * q_spatial
        if layer.pools_kv:
            macs += 2 * batch * layer.dim * math.prod(layer.kernel_kv) * kv_spatial
    return count, macs, queries, keys


def _global_attention_shape(layer, inputs):
    """`(queries, keys, query/key width, value width)` of a non-local or SAGAN block."""
    spatial = [int(d) for d in inputs.shape[1:-1]]
    queries = math.prod(spatial)
    if isinstance(layer, NonLocalBlock):
        pooled = [size // pool for size, pool in zip(spatial, layer.pool_size)] if layer.sub_sample else spatial
        width = inputs.shape[-1] if layer.mode == "gaussian" else layer.bottleneck
        return queries, math.prod(pooled), (0 if layer.mode == "concatenation" else width), layer.bottleneck
    keys = queries // 4 if layer.pool_keys else queries
    return queries, keys, layer.resolved_key_channels, layer.resolved_value_channels


def _positions(tensor):
    """Number of vectors a per-position layer is applied to (all axes but the last)."""
    return math.prod(int(d) for d in tensor.shape[:-1])


@contextlib.contextmanager
def _record_layer_calls(records):
    original = keras.layers.Layer.__call__

    def recording_call(self, *args, **kwargs):
        outputs = original(self, *args, **kwargs)
        inputs = args[0] if args else next(iter(kwargs.values()), None)
        first_output = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        if hasattr(inputs, "shape") and hasattr(first_output, "shape"):
            records.append((self, inputs, first_output, args))
        return outputs

    keras.layers.Layer.__call__ = recording_call
    try:
        yield
    finally:
        keras.layers.Layer.__call__ = original
