import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit, positive_number


@keras.saving.register_keras_serializable(package="nalu")
class RealNPU(ArithmeticUnit):
    """Real neural power unit (Heim, van Gerven & Andersson 2020).

    g_hat = clip(g, 0, 1);  r = g_hat * (|x| + eps) + (1 - g_hat);  k = g_hat * pi * [x < 0];
    y = exp(log(r) W_r) * cos(k W_r).   W_r is real-valued and unclipped (it may hold
    powers such as 2 or -1); g, one relevance gate per input, is clipped to [0, 1].

    Regulariser: the base mean(min(|w|, 1 - |w|)) over W_r (towards {-1, 0, 1}) and g
    (towards {0, 1}), ramped 0 -> 1 over steps 5e4 -> 7.5e4, as in Mistry et al.'s
    "RealNPU (modified)" (bmistry4/nalu-stable-exp, --realnpu-reg-type bias
    --regualizer-npu-w 1 --regualizer-gate 1 --regualizer-scaling-start 50000 -end 75000).
    Heim et al. themselves use an L1 penalty on all parameters with a stepped beta.

    Args:
        units: Positive integer, size of the output.
        kernel_initializer: Initializer for `w_real`; Glorot uniform by default, as published.
        gate_initializer: Initializer for `g`; the published constant 0.5 by default.
        epsilon: Positive float added to |x| before the logarithm (float32 machine epsilon,
            as in the authors' NeuralArithmetic.jl).

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("w_real", "g")
    discrete_weight_names = ("w_real", "g")
    regularizer_schedule = (1.0, 50_000, 75_000)
    weight_ranges = {"g": (0.0, 1.0)}

    def __init__(
        self,
        units,
        kernel_initializer="glorot_uniform",
        gate_initializer=None,
        epsilon=1.1920929e-07,
        **kwargs,
    ):
        super().__init__(units, **kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.gate_initializer = keras.initializers.get(gate_initializer or keras.initializers.Constant(0.5))
        self.epsilon = positive_number("epsilon", epsilon)

    def build(self, input_shape):
        self.w_real = self.add_weight(
            name="w_real", shape=(input_shape[-1], self.units), initializer=self.kernel_initializer
        )
        self.g = self.add_weight(name="g", shape=(input_shape[-1],), initializer=self.gate_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, w_real, g):
        return functional.real_npu(x, w_real, g, epsilon=self.epsilon)

    def discrete_weights(self, w_real, g, **_):
        return [w_real, ops.expand_dims(ops.clip(g, 0.0, 1.0), -1)]  # g as [..., in, 1]

    def paths(self, w_real, g, **_):
        # At g_i = 1 the input enters as |x_i| ** W_r (times its sign term); at g_i = 0 it is 1.
        return [("product", w_real * ops.expand_dims(ops.clip(g, 0.0, 1.0), -1))]

    def snap(self, w_real, g, **params):
        """Gates rounded to {0, 1}; powers to the nearest multiple of 1/2 (a square root is 0.5)."""
        return {**params, "w_real": ops.round(2.0 * w_real) / 2.0, "g": ops.clip(ops.round(g), 0.0, 1.0)}

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "gate_initializer": keras.initializers.serialize(self.gate_initializer),
            "epsilon": self.epsilon,
        }
