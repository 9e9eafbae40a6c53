import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit


@keras.saving.register_keras_serializable(package="nalu")
class NALU(ArithmeticUnit):
    """Neural arithmetic logic unit, exactly as in Trask et al. (2018).

    W = tanh(W_hat) * sigmoid(M_hat);  a = x W;  m = exp(log(|x| + eps) W);
    g = sigmoid(x G);  y = g * a + (1 - g) * m.

    Args:
        units: Positive integer, size of the output.
        kernel_initializer: Initializer for `w_hat`, `m_hat` and the gate `g`.
        epsilon: Positive float added to |x| before the logarithm.
    """

    weight_names = ("w_hat", "m_hat", "g")
    discrete_weight_names = ("W",)

    def __init__(self, units, kernel_initializer="glorot_uniform", epsilon=1e-7, **kwargs):
        super().__init__(units, **kwargs)
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon}")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.w_hat = self.add_weight(name="w_hat", shape=shape, initializer=self.kernel_initializer)
        self.m_hat = self.add_weight(name="m_hat", shape=shape, initializer=self.kernel_initializer)
        self.g = self.add_weight(name="g", shape=shape, initializer=self.kernel_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, w_hat, m_hat, g):
        return functional.nalu(x, w_hat, m_hat, g, epsilon=self.epsilon)

    def discrete_weights(self, w_hat, m_hat, **_):
        return [functional.nac_weight(w_hat, m_hat)]

    def paths(self, w_hat, m_hat, **_):
        weight = functional.nac_weight(w_hat, m_hat)
        return [("sum", weight), ("product", weight)]

    def gate(self, x, g, **_):
        return ops.sigmoid(ops.matmul(x, g))

    def snap(self, **params):
        raise NotImplementedError(
            "its gate sigmoid(x G) depends on the input, so no weights make it exactly 0 or 1 for every x"
        )

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "epsilon": self.epsilon,
        }
