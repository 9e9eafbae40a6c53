import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit, positive_number


@keras.saving.register_keras_serializable(package="nalu")
class Gated(ArithmeticUnit):
    """A gated unit for any of + - * / ^2 sqrt: an NAU path and a RealNPU path mixed by a learned gate.

    s = x W_a (W_a in [-1, 1]);  p = RealNPU(x; W_p, g);  c = mix in [0, 1], one per output;
    y = c * s + (1 - c) * p.

    Unlike NALU's input-dependent sigmoid(x G), the gate is a clipped parameter (as in
    iNALU's scalar gate), so it can sit exactly at 0 or 1; unlike NALU, each path has its
    own weights (Madsen & Johansen's and Schlör et al.'s fix for the shared W), the sum
    path is an NAU and the product path a RealNPU, which reaches real powers (1/b, sqrt(a))
    and keeps signs. `snap` rounds W_a to {-1, 0, 1}, W_p to multiples of 1/2, g and c
    to {0, 1}.

    Args:
        units: Positive integer, size of the output.
        epsilon: Positive float for the RealNPU path's logarithm.

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("w_add", "w_pow", "g_pow", "mix")
    # Training keeps the gate this far from 0 and 1: at exactly 1 the product path gets no
    # gradient at all, and a gate that reached "sum" early (the sum path fits a large mean
    # fastest) could never leave it. Inside the margin Adam still moves both paths at full
    # speed, and `snap` puts the gate exactly at 0 or 1.
    MIX_MARGIN = 0.01
    discrete_weight_names = ("w_add", "mix")
    regularizer_schedule = (0.01, 5_000, 50_000)
    weight_ranges = {"w_add": (-1.0, 1.0), "g_pow": (0.0, 1.0), "mix": (MIX_MARGIN, 1.0 - MIX_MARGIN)}

    def __init__(self, units, epsilon=1.1920929e-07, **kwargs):
        super().__init__(units, **kwargs)
        self.epsilon = positive_number("epsilon", epsilon)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        shape = (fan_in, self.units)
        r = min(0.5, (3.0 * 2.0 / (fan_in + self.units)) ** 0.5)
        self.w_add = self.add_weight(name="w_add", shape=shape, initializer=keras.initializers.RandomUniform(-r, r))
        # Exponents start around 1, so the power path starts as a product of its inputs (like
        # an NMU at its published init) rather than at random powers. On a*b, 4 of seeds 0-11
        # solved against 1 with glorot_uniform (nalu benchmark --ops mul --seeds 12).
        self.w_pow = self.add_weight(
            name="w_pow", shape=shape, initializer=keras.initializers.RandomUniform(0.5, 1.5)
        )
        self.g_pow = self.add_weight(name="g_pow", shape=(fan_in,), initializer=keras.initializers.Constant(0.5))
        self.mix = self.add_weight(name="mix", shape=(self.units,), initializer=keras.initializers.Constant(0.5))
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: fan_in})

    def forward(self, x, w_add, w_pow, g_pow, mix):
        return functional.gated(x, w_add, w_pow, g_pow, mix, epsilon=self.epsilon)

    def discrete_weights(self, w_add, mix, **_):
        return [w_add, ops.expand_dims(mix, -2)]

    def paths(self, w_add, w_pow, g_pow, **_):
        return [("sum", w_add), ("product", w_pow * ops.expand_dims(ops.clip(g_pow, 0.0, 1.0), -1))]

    def gate(self, x, mix, **_):
        # One gate per output, the same for every input: broadcast it over the batch.
        return ops.expand_dims(ops.clip(mix, 0.0, 1.0), -2) + ops.zeros_like(x[..., :1])

    def snap(self, w_add, w_pow, g_pow, mix, **params):
        return {
            **params,
            "w_add": ops.clip(ops.round(w_add), -1.0, 1.0),
            "w_pow": ops.round(2.0 * w_pow) / 2.0,
            "g_pow": ops.clip(ops.round(g_pow), 0.0, 1.0),
            "mix": ops.clip(ops.round(mix), 0.0, 1.0),
        }

    def as_sum(self, weights, **params):
        """The sum path alone (gate at exactly 1), its weights `weights`."""
        return {**params, "w_add": weights, "mix": ops.ones_like(params["mix"])}

    def as_power(self, powers, **params):
        """The power path alone (gate at exactly 0), every input with a non-zero power relevant."""
        relevant = ops.cast(ops.any(ops.not_equal(powers, 0.0), axis=-1), powers.dtype)
        return {**params, "w_pow": powers, "g_pow": relevant, "mix": ops.zeros_like(params["mix"])}

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
