"""Strict assignment of foreign tensors to a Keras model's variables."""

import os

import numpy as np


def read_safetensors(path):
    """Reads a `.safetensors` file into a dict of NumPy arrays (never unpickles)."""
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint file {path!r} does not exist.")
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own error types
        if "bfloat16" in str(error) or "bf16" in str(error):
            return _read_safetensors_via_torch(path)
        raise ValueError(f"Cannot read {path!r} as safetensors: {error}") from error


def _read_safetensors_via_torch(path):
    from safetensors.torch import load_file

    return {key: value.float().numpy() for key, value in load_file(path).items()}


class WeightMap:
    """Collects `target variable path -> array` and assigns them all-or-nothing.

    Every variable of the model must receive exactly one array and every source
    tensor must be consumed (unless explicitly ignored); otherwise nothing is
    assigned and a ValueError lists what is missing, unused or mis-shaped.
    """

    def __init__(self, model, source, checkpoint_name):
        self.model = model
        self.source = dict(source)
        self.checkpoint_name = checkpoint_name
        self.variables = {variable.path: variable for variable in model.weights}
        self.targets = {}
        self.used = set()
        self.ignored = set()
        self.absent = []
        self.problems = []
        self.skipped = set()

    def take(self, key, transform=None):
        """The source tensor `key` (through `transform`), marked as used.

        An absent key is noted for the final report and gives None, which
        `set` skips, so one pass collects every problem.
        """
        if key not in self.source:
            self.absent.append(key)
            return None
        self.used.add(key)
        array = np.asarray(self.source[key])
        return transform(array) if transform else array

    def take_concatenated(self, keys, transform=None, axis=-1):
        """Several source tensors concatenated (e.g. separate q, k, v into one qkv)."""
        parts = [self.take(key, transform) for key in keys]
        return None if any(part is None for part in parts) else np.concatenate(parts, axis=axis)

    def report(self, problem):
        """Adds a problem (said once) to the report `assign` raises."""
        if problem not in self.problems:
            self.problems.append(problem)

    def has(self, key):
        return key in self.source

    def ignore(self, predicate):
        """Marks source keys for which `predicate(key)` is true as deliberately unused."""
        self.ignored.update(key for key in self.source if predicate(key))

    def set(self, path, array):
        """Plans `array` for the variable at `path`; None (an absent or unfit tensor, already
        reported) skips it."""
        if path not in self.variables:
            raise ValueError(f"{self.model.name} has no variable {path!r} (mapping bug or wrong architecture).")
        if array is None:
            self.skipped.add(path)
        else:
            self.targets[path] = np.asarray(array)

    def assign(self):
        """Checks coverage and shapes, then assigns every variable."""
        problems = list(self.problems)
        if self.absent:
            problems.append(f"tensors this model needs that the checkpoint lacks: {_short(self.absent)}")
        missing = sorted(set(self.variables) - set(self.targets) - self.skipped)
        if missing:
            problems.append(f"model variables with no tensor in the checkpoint: {_short(missing)}")
        unused = sorted(set(self.source) - self.used - self.ignored)
        if unused:
            problems.append(f"checkpoint tensors this model does not use: {_short(unused)}")
        for path, array in sorted(self.targets.items()):
            expected = tuple(self.variables[path].shape)
            if tuple(array.shape) != expected:
                problems.append(f"{path}: checkpoint shape {tuple(array.shape)} != model shape {expected}")
        if problems:
            raise ValueError(
                f"Checkpoint {self.checkpoint_name} does not match model {self.model.name!r}:\n  - "
                + "\n  - ".join(problems)
                + "\nBuild the model with the checkpoint's architecture (the loaders read it from the "
                "checkpoint), or pass include_top=False to drop a head of another size."
            )
        for path, array in self.targets.items():
            variable = self.variables[path]
            variable.assign(array.astype(variable.dtype))


def _short(names, limit=8):
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def dense_kernel(weight):
    """PyTorch Linear weight `(out, in)` -> Keras Dense kernel `(in, out)`."""
    return np.transpose(weight)


def conv_kernel(weight):
    """PyTorch Conv2d weight `(out, in, kh, kw)` -> Keras kernel `(kh, kw, in, out)`."""
    return np.transpose(weight, (2, 3, 1, 0))


def map_dense(weight_map, path, source):
    """Plans a torch `nn.Linear` named `source` onto the Keras Dense layer at `path`."""
    weight_map.set(f"{path}/kernel", weight_map.take(source + ".weight", dense_kernel))
    weight_map.set(f"{path}/bias", weight_map.take(source + ".bias"))


def map_norm(weight_map, path, source):
    """Plans a torch LayerNorm / GroupNorm / BatchNorm affine pair onto `path`'s gamma and beta."""
    weight_map.set(f"{path}/gamma", weight_map.take(source + ".weight"))
    weight_map.set(f"{path}/beta", weight_map.take(source + ".bias"))
