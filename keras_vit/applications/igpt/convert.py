"""iGPT converter: transformers `save_pretrained` directories of `model_type="imagegpt"`.

It reads the three transformers ImageGPT models, each into the matching `ImageGPT` build:

- `ImageGPTForCausalImageModeling`: the language model: `lm_head` (logits over the palette);
- `ImageGPTForImageClassification`: `classes=num_labels`, its bias-free `score` as our `head`
  on the average-pooled features;
- `ImageGPTModel` (no head): `include_top=False`, the final-norm features.

transformers' `Conv1D` projections store their weight `(in, out)`, a Keras Dense kernel as
is; `lm_head` and `score` are `nn.Linear`, `(out, in)`, and are transposed. The palette
(`clusters` of `ImageGPTImageProcessor`, in `preprocessor_config.json`) is read by
`read_palette`; the loaders also attach it to the model they fill as `model.palette`.
Importing this module registers the converter with `keras_vit.convert`.
"""

import json
import math
import os
import re

import numpy as np

from keras_vit.applications.igpt.model import ImageGPT
from keras_vit.convert import TransformersConverter, register_converter
from keras_vit.convert.transformers import read_config
from keras_vit.convert.weight_map import dense_kernel

MODEL_TYPE = "imagegpt"
PALETTE_FILE = "preprocessor_config.json"

# transformers' base-model prefix; a bare `ImageGPTModel` saves its tensors without it.
_PREFIX = "transformer."
_BARE_KEYS = ("wte.", "wpe.", "h.", "ln_f.")
# Causal-mask buffers that older transformers versions saved with the weights.
_BUFFERS = (".attn.bias", ".attn.masked_bias")

_REQUIRED_KEYS = ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size")


# ---------------------------------------------------------------------------------------------
# The palette
# ---------------------------------------------------------------------------------------------


def read_palette(directory):
    """The color palette saved beside an iGPT checkpoint, or None when it has none.

    transformers' `ImageGPTImageProcessor.save_pretrained` writes its `clusters`
    (`(512, 3)` RGB centers in [-1, 1]) to `preprocessor_config.json`; a pixel's token is
    the index of its nearest cluster, and token `k` is drawn as `(clusters[k] + 1) * 127.5`.
    The result is the palette the rest of the library takes: `keras_vit.ops.palette`,
    `keras_vit.data.quantize_*`, `keras_vit.evaluation.generation` (pass it as `palette`),
    or `keras_vit.data.save_palette("palette.npy", palette)` for the command line.

    Args:
        directory: a `save_pretrained` directory.

    Returns float32 `(colors, 3)` in [-1, 1], or None when the directory has no
    `preprocessor_config.json` or it has no `clusters`. Raises ValueError when the
    directory does not exist, the file is not JSON, or the clusters are not a
    `(colors, 3)` table of finite values in [-1, 1].
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"read_palette: {directory!r} is not a directory; pass a transformers save_pretrained directory.")
    path = os.path.join(directory, PALETTE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path!r} is not valid JSON ({error}); re-save the image processor with save_pretrained.") from error
    clusters = config.get("clusters") if isinstance(config, dict) else None
    if clusters is None:
        return None
    try:
        palette = np.asarray(clusters, dtype="float32")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path!r}: 'clusters' is not a numeric table ({error}); expected (colors, 3) RGB rows.") from error
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] == 0:
        raise ValueError(
            f"{path!r}: 'clusters' has shape {palette.shape}; expected (colors, 3) RGB rows in [-1, 1] "
            "(ImageGPT's palette: (512, 3))."
        )
    if not np.isfinite(palette).all() or np.abs(palette).max() > 1.0 + 1e-6:
        raise ValueError(
            f"{path!r}: 'clusters' holds values outside [-1, 1] (min {palette.min():g}, max {palette.max():g}); "
            "ImageGPT palettes are RGB in [-1, 1] (pixel / 127.5 - 1)."
        )
    return palette


# ---------------------------------------------------------------------------------------------
# config.json -> ImageGPT arguments
# ---------------------------------------------------------------------------------------------


def check_imagegpt_config(config, where="ImageGPT config"):
    """ValueError for an ImageGPT config keras-vit's `ImageGPT` cannot compute exactly.

    `scale_attn_weights=False` and `scale_attn_by_inverse_layer_idx=True` are supported
    (the mapping folds the attention scale into the query projection);
    `reorder_and_upcast_attn` only changes float16 numerics (keras-vit's softmax is
    float32 anyway).
    """
    activation = config.get("activation_function", "quick_gelu")
    if activation != "quick_gelu":
        raise ValueError(
            f"{where}: activation_function={activation!r} is not supported; keras-vit's iGPT uses 'quick_gelu' "
            "(x * sigmoid(1.702 x)), as every ImageGPT checkpoint does."
        )
    if config.get("add_cross_attention"):
        raise ValueError(
            f"{where}: add_cross_attention=True is not supported; keras-vit's iGPT is a decoder without cross-attention."
        )
    width, heads, inner = config.get("n_embd"), config.get("n_head"), config.get("n_inner")
    if width is not None and heads is not None and (heads < 1 or width % heads):
        raise ValueError(f"{where}: n_embd={width} is not divisible by n_head={heads}.")
    if width is not None and inner is not None and (inner < 1 or inner % width):
        raise ValueError(
            f"{where}: n_inner={inner} is not a multiple of n_embd={width}; keras-vit's iGPT sizes its MLP as "
            "mlp_ratio x width with an integer mlp_ratio."
        )
    if config.get("vocab_size") is not None and config["vocab_size"] < 2:
        raise ValueError(f"{where}: vocab_size={config['vocab_size']} leaves no color: it is the palette size + 1 (start id).")


def imagegpt_kwargs_from_config(config, tensors):
    """keras-vit `ImageGPT` arguments equivalent to a transformers `ImageGPTConfig`.

    The head follows the checkpoint's tensors: `lm_head.weight` -> logits over the palette,
    `score.weight` -> `classes=` its rows, neither -> `include_top=False`. The image side is
    `isqrt(n_positions)` (the largest square that fits when `n_positions` is not one); the
    position table keeps all `n_positions` rows. Dropout is not read: the model is built for
    inference (pass `dropout_rate=` / `attention_dropout_rate=` to fine-tune).
    """
    check_imagegpt_config(config)
    width, positions = config["n_embd"], config["n_positions"]
    inner = config.get("n_inner")
    if "lm_head.weight" in tensors:
        include_top, classes = True, None
    elif "score.weight" in tensors:
        include_top, classes = True, int(tensors["score.weight"].shape[0])
    else:
        include_top, classes = False, None
    return dict(
        hidden_dim=width,
        depth=config["n_layer"],
        num_heads=config["n_head"],
        palette_size=config["vocab_size"] - 1,
        image_size=math.isqrt(positions),
        max_positions=positions,
        mlp_ratio=4 if inner is None else inner // width,
        use_bias=True,
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
        include_top=include_top,
        classes=classes,
    )


def build_imagegpt(include_preprocessing=False, **kwargs):
    """`ImageGPT(**kwargs)`; the generic loader's `include_preprocessing` is refused when true
    (iGPT reads palette indices, not pixels)."""
    if include_preprocessing:
        raise ValueError(
            "iGPT reads palette indices, not pixels, so include_preprocessing=True has no meaning. Quantize images "
            "to the nearest color of the checkpoint's palette (keras_vit.applications.igpt.convert.read_palette)."
        )
    return ImageGPT(**kwargs)


# ---------------------------------------------------------------------------------------------
# The mapping
# ---------------------------------------------------------------------------------------------


def add_base_prefix(tensors):
    """A bare `ImageGPTModel`'s keys (`wte.weight`, `h.0...`) in the task models' layout (`transformer.`)."""
    return {(_PREFIX + key if key.startswith(_BARE_KEYS) else key): value for key, value in tensors.items()}


def map_imagegpt(weight_map):
    """Plans every variable of a keras-vit `ImageGPT` from transformers ImageGPT tensors.

    The head is the model's: `lm_head` reads `lm_head.weight`, a classifier's `head`
    reads `score.weight`, and a checkpoint head the model lacks is skipped. The
    directory's config.json is checked against the model (heads, epsilon, supported
    options) and its attention scaling folded into the queries; its palette, if any,
    becomes `model.palette`.
    """
    model, take = weight_map.model, weight_map.take
    path = weight_map.checkpoint_name
    config = _directory_config(path)
    check_imagegpt_config(config, where=os.path.join(path, "config.json"))
    weight_map.ignore(lambda key: key.endswith(_BUFFERS))

    embedding = model.get_layer("embedding")
    weight_map.set("embedding/token_embedding", take(_PREFIX + "wte.weight"))
    positions = take(_PREFIX + "wpe.weight")
    if positions is not None and positions.shape[0] != embedding.max_positions:
        weight_map.report(
            f"the checkpoint has {positions.shape[0]} positions, the model {embedding.max_positions}: build it with "
            f"max_positions={positions.shape[0]} (and image_size <= {math.isqrt(positions.shape[0])})"
        )
    weight_map.set("embedding/position_embedding", positions)

    blocks = sorted((int(m[1]), layer) for layer in model.layers if (m := re.fullmatch(r"block(\d+)", layer.name)))
    for index, block in blocks:
        source, target = f"{_PREFIX}h.{index}.", f"block{index}"
        _check_block(weight_map, block, config, index)
        weight_map.set(f"{target}/norm1/scale", take(source + "ln_1.weight"))
        weight_map.set(f"{target}/norm2/scale", take(source + "ln_2.weight"))
        factor = _query_factor(config, block.attention, index)
        _conv1d(weight_map, f"{target}/attention/qkv", source + "attn.c_attn", query_factor=factor)
        _conv1d(weight_map, f"{target}/attention/projection", source + "attn.c_proj")
        _conv1d(weight_map, f"{target}/mlp/fc1", source + "mlp.c_fc")
        _conv1d(weight_map, f"{target}/mlp/fc2", source + "mlp.c_proj")
    weight_map.set("norm/scale", take(_PREFIX + "ln_f.weight"))
    _check_epsilon(weight_map, model.get_layer("norm"), config, "norm")

    layers = {layer.name for layer in model.layers}
    for ours, theirs in (("lm_head", "lm_head"), ("head", "score")):
        if ours in layers:
            weight_map.set(f"{ours}/kernel", take(theirs + ".weight", dense_kernel))
            if f"{ours}/bias" in weight_map.variables:  # transformers' heads have none: reported as missing
                weight_map.set(f"{ours}/bias", take(theirs + ".bias"))
        else:
            weight_map.ignore(lambda key, theirs=theirs: key.startswith(theirs + "."))

    _attach_palette(weight_map, path, embedding.vocabulary_size - 1)


def _conv1d(weight_map, path, source, query_factor=1.0):
    """A transformers `Conv1D` (weight `(in, out)`: already a Keras kernel) onto the Dense at `path`.
    `query_factor` scales the first third of the outputs (the queries of a fused qkv)."""
    kernel = weight_map.take(source + ".weight")
    bias = weight_map.take(source + ".bias") if f"{path}/bias" in weight_map.variables else None
    if query_factor != 1.0:
        kernel, bias = (_scale_queries(array, query_factor) for array in (kernel, bias))
    weight_map.set(f"{path}/kernel", kernel)
    if f"{path}/bias" in weight_map.variables:
        weight_map.set(f"{path}/bias", bias)


def _scale_queries(array, factor):
    if array is None:
        return None
    array = np.array(array, dtype="float64")
    width = array.shape[-1] // 3
    array[..., :width] *= factor
    return array.astype("float32")


def _query_factor(config, attention, index):
    """What the queries must be multiplied by so that our `q.k / sqrt(head_dim)` equals
    transformers' logits (`q.k`, `/ sqrt(head_dim)` if `scale_attn_weights`, `/ (layer + 1)`
    if `scale_attn_by_inverse_layer_idx`)."""
    factor = 1.0
    if not config.get("scale_attn_weights", True):
        factor *= math.sqrt(attention.head_dim)
    if config.get("scale_attn_by_inverse_layer_idx", False):
        factor /= index + 1
    return factor


def _check_block(weight_map, block, config, index):
    heads = config.get("n_head")
    if heads is not None and block.attention.num_heads != heads:
        weight_map.report(
            f"block{index} has {block.attention.num_heads} attention heads, the checkpoint's config n_head={heads}: "
            "build the model with the checkpoint's num_heads (the head count does not change any tensor's shape)"
        )
    _check_epsilon(weight_map, block.norm1, config, f"block{index}/norm1")


def _check_epsilon(weight_map, norm, config, name):
    epsilon = config.get("layer_norm_epsilon")
    if epsilon is not None and not math.isclose(norm.epsilon, epsilon, rel_tol=1e-6):
        weight_map.report(
            f"{name} has epsilon {norm.epsilon:g}, the checkpoint's config layer_norm_epsilon={epsilon:g}: "
            "build the model with the checkpoint's layer_norm_epsilon"
        )


def _directory_config(path):
    config_path = os.path.join(path, "config.json")
    return read_config(config_path) if os.path.isfile(config_path) else {}


def _attach_palette(weight_map, path, palette_size):
    """The directory's palette becomes `model.palette` (float32 `(colors, 3)`); an unreadable one,
    or one whose size is not the model's palette, is reported with the weights' problems."""
    try:
        palette = read_palette(path) if os.path.isdir(path) else None
    except ValueError as error:
        weight_map.report(str(error))
        return
    if palette is None:
        return
    if palette.shape[0] != palette_size:
        weight_map.report(
            f"{os.path.join(path, PALETTE_FILE)!r} has {palette.shape[0]} colors, the model's palette {palette_size} "
            "(vocab_size - 1): the image processor belongs to another checkpoint"
        )
        return
    weight_map.model.palette = palette


register_converter(
    TransformersConverter(
        model_type=MODEL_TYPE,
        family="igpt",
        builder=build_imagegpt,
        builder_arguments=imagegpt_kwargs_from_config,
        map_weights=lambda weight_map, model_type, include_top, allow_resize: map_imagegpt(weight_map),
        rename=add_base_prefix,
        required_keys=_REQUIRED_KEYS,
    )
)
