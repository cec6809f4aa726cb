"""One test helper for every `keras_vit>` layer (in the spirit of Keras' `run_layer_test`).

A `LayerCase` names a registered layer, its constructor arguments, a tiny input shape and the
expected output shape. The `check_*` functions below each run one property of a case on the
current backend (KERAS_BACKEND):

* `check_build_and_call`: output shape (also `compute_output_shape` and the symbolic shape), finite.
* `check_config_round_trip`: `from_config(get_config())` gives the same config, and the same
  output once it has the original's weights.
* `check_keras_saving`: a functional model around the layer survives `.keras` save/load.
  These two, and the mixed-precision check, first move every weight away from its initial value
  (`perturb_weights`), so zero-initialized weights and non-trainable state count too.
* `check_mixed_precision`: under "mixed_bfloat16" the variables are float32, every sublayer has
  the policy, the output is bfloat16, finite and close to the float32 output.
* `check_training_step`: one `model.fit` step changes every trainable weight, except those the
  case lists in `frozen_at_init` (which must then be exactly the unchanged ones).

Layers whose call is not `layer(x)` (no tensor input, several inputs) get an `adapter`: a small
Keras layer that wraps them and exposes one tensor in, one tensor out (see `AddRelativeBias`).
"""

import dataclasses

import keras
import numpy as np

import keras_vit.layers

PREFIX = "keras_vit>"
MIXED_POLICY = "mixed_bfloat16"
LAYER_NAME = "under_test"  # every layer is built with this name, so weight paths are "under_test/..."


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One row of the layer table.

    name: the registered class name (`keras_vit>{name}`), also `keras_vit.layers.{name}`.
    kwargs: constructor arguments (tiny sizes).
    input_shape: the input, batch included; a list of shapes for a layer with several inputs.
    expected_shape: the output shape, batch included.
    adapter: a layer class `adapter(layer)` that makes the layer one-tensor-in, one-tensor-out;
        `None` when the layer is simply called on its input(s).
    weightless: the layer has no weights by design; the training step then trains a scale in
        front of it to check that gradients flow through it.
    frozen_at_init: weight paths relative to the layer (e.g. "theta/kernel") whose gradient is
        exactly zero at initialization (a zero-initialized gamma downstream), so one training
        step leaves them unchanged. Must list exactly the unchanged weights.
    """

    name: str
    kwargs: dict
    input_shape: object
    expected_shape: tuple
    adapter: type = None
    weightless: bool = False
    frozen_at_init: tuple = ()

    @property
    def layer_class(self):
        return getattr(keras_vit.layers, self.name)

    @property
    def input_shapes(self):
        shape = self.input_shape
        return list(shape) if isinstance(shape, list) else [shape]


def registered_layer_names():
    """Class names of every layer registered under the `keras_vit>` prefix (models, which are
    layers too, and non-layer objects are left out)."""
    return {
        key[len(PREFIX):]
        for key, obj in keras.saving.get_custom_objects().items()
        if key.startswith(PREFIX)
        and isinstance(obj, type)
        and issubclass(obj, keras.layers.Layer)
        and not issubclass(obj, keras.Model)
    }


# --------------------------------------------------------------------------------------------
# Adapters and helpers


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class AddRelativeBias(keras.layers.Layer):
    """Adds a position-bias layer's `relative_bias()` `(heads, M^2, M^2)` to attention logits
    `(batch, heads, M^2, M^2)`, the way `WindowAttention` uses it. The bias is added without a
    cast, so a bias in the wrong dtype shows in the output dtype."""

    def __init__(self, bias_layer, **kwargs):
        kwargs.setdefault("dtype", bias_layer.dtype_policy)
        super().__init__(**kwargs)
        self.bias_layer = bias_layer

    def build(self, input_shape):
        if not self.bias_layer.built:
            self.bias_layer.build()
        self.built = True

    def call(self, logits):
        return logits + self.bias_layer.relative_bias()[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["bias_layer"] = keras.saving.serialize_keras_object(self.bias_layer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["bias_layer"] = keras.saving.deserialize_keras_object(config["bias_layer"])
        return cls(**config)


class _CallAdapter(keras.layers.Layer):
    """Base of the adapters that call a multi-input layer on one tensor."""

    def __init__(self, inner, **kwargs):
        kwargs.setdefault("dtype", inner.dtype_policy)
        super().__init__(**kwargs)
        self.inner = inner

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["inner"] = keras.saving.serialize_keras_object(self.inner)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["inner"] = keras.saving.deserialize_keras_object(config["inner"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class AttendToItself(_CallAdapter):
    """`inner(x, x, x)`: an attention layer as self-attention, or `inner(x, x)`: a decoder layer
    whose memory is its own input."""

    def __init__(self, inner, arguments=3, **kwargs):
        super().__init__(inner, **kwargs)
        self.arguments = arguments

    def call(self, x):
        return self.inner(*([x] * self.arguments))

    def get_config(self):
        return {**super().get_config(), "arguments": self.arguments}


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class AddPositionEmbedding(_CallAdapter):
    """`x + inner(mask)` for a position embedding of an all-ones mask `(batch, h, w)`."""

    def call(self, x):
        return x + self.inner(keras.ops.ones_like(x[..., 0]))


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class EmbedTokens(_CallAdapter):
    """`inner(tokens)` for an embedding layer: int tokens in [0, 8) from the first channel of
    `x`, and the embedding added to `x` so that gradients reach the input as well."""

    def call(self, x):
        tokens = keras.ops.cast(keras.ops.floor(keras.ops.abs(x[..., 0]) * 4.0), "int32") % 8
        return x + keras.ops.cast(self.inner(tokens), x.dtype)


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class MaskedMean(_CallAdapter):
    """For an attention-mask layer: a 0/1 token mask from the sign of `x`'s first channel, the
    layer's boolean `(batch, 1, T, T)` mask, and `x` plus each query's share of visible keys."""

    def call(self, x):
        mask = self.inner(keras.ops.cast(x[..., 0] > 0, "int32"))
        return x + keras.ops.mean(keras.ops.cast(mask[:, 0], x.dtype), axis=-1)[..., None]


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class PoolAtLargestToken(_CallAdapter):
    """For end-of-text pooling: token ids in [0, 8) from `x`'s first channel, the pooled `(batch, C)`."""

    def call(self, x):
        tokens = keras.ops.cast(keras.ops.floor(keras.ops.abs(x[..., 0]) * 4.0), "int32") % 8
        return self.inner(x, tokens)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class CompareWithOwnTokens(_CallAdapter):
    """For image-query similarity layers: `x` `(batch, T, C)` against its first 3 tokens as
    queries, cast back to `x`'s dtype (such layers return float32 logits): `(batch, T, 3)`,
    or `(batch, 3)` for a layer that compares the first token only (`first_token_only`)."""

    def __init__(self, inner, first_token_only=False, **kwargs):
        super().__init__(inner, **kwargs)
        self.first_token_only = first_token_only

    def call(self, x):
        if self.first_token_only:
            return keras.ops.cast(self.inner(x[:, 0], x[:, :3]), x.dtype)
        logits, _ = self.inner(x, x[:, :3])
        return keras.ops.cast(logits, x.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 3) if self.first_token_only else (*input_shape[:2], 3)

    def get_config(self):
        return {**super().get_config(), "first_token_only": self.first_token_only}


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class CastToInput(_CallAdapter):
    """`inner(x)` cast to `x`'s dtype, for layers whose outputs are float32 by design (box coordinates)."""

    def call(self, x):
        return keras.ops.cast(self.inner(x), x.dtype)


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class SplitAndRejoinQueries(_CallAdapter):
    """For the query unflattening layer: `x` `(batch, T, C)` flattened to `(batch * T, C)` and back."""

    def call(self, x):
        return self.inner(keras.ops.reshape(x, (-1, x.shape[-1])), x)


class TrainableInputScale(keras.layers.Layer):
    """`x * scale`, one learned factor per channel starting at 1: a weight in front of a weightless layer."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale


def make_layer(case, **overrides):
    return case.layer_class(**{**case.kwargs, "name": LAYER_NAME, **overrides})


def apply(case, layer, inputs):
    """The case's output for `inputs` (a list, one entry per input)."""
    model_input = inputs[0] if len(inputs) == 1 else inputs
    if case.adapter is not None:
        return case.adapter(layer)(model_input)
    return layer(model_input)


def random_inputs(case, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.standard_normal(shape).astype("float32") for shape in case.input_shapes]


def symbolic_inputs(case, batch_size=None):
    return [keras.Input(shape=tuple(shape[1:]), batch_size=batch_size) for shape in case.input_shapes]


def functional_model(case, layer, prefix_layer=None):
    inputs = symbolic_inputs(case)
    x = inputs if prefix_layer is None else [prefix_layer(t) for t in inputs]
    outputs = apply(case, layer, x)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs)


def to_numpy(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


def relative_path(variable):
    """The variable's path below the layer under test, e.g. "attention/qkv/kernel"."""
    marker = LAYER_NAME + "/"
    return variable.path.split(marker, 1)[1] if marker in variable.path else variable.path


def defines_compute_output_shape(layer_class):
    return layer_class.compute_output_shape is not keras.layers.Layer.compute_output_shape


def sublayers(layer):
    return layer._flatten_layers(include_self=False, recursive=True)


def perturb_weights(target, seed=2):
    """Moves every float weight of `target` (a layer or model, non-trainable ones included) away
    from its initial value: `w * U(0.5, 1.5) + U(0, 0.1)`. Zero-initialized weights (a gamma of 0
    that makes a block the identity, zero biases, fresh moving means) then matter for the output,
    and variances stay positive."""
    rng = np.random.RandomState(seed)

    def perturbed(w):
        if not np.issubdtype(w.dtype, np.floating):
            return w
        return (w * rng.uniform(0.5, 1.5, w.shape) + rng.uniform(0.0, 0.1, w.shape)).astype(w.dtype)

    target.set_weights([perturbed(w) for w in target.get_weights()])


def assert_finite(array, what):
    assert np.all(np.isfinite(array)), f"{what} has non-finite entries"


# --------------------------------------------------------------------------------------------
# The checks


def check_registration(case):
    cls = case.layer_class
    assert keras.saving.get_custom_objects()[PREFIX + case.name] is cls
    assert keras.saving.get_registered_name(cls) == PREFIX + case.name


def check_build_and_call(case):
    layer = make_layer(case)
    inputs = random_inputs(case)
    outputs = apply(case, layer, inputs)
    assert tuple(outputs.shape) == tuple(case.expected_shape)
    assert dtype_of(outputs) == "float32"
    assert_finite(to_numpy(outputs), f"{case.name} output")
    if case.adapter is None and defines_compute_output_shape(case.layer_class):
        shapes = case.input_shapes
        computed = layer.compute_output_shape(shapes[0] if len(shapes) == 1 else shapes)
        assert tuple(computed) == tuple(case.expected_shape)
    # the symbolic (functional) output shape, with an unknown batch size
    symbolic = apply(case, make_layer(case), symbolic_inputs(case))
    assert tuple(symbolic.shape) == (None,) + tuple(case.expected_shape[1:])


def check_config_round_trip(case):
    inputs = random_inputs(case)
    layer = make_layer(case)
    apply(case, layer, inputs)  # builds it
    perturb_weights(layer)
    expected = to_numpy(apply(case, layer, inputs))
    config = layer.get_config()
    clone = case.layer_class.from_config(config)
    assert type(clone) is case.layer_class
    assert clone.get_config() == config
    apply(case, clone, inputs)  # builds it
    assert clone.get_config() == config
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(apply(case, clone, inputs)), expected, atol=1e-6, rtol=0)


def check_keras_saving(case, tmp_path):
    inputs = random_inputs(case)
    model = functional_model(case, make_layer(case))
    perturb_weights(model)
    model_input = inputs[0] if len(inputs) == 1 else inputs
    expected = to_numpy(model(model_input))
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert any(type(sub) is case.layer_class for sub in restored._flatten_layers())
    np.testing.assert_allclose(to_numpy(restored(model_input)), expected, atol=1e-6, rtol=0)


def check_mixed_precision(case):
    inputs = random_inputs(case)
    layer = make_layer(case, dtype=MIXED_POLICY)
    apply(case, layer, inputs)  # builds it
    perturb_weights(layer)
    outputs = apply(case, layer, inputs)
    assert layer.dtype_policy.name == MIXED_POLICY
    wrong_policy = [sub.name for sub in sublayers(layer) if sub.dtype_policy.name != MIXED_POLICY]
    assert not wrong_policy, f"sublayers without the {MIXED_POLICY} policy: {wrong_policy}"
    not_float32 = [relative_path(v) for v in layer.weights if dtype_of(v) != "float32"]
    assert not not_float32, f"variables not in float32: {not_float32}"
    assert dtype_of(outputs) == "bfloat16"
    mixed = to_numpy(outputs)
    assert_finite(mixed, f"{case.name} bfloat16 output")
    # the same weights in float32 give about the same output (bfloat16 keeps ~3 significant digits)
    reference_layer = make_layer(case)
    apply(case, reference_layer, inputs)
    reference_layer.set_weights(layer.get_weights())
    reference = to_numpy(apply(case, reference_layer, inputs))
    scale = max(1.0, float(np.abs(reference).max()))
    assert np.abs(mixed - reference).max() <= 0.05 * scale


def check_training_step(case):
    inputs = random_inputs(case)
    layer = make_layer(case)
    prefix_layer = TrainableInputScale(name="input_scale") if case.weightless else None
    model = functional_model(case, layer, prefix_layer)
    if case.weightless:
        assert not layer.weights, f"{case.name} is listed as weightless but has {[v.path for v in layer.weights]}"
        watched = {"input_scale/scale": prefix_layer.scale}
    else:
        watched = {relative_path(v): v for v in layer.trainable_weights}
        assert watched, f"{case.name} has no trainable weights; mark it weightless"
        unknown = set(case.frozen_at_init) - set(watched)
        assert not unknown, f"frozen_at_init names weights the layer does not have: {sorted(unknown)}"
    before = {name: keras.ops.convert_to_numpy(v) for name, v in watched.items()}
    targets = np.random.RandomState(1).standard_normal(case.expected_shape).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2), loss="mse")
    model_input = inputs[0] if len(inputs) == 1 else inputs
    history = model.fit(model_input, targets, batch_size=case.expected_shape[0], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = {name: keras.ops.convert_to_numpy(v) for name, v in watched.items()}
    for name, value in after.items():
        assert_finite(value, f"{name} after one step")
    unchanged = {name for name in watched if np.array_equal(before[name], after[name])}
    assert unchanged != set(watched), "no weight received a nonzero gradient"
    assert unchanged == set(case.frozen_at_init), (
        f"weights unchanged by one step: {sorted(unchanged)}; expected exactly {sorted(case.frozen_at_init)}"
    )
