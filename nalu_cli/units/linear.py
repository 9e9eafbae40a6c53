import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit


@keras.saving.register_keras_serializable(package="nalu")
class Linear(ArithmeticUnit):
    """Baseline: a dense layer without bias, y = x W. No clipping, no regulariser.

    `discrete_weights` still reports W, so sparsity error and snapping tell whether a
    plain linear layer found the {-1, 0, 1} solution of an additive task.

    Args:
        units: Positive integer, size of the output.
        kernel_initializer: Initializer for `kernel` (Glorot uniform by default).

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("kernel",)
    discrete_weight_names = ("kernel",)

    def __init__(self, units, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, kernel):
        return functional.linear(x, kernel)

    def discrete_weights(self, kernel, **_):
        return [kernel]

    def paths(self, kernel, **_):
        return [("sum", kernel)]

    def snap(self, kernel, **params):
        """W rounded to {-1, 0, 1}, the values an additive task needs."""
        return {**params, "kernel": ops.clip(ops.round(kernel), -1.0, 1.0)}

    def regularizer(self, kernel, **_):
        # No penalty: zeros with the replica axes, so callers can treat every unit alike.
        return ops.zeros(ops.shape(kernel)[:-2])

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
