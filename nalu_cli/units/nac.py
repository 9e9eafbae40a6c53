import keras

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit


@keras.saving.register_keras_serializable(package="nalu")
class NAC(ArithmeticUnit):
    """Neural accumulator (Trask et al. 2018): y = x (tanh(W_hat) * sigmoid(M_hat)).

    Args:
        units: Positive integer, size of the output.
        kernel_initializer: Initializer for `w_hat` and `m_hat`.
    """

    weight_names = ("w_hat", "m_hat")
    discrete_weight_names = ("W",)

    def __init__(self, units, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.w_hat = self.add_weight(name="w_hat", shape=shape, initializer=self.kernel_initializer)
        self.m_hat = self.add_weight(name="m_hat", shape=shape, initializer=self.kernel_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, w_hat, m_hat):
        return functional.nac(x, w_hat, m_hat)

    def discrete_weights(self, w_hat, m_hat, **_):
        return [functional.nac_weight(w_hat, m_hat)]

    def paths(self, w_hat, m_hat, **_):
        return [("sum", functional.nac_weight(w_hat, m_hat))]

    def snap(self, w_hat, m_hat, **params):
        """W rounded to {-1, 0, 1}, made exact by saturating tanh and sigmoid."""
        w_hat, m_hat = functional.snapped_nac_params(functional.nac_weight(w_hat, m_hat))
        return {**params, "w_hat": w_hat, "m_hat": m_hat}

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
