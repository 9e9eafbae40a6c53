import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit, positive_number


@keras.saving.register_keras_serializable(package="nalu")
class NaiNPU(ArithmeticUnit):
    """Naive real power unit: RealNPU (Heim et al. 2020) without the relevance gate.

    y = exp(log(|x| + eps) W_r) * cos(pi [x < 0] W_r): every input is a factor |x_i| ** W_ij
    with its sign; W_r is real-valued and unclipped (it may hold -1 for a divisor).
    Heim et al. call the gate-free form the naive NPU (NaiNPU). nalu keeps it as a unit
    because the gate is what lets RealNPU fit a/b's first-order expansion 1 + (a - b) / b
    (an input blended towards 1 is an affine term), a trap on U[1, 2] where that expansion
    is accurate to 1e-6 MSE; without it the unit can only hold products of powers.

    Regulariser: the base mean(min(|w|, 1 - |w|)) over W_r, ramped 0 -> 1 over steps
    5e4 -> 7.5e4, as for nalu's RealNPU.

    Args:
        units: Positive integer, size of the output.
        kernel_initializer: Initializer for `w_real`; Glorot uniform by default, as RealNPU.
        epsilon: Positive float added to |x| before the logarithm (float32 machine epsilon).

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("w_real",)
    discrete_weight_names = ("w_real",)
    regularizer_schedule = (1.0, 50_000, 75_000)

    def __init__(self, units, kernel_initializer="glorot_uniform", epsilon=1.1920929e-07, **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.epsilon = positive_number("epsilon", epsilon)

    def build(self, input_shape):
        self.w_real = self.add_weight(
            name="w_real", shape=(input_shape[-1], self.units), initializer=self.kernel_initializer
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, w_real):
        return functional.naive_real_npu(x, w_real, epsilon=self.epsilon)

    def discrete_weights(self, w_real, **_):
        return [w_real]

    def paths(self, w_real, **_):
        return [("product", w_real)]

    def structure(self, w_real, **_):
        """Every power at +-1 by its sign (0 stays 0): the unit a product or ratio of its inputs.

        Where the hidden sums concentrate (the recurrent task's a and b at T = 10 spread by about
        6% of their mean), powers of 0.3-0.8 with mixtures of the inputs fit a/b to an MSE of
        5e-8-2e-3 and extrapolate to a longer sequence as a power of its length; polishing every
        weight stays there. Held at +-1, refitting the first layer reaches a/b itself (README,
        "The recurrent task").
        """
        return {"w_real": ops.sign(w_real)}

    def snap(self, w_real, **params):
        """Powers to the nearest multiple of 1/2 (a square root is 0.5)."""
        return {**params, "w_real": ops.round(2.0 * w_real) / 2.0}

    def as_power(self, powers, **params):
        return {**params, "w_real": powers}

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "epsilon": self.epsilon,
        }
