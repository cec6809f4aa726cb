"""Starting a training run from a checkpoint: `train(..., weights=PATH)`.

The checkpoint is read into a *source* model of the same registry architecture
(by the converters for transformers directories and timm `.safetensors`, by
Keras for keras-vit `.keras` files, run folders and `.weights.h5`); then every
variable of the training model is copied from the source variable of the same
path. The head is left new (sized for the dataset's classes) unless `keep_head`.
ViT position embeddings and Swin relative-position tables of another image or
window size are interpolated; any other difference is one ValueError listing all
of them, before anything is assigned.
"""

import os

import keras
import numpy as np

from keras_vit import convert
from keras_vit.applications.registry import create_model
from keras_vit.applications.saving import load_classifier
from keras_vit.layers.patch_embedding import PatchEmbedding
from keras_vit.layers.position_bias import resize_bias_table

HEAD = "head"


def checkpoint_kind(path, option="--weights"):
    """"transformers", "timm", "keras" (a .keras file or run folder) or "keras_weights"; ValueError
    otherwise, naming the `option` that gave the path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            return "transformers"
        if os.path.isfile(os.path.join(path, "model.keras")):
            return "keras"
    elif os.path.isfile(path):
        if path.endswith(".safetensors"):
            return "timm"
        if path.endswith(".weights.h5"):
            return "keras_weights"
        if path.endswith(".keras"):
            return "keras"
    elif not os.path.exists(path):
        raise ValueError(f"{option} {path!r}: no such file or folder.")
    raise ValueError(
        f"{option} {path!r} is not a checkpoint keras-vit reads. Pass a transformers save_pretrained folder "
        "(with config.json), a timm .safetensors file, a keras-vit run folder or .keras file, or a .weights.h5 file."
    )


def load_pretrained(network, model_name, path, keep_head=False, class_names=None, option="--weights"):
    """Fills `network` (built from registry `model_name`) from the checkpoint at `path`.

    Args:
        network: the training model, with its new head.
        model_name: its registry name (the checkpoint must be of that architecture).
        path: see `checkpoint_kind`.
        keep_head: also copy the checkpoint's head (same classes needed).
        class_names: the dataset's classes; with `keep_head` they must equal the
            checkpoint's when it records them (a keras-vit model does).
        option: what gave `path`, for error messages ("--weights", "backbone_weights").

    Returns a short description of what was loaded.
    """
    kind = checkpoint_kind(path, option)
    classes = network.output_shape[-1]
    input_shape = tuple(network.input_shape[1:])
    if kind == "keras":
        source, metadata = load_classifier(path, metadata_required=False)
        if keep_head and metadata is not None and class_names is not None and list(metadata.class_names) != list(class_names):
            raise ValueError(
                f"--keep-head: {path!r} was trained on the classes {metadata.class_names}, the dataset has "
                f"{list(class_names)}. Drop --keep-head to train a new head for these classes."
            )
    else:
        source = create_model(model_name, input_shape=input_shape, include_top=keep_head, classes=classes,
                              classifier_activation=None)
        if kind == "keras_weights":
            convert.load_keras_weights(source, path, include_top=keep_head)
        else:
            convert.load_weights(source, path, allow_resize=True)
    if keep_head:
        source_classes = _head_classes(source)
        if source_classes is not None and source_classes != classes:
            raise ValueError(
                f"--keep-head: the head of {path!r} has {source_classes} classes, the dataset {classes}. Drop "
                "--keep-head to train a new head, or train on a dataset with the checkpoint's classes."
            )
    copied = transfer_weights(source, network, include_head=keep_head, source_name=path)
    return f"{copied} weights from {path} ({kind}{', head kept' if keep_head else ', new head'})"


def transfer_weights(source, target, include_head=False, source_name="the checkpoint"):
    """Copies each variable of `target` from the `source` variable of the same path.

    Position embeddings and relative-position tables of another size are
    interpolated; derived index buffers of another size keep the target's.
    Everything else must match: missing or mis-shaped variables are one
    ValueError listing them all, raised before anything is assigned.
    Returns the number of variables copied.
    """
    sources = {variable.path: variable for variable in source.weights}
    embeddings = {
        layer.position_embedding.path: layer
        for layer in target._flatten_layers()
        if isinstance(layer, PatchEmbedding) and layer.use_position_embedding
    }
    plan, problems, missing = [], [], {}
    for variable in target.weights:
        if not include_head and variable.path.split("/")[0] == HEAD:
            continue
        if variable.path not in sources:
            missing.setdefault(variable.path.split("/")[0], []).append(f"{variable.path} {tuple(variable.shape)}")
            continue
        value = keras.ops.convert_to_numpy(sources[variable.path])
        if value.shape == tuple(variable.shape):
            plan.append((variable, value))
        elif variable.path in embeddings:
            plan.append((embeddings[variable.path], value))
        elif variable.path.endswith("relative_position_bias_table") and value.ndim == 2:
            window = (round(np.sqrt(variable.shape[0])) + 1) // 2
            plan.append((variable, resize_bias_table(value, window)))
        elif "index" in variable.path.rsplit("/", 1)[-1] and not variable.trainable:
            continue  # derived from the window size: the target's own is right
        else:
            problems.append(f"{variable.path}: checkpoint shape {value.shape} != model shape {tuple(variable.shape)}")
    for layer, paths in missing.items():
        problems.append(f"{paths[0]}: not in the checkpoint" if len(paths) == 1
                        else f"{layer}: its {len(paths)} weights are not in the checkpoint")
    source_only = sorted(
        path for path in set(sources) - {variable.path for variable in target.weights}
        if include_head or path.split("/")[0] != HEAD
    )
    if source_only:
        problems.append(f"{len(source_only)} checkpoint weights the model lacks, e.g. {', '.join(source_only[:5])}")
    if problems:
        shown = "\n  - ".join(problems[:12]) + (f"\n  ... ({len(problems)} in all)" if len(problems) > 12 else "")
        raise ValueError(
            f"{source_name} does not fit model {target.name!r}:\n  - {shown}\nPass a checkpoint of the same "
            "architecture as --model (depth, width, patch or window size), or choose the --model it was trained as."
        )
    for destination, value in plan:
        if isinstance(destination, PatchEmbedding):
            destination.set_position_embedding(value)
        else:
            destination.assign(value)
    return len(plan)


def _head_classes(model):
    """The output count of `model`'s `head` layer, or None when it has none."""
    try:
        return model.get_layer(HEAD).units
    except ValueError:
        return None


def freeze_backbone(network):
    """Makes every layer but the head non-trainable (a linear probe); returns the trainable count left."""
    found = False
    for layer in network.layers:
        if layer.name == HEAD:
            found = True
            continue
        layer.trainable = False
    if not found:
        raise ValueError(f"Model {network.name!r} has no 'head' layer to train alone: --freeze-backbone needs one.")
    return sum(int(np.prod(variable.shape)) for variable in network.trainable_weights)
