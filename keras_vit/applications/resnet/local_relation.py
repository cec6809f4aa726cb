"""Local relation layer of LR-Net (Hu, Zhang, Xie, Lin, ICCV 2019, arXiv:1904.11491)."""

import keras
import numpy as np
from keras import ops

from keras_vit.layers.constant import device_constant

COMPOSABILITY = ("squared_difference", "absolute_difference", "multiplication")

# XLA fuses one softmax over a stacked window axis best; eager torch runs the per-cell
# form (running maximum and sum over k*k maps) faster. Same math. Measured on CPU:
# stage-1 LR-Net layer (batch 8, 56x56x100, k=7), JAX stacked 132 ms vs per-cell 538 ms,
# torch per-cell 177 ms vs stacked 389 ms; whole LR-Net-50 inference on TF (batch 8):
# stacked 10.1 img/s vs per-cell 3.7 under XLA (jit_compile=True, as on TPU), and
# 2.5 vs 2.8 in a plain tf.function graph.
_STACK_WINDOW = keras.backend.backend() != "torch"

# Logit given to window cells that fall outside the image. The reference CUDA
# kernel of the authors writes `no_define_value = -100` there (plus the geometry
# prior); -1e9 in float32 removes them from the softmax exactly.
_OUTSIDE = -1e9


def window_offsets(kernel_size):
    """`(k*k, 2)` float32 `(dy, dx)` of every cell of a k x k window relative to
    its centre, row-major: cell `a * k + b` is `(a - k//2, b - k//2)`."""
    radius = kernel_size // 2
    span = np.arange(-radius, radius + 1, dtype=np.float32)
    return np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2)


def _output_size(size, strides):
    return None if size is None else (size - 1) // strides + 1


@keras.saving.register_keras_serializable(package="keras_vit")
class LocalRelation(keras.layers.Layer):
    """Local relation layer: convolution-like aggregation over a k x k window
    whose weights come from the relation of the pixel pairs (LR-Net).

    For output position p' (the input pixel `strides * p'`) and every pixel p of
    the k x k window centred on it:

        w(p', p) = softmax_p( Phi(q_p', k_p) + g(p - p') )    per aggregation group
        y(p')    = sum_p w(p', p) * x(p)                        on the group's m channels
        out      = y @ W_out + b_out                            (final 1x1 conv)

    * Channel sharing: the C input channels form C/m groups of
      `m = channels_per_group` consecutive channels; each group has one
      aggregation (one set of k*k weights per pixel).
    * Appearance composability Phi: key and query are 1x1 convolutions of x
      with `key_channels_per_group` (default 1: a scalar) channels per group,
      i.e. C/m channels at the default. `composability` picks
      `-(q - k)^2` ("squared_difference", the paper's default),
      `-|q - k|` ("absolute_difference") or `q * k` ("multiplication"),
      summed over the key channels of a group. The query is taken at the output
      positions only (stride 2: every other row and column).
    * Geometry prior g: an MLP of the integer offset `(dy, dx) = p - p'`,
      `2 -> geometry_hidden_units (ReLU) -> C/m` (two 1x1 convolutions on the
      2 x k x k offset map), so it depends on the relative position only.
      `geometry_prior()` returns it as `(k, k, C/m)`.
    * Values are the input itself (no value projection); the final 1x1 conv
      (`use_projection`, on by default) maps the C aggregated channels to
      `filters`. Without it `filters` must equal C.
    * Borders: window cells outside the image are left out of the softmax
      (their logit is -1e9), as the authors' kernel does with its
      `no_define_value`; they are not zero-padded pixels that take weight.
      A window of k x k with stride s gives a `ceil(H/s) x ceil(W/s)` output.

    Memory: no loops over pixels. The window is visited as k*k static, strided
    slices of the zero-padded map, one per window cell, and everything is
    computed per cell on whole maps: the logits `(B, H', W', C/m)` of each cell,
    their softmax over the cells (stacked on one window axis on TF and JAX,
    which XLA fuses best; on torch a running maximum and sum over the cells), and the
    output as the sum over cells of `weight_cell * x_shifted`. Nothing
    of size `k^2 * C * H' * W'` (the value neighbourhoods) is built in the
    forward pass; the k*k logits and weights, `k^2 * (C/m) * H' * W'` values,
    are the largest intermediate. (Training keeps each cell's slice for the
    backward pass, which is the `k^2 * C * H' * W'`.) Stacking the
    neighbourhoods instead made a stage-1 LR-Net layer (batch 8, 56x56x100)
    4.6x slower on JAX. Logits and softmax are float32 under mixed precision.

    Parameters, with G = C/m, d = key_channels_per_group, h =
    geometry_hidden_units and F = filters (all biases on):
    `2 * (C + 1) * G * d + 3 * h + (h + 1) * G + (C + 1) * F`
    (the last term only with the projection).

    Args:
        filters: output channels.
        kernel_size: k, odd (7 in LR-Net).
        strides: 1 or 2.
        channels_per_group: m, the channels that share one aggregation (8).
        composability: "squared_difference", "absolute_difference" or
            "multiplication".
        key_channels_per_group: key/query channels per aggregation group (1).
        geometry_hidden_units: width of the geometry-prior MLP; None means C/m.
        use_projection: the final 1x1 conv from C to `filters` channels.
        use_bias: biases of the key, query and projection convolutions.
        kernel_initializer, bias_initializer: of every 1x1 convolution.

    Input `(B, H, W, C)`, output `(B, ceil(H/s), ceil(W/s), filters)`.
    """

    def __init__(
        self,
        filters,
        kernel_size=7,
        strides=1,
        channels_per_group=8,
        composability="squared_difference",
        key_channels_per_group=1,
        geometry_hidden_units=None,
        use_projection=True,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"LocalRelation needs an odd kernel_size (the window is centred on its pixel); "
                f"got kernel_size={kernel_size}. Use an odd size such as 3, 5 or 7 (LR-Net uses 7)."
            )
        if strides not in (1, 2):
            raise ValueError(f"LocalRelation supports strides 1 or 2; got strides={strides}. Use 1, or 2 to downsample.")
        if not isinstance(channels_per_group, int) or channels_per_group < 1:
            raise ValueError(f"channels_per_group must be a positive int; got {channels_per_group}.")
        if not isinstance(key_channels_per_group, int) or key_channels_per_group < 1:
            raise ValueError(f"key_channels_per_group must be a positive int; got {key_channels_per_group}.")
        if composability not in COMPOSABILITY:
            raise ValueError(f"composability must be one of {COMPOSABILITY}; got {composability!r}.")
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive int; got {filters}.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.channels_per_group = channels_per_group
        self.composability = composability
        self.key_channels_per_group = key_channels_per_group
        self.geometry_hidden_units = geometry_hidden_units
        self.use_projection = use_projection
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.offsets = device_constant(window_offsets(kernel_size))

    def _dense(self, units, name, activation=None, use_bias=None):
        return keras.layers.Dense(
            units,
            activation=activation,
            use_bias=self.use_bias if use_bias is None else use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("LocalRelation needs a known number of input channels.")
        m = self.channels_per_group
        if channels % m:
            raise ValueError(
                f"LocalRelation: {channels} input channels are not divisible by channels_per_group={m}; "
                f"pick a divisor of {channels} for channels_per_group or change the channels "
                f"(e.g. {channels + (-channels) % m})."
            )
        if not self.use_projection and self.filters != channels:
            raise ValueError(
                f"LocalRelation without projection outputs its {channels} input channels; got filters={self.filters}. "
                f"Set filters={channels} or use_projection=True."
            )
        radius, s = self.kernel_size // 2, self.strides
        for name, size in (("height", input_shape[1]), ("width", input_shape[2])):
            # the farthest window cell on each side must land inside the image for some output pixel
            if size is not None and radius > s * ((size - 1) // s):
                fits = 2 * (s * ((size - 1) // s)) + 1
                raise ValueError(
                    f"LocalRelation: kernel_size={self.kernel_size} is larger than the input allows: "
                    f"{name} {size} with strides={s} (padded to {size + 2 * radius}) leaves window cells that "
                    f"fall outside the image at every output pixel. Use kernel_size <= {fits} or a larger input."
                )
        self.channels = channels
        self.groups = channels // m
        hidden = self.geometry_hidden_units or self.groups
        key_width = self.groups * self.key_channels_per_group
        self.query = self._dense(key_width, "query")
        self.key = self._dense(key_width, "key")
        self.geometry_hidden = self._dense(hidden, "geometry_hidden", activation="relu", use_bias=True)
        self.geometry_output = self._dense(self.groups, "geometry_output", use_bias=True)
        self.query.build((None, channels))
        self.key.build((None, channels))
        self.geometry_hidden.build((None, 2))
        self.geometry_output.build((None, hidden))
        if self.use_projection:
            self.projection = self._dense(self.filters, "projection")
            self.projection.build((None, channels))
        self.built = True

    def geometry_prior(self):
        """The prior `(k, k, C/m)`: entry `[a, b, g]` is group g's logit term for
        the window cell at offset `(a - k//2, b - k//2)`, the same at every pixel."""
        prior = self.geometry_output(self.geometry_hidden(ops.cast(self.offsets, self.compute_dtype)))
        return ops.reshape(prior, (self.kernel_size, self.kernel_size, self.groups))

    def _window_cells(self, t):
        """The k*k maps `(B, H', W', c)` of one window cell each, row-major: static,
        strided slices of the zero-padded map (no copy of the k^2 neighbourhoods)."""
        k, s, radius = self.kernel_size, self.strides, self.kernel_size // 2
        padded = ops.pad(t, [[0, 0], [radius, radius], [radius, radius], [0, 0]])
        # rows a .. a + H - 1 of the padded map (a negative stop keeps the height symbolic)
        return [
            padded[:, a : (a - 2 * radius) or None : s, b : (b - 2 * radius) or None : s, :]
            for a in range(k)
            for b in range(k)
        ]

    def _appearance(self, query, keys):
        """Phi(q, k) summed over each group's key channels; `keys` may carry a
        trailing window axis, `query` then a trailing 1."""
        if self.composability == "squared_difference":
            appearance = -ops.square(query - keys)
        elif self.composability == "absolute_difference":
            appearance = -ops.abs(query - keys)
        else:
            appearance = query * keys
        d = self.key_channels_per_group
        if d == 1:
            return appearance
        window = () if len(keys.shape) == 4 else (keys.shape[-1],)
        grouped = ops.reshape(appearance, (*ops.shape(appearance)[:3], self.groups, d, *window))
        return ops.sum(grouped, axis=4)

    def _cell_weights(self, x):
        """The softmax over the window as k*k float32 maps `(B, H', W', C/m)`, row-major."""
        s, area = self.strides, self.kernel_size**2
        query = ops.cast(self.query(x[:, ::s, ::s, :] if s > 1 else x), "float32")  # at the output positions
        prior = ops.reshape(ops.cast(self.geometry_prior(), "float32"), (area, self.groups))
        inside = self._window_cells(ops.ones_like(x[:1, :, :, :1]))  # (1, H', W', 1) each
        keys = [ops.cast(key, "float32") for key in self._window_cells(self.key(x))]
        if _STACK_WINDOW:
            logits = self._appearance(query[..., None], ops.stack(keys, axis=-1)) + ops.transpose(prior)
            weights = ops.softmax(ops.where(ops.stack(inside, axis=-1) > 0.5, logits, _OUTSIDE), axis=-1)
            return [weights[..., cell] for cell in range(area)]
        logits = [
            ops.where(inside[cell] > 0.5, self._appearance(query, key) + prior[cell], _OUTSIDE)
            for cell, key in enumerate(keys)
        ]
        peak = logits[0]
        for logit in logits[1:]:
            peak = ops.maximum(peak, logit)
        exponentials = [ops.exp(logit - peak) for logit in logits]
        total = exponentials[0]
        for exponential in exponentials[1:]:
            total = total + exponential
        return [exponential / total for exponential in exponentials]

    def aggregation_weights(self, x):
        """The softmax weights `(B, H', W', k*k, C/m)`, float32; window cells are
        row-major and cells outside the image get 0."""
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        return ops.stack(self._cell_weights(x), axis=3)

    def call(self, x):
        g, m = self.groups, self.channels_per_group
        weights = self._cell_weights(x)
        lead = ops.shape(weights[0])[:3]
        y = None
        for values, weight in zip(self._window_cells(x), weights):  # k^2 steps, each over the whole map
            term = ops.reshape(values, (*lead, g, m)) * ops.cast(weight, x.dtype)[..., None]
            y = term if y is None else y + term
        y = ops.reshape(y, (*lead, self.channels))
        return self.projection(y) if self.use_projection else y

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        out = self.filters if self.use_projection else channels
        return (batch, _output_size(height, self.strides), _output_size(width, self.strides), out)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "channels_per_group": self.channels_per_group,
                "composability": self.composability,
                "key_channels_per_group": self.key_channels_per_group,
                "geometry_hidden_units": self.geometry_hidden_units,
                "use_projection": self.use_projection,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
