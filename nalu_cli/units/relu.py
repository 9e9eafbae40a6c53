import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit


@keras.saving.register_keras_serializable(package="nalu")
class ReLUMLP(ArithmeticUnit):
    """Baseline: a one-hidden-layer ReLU network, y = relu(x W1 + b1) W2 + b2.

    A whole small MLP stands in for one unit, so a "relu" model is two such MLPs in a row.
    It has no discrete solution: no discrete weights, no clipping, no regulariser.

    Args:
        units: Positive integer, size of the output.
        hidden_units: Positive integer, width of the hidden layer (default 16).
        kernel_initializer: Initializer for both kernels (Glorot uniform by default).
        bias_initializer: Initializer for both biases (zeros by default).

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("hidden_kernel", "hidden_bias", "output_kernel", "output_bias")

    def __init__(
        self, units, hidden_units=16, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs
    ):
        super().__init__(units, **kwargs)
        if not isinstance(hidden_units, int) or isinstance(hidden_units, bool) or hidden_units <= 0:
            raise ValueError(f"`hidden_units` must be a positive integer. Received: hidden_units={hidden_units}")
        self.hidden_units = hidden_units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        hidden, out = self.hidden_units, self.units
        self.hidden_kernel = self.add_weight(
            name="hidden_kernel", shape=(input_shape[-1], hidden), initializer=self.kernel_initializer
        )
        self.hidden_bias = self.add_weight(name="hidden_bias", shape=(hidden,), initializer=self.bias_initializer)
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(hidden, out), initializer=self.kernel_initializer
        )
        self.output_bias = self.add_weight(name="output_bias", shape=(out,), initializer=self.bias_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, hidden_kernel, hidden_bias, output_kernel, output_bias):
        return functional.relu_mlp(x, hidden_kernel, hidden_bias, output_kernel, output_bias)

    def snap(self, **params):
        raise NotImplementedError("a ReLU network has no discrete exact form")

    def regularizer(self, hidden_kernel, **_):
        return ops.zeros(ops.shape(hidden_kernel)[:-2])

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
