"""Reads Keras `.weights.h5` files as strictly as the transformers and timm converters.

Keras' own `model.load_weights` ignores layers the file has and the model lacks
(a depth-4 file fills a depth-2 model) and may assign part of a model before
failing. Here the file's layers and weight shapes are compared with the model's
first; any difference is a ValueError listing them all, and nothing is assigned.
"""

import functools
import os
import tempfile

import h5py

_VARS = "vars"


def load_keras_weights(model, path, include_top=True):
    """Loads a Keras `.weights.h5` file into `model` when its layers and weight shapes
    are exactly the model's (with `include_top=False` the file's head, if any, is
    skipped); otherwise a ValueError listing every difference, with nothing assigned."""
    if not os.path.isfile(path):
        raise ValueError(f"Weights file {path!r} does not exist.")
    problems = compare_weights(read_weights_h5(path), model_weights(model), include_top, variable_paths(model))
    if problems:
        raise ValueError(
            f"Weights file {path!r} does not match model {model.name!r}:\n  - "
            + "\n  - ".join(problems)
            + "\nBuild the model with the architecture the file was saved from (depth, widths, image "
            "size, channels, classes), or pass include_top=False to drop a head of another size."
        )
    model.load_weights(path)


def read_weights_h5(path):
    """`{layer path: (layer name, {variable index: shape})}` of a Keras `.weights.h5` file.

    Layer paths are Keras' (`layers/transformer_block_2/attention/qkv`); names are the
    layers' own (`qkv`), or None in files that do not record them.
    """
    layers = {}

    def visit(key, item):
        parent, _, leaf = key.rpartition("/")
        if isinstance(item, h5py.Dataset) and parent.rpartition("/")[2] == _VARS:
            _layer(layers, parent)[1][leaf] = tuple(item.shape)
        elif isinstance(item, h5py.Group) and leaf == _VARS:
            _layer(layers, key, item.attrs.get("name"))

    try:
        with h5py.File(path, "r") as file:
            file.visititems(visit)
    except OSError as error:
        raise ValueError(f"Cannot read {path!r} as a Keras .weights.h5 file: {error}") from error
    return layers


def _layer(layers, vars_path, name=None):
    layer_path = vars_path[: -len(_VARS)].rstrip("/")
    name = name.decode() if isinstance(name, bytes) else name
    entry = layers.setdefault(layer_path, [None, {}])
    entry[0] = entry[0] or (str(name) if name is not None else None)
    return entry


def model_weights(model):
    """`read_weights_h5` of `model` itself: the layout Keras would read for it, taken from
    the model saved to a temporary file (so it is Keras' own, whatever its version)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.weights.h5")
        model.save_weights(path)
        return read_weights_h5(path)


def variable_paths(model):
    """`{(layer names joined by "/", index): variable path}`: the names of the variables a
    layer saves, in Keras' order (trainable, then non-trainable)."""
    own = {}
    for variable in [*model.trainable_weights, *model.non_trainable_weights]:
        own.setdefault(variable.path.rpartition("/")[0], []).append(variable.path)
    return {(layer, index): path for layer, paths in own.items() for index, path in enumerate(paths)}


def compare_weights(file_layers, model_layers, include_top=True, variable_names=None):
    """The differences between a file's and a model's layers (with variables) and shapes,
    as lines of a report; `include_top=False` skips the file's `head` layer.
    `variable_names` (`variable_paths(model)`) names the model's variables in the report."""
    file_names = {path: name for path, (name, _) in file_layers.items()}
    names = {**file_names, **{path: name for path, (name, _) in model_layers.items() if name}}
    label = functools.partial(_readable, names=names, variable_names=variable_names or {})
    file_vars, model_vars = _variables(file_layers), _variables(model_layers)
    if not include_top:  # as the converters: a headless model skips the checkpoint's head
        file_vars = {key: shape for key, shape in file_vars.items() if file_names.get(_top_path(key[0])) != "head"}
    problems = []
    for what, keys in (
        ("weights the model has and the file lacks", sorted(set(model_vars) - set(file_vars))),
        ("weights in the file the model does not have", sorted(set(file_vars) - set(model_vars))),
    ):
        if keys:
            problems.append(f"{what}: {_short(_by_layer(keys, names, label))}")
    for key in sorted(set(file_vars) & set(model_vars)):
        if file_vars[key] != model_vars[key]:
            problems.append(f"{label(key)}: file shape {file_vars[key]} != model shape {model_vars[key]}")
    return problems


def _variables(layers):
    return {(path, index): shape for path, (_, shapes) in layers.items() for index, shape in shapes.items()}


def _by_layer(keys, names, label):
    """A model layer with several of `keys` once (`block_2 (layers/transformer_block_2): 12 weights`),
    a single weight by its label."""
    groups = {}
    for key in keys:
        groups.setdefault(_top_path(key[0]), []).append(key)
    return [
        f"{_name_of(top, names)} ({top}): {len(group)} weights" if len(group) > 1 else label(group[0])
        for top, group in sorted(groups.items())
    ]


def _readable(key, names, variable_names):
    """`block_0/mlp/fc1/kernel (layers/transformer_block/mlp/fc1/vars/0)`; a variable the
    model does not have is `<layer names> variable <index>`."""
    path, index = key
    layer = _name_of(path, names)
    name = variable_names.get((layer, int(index))) if index.isdigit() else None
    return f"{name or f'{layer} variable {index}'} ({path + '/' if path else ''}{_VARS}/{index})"


def _name_of(path, names):
    """The layer names along `path` joined by "/", or the path where names are unknown."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    known = [names[prefix] for prefix in prefixes if names.get(prefix)]
    return "/".join(known) if known else path or "the model"


def _top_path(path):
    """The path of the model's own layer that holds `path` (`layers/transformer_block_2`)."""
    return "/".join(path.split("/")[:2]) if path.startswith("layers/") else path


def _short(items, limit=8):
    shown = "; ".join(items[:limit])
    return shown + (f"; ... ({len(items)} in all)" if len(items) > limit else "")
