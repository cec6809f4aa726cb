"""Convolution with a spectrally normalized kernel (Miyato et al., 2018)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
class SpectralConv2D(keras.layers.Conv2D):
    """`Conv2D` that convolves with `W / sigma(W)`, sigma estimated by power iteration.

    The trainable kernel stays W; every call divides it by its largest singular
    value, estimated from the stored vector `u` (one power iteration per
    training call, which also updates `u`; inference reuses `u` as stored).
    This is PyTorch's `spectral_norm`. Unlike `keras.layers.SpectralNormalization`,
    which writes `W / sigma` into the kernel while training, it gives the same
    results on every backend, JAX's stateless training included.

    Args:
        power_iterations: iterations per training call (1).
        epsilon: guards the normalization of u and v (1e-12).
        Every other argument is `keras.layers.Conv2D`'s.
    """

    def __init__(self, *args, power_iterations=1, epsilon=1e-12, **kwargs):
        super().__init__(*args, **kwargs)
        if power_iterations < 1:
            raise ValueError(f"power_iterations must be >= 1, got {power_iterations}.")
        self.power_iterations = power_iterations
        self.epsilon = epsilon

    def build(self, input_shape):
        super().build(input_shape)
        self.vector_u = self.add_weight(
            shape=(1, self.filters),
            initializer=keras.initializers.TruncatedNormal(stddev=1.0),
            trainable=False,
            name="vector_u",
        )

    def _unit(self, x):
        return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x))), self.epsilon)

    def normalized_kernel(self, training=False):
        """`(W / sigma, u)`, u advanced by the power iterations when `training`."""
        weights = ops.reshape(ops.cast(self.kernel, "float32"), (-1, self.filters))  # (k*k*in, out)
        u = self._unit(ops.cast(self.vector_u, "float32"))
        for _ in range(self.power_iterations if training else 0):
            v = self._unit(ops.matmul(u, ops.transpose(weights)))
            u = self._unit(ops.matmul(v, weights))
        u = ops.stop_gradient(u)
        v = ops.stop_gradient(self._unit(ops.matmul(u, ops.transpose(weights))))
        sigma = ops.sum(ops.matmul(v, weights) * u)
        return ops.reshape(weights / sigma, self.kernel.shape), u

    def call(self, inputs, training=False):
        kernel, u = self.normalized_kernel(training)
        if training:
            self.vector_u.assign(ops.cast(u, self.vector_u.dtype))
        outputs = self.convolution_op(inputs, ops.cast(kernel, inputs.dtype))
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs) if self.activation is not None else outputs

    # Conv2D saves only kernel and bias; the generic Layer methods also keep u.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        config = super().get_config()
        config.update({"power_iterations": self.power_iterations, "epsilon": self.epsilon})
        return config
