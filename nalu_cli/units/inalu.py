import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit, positive_number


@keras.saving.register_keras_serializable(package="nalu")
class INALU(ArithmeticUnit):
    """Improved NALU (Schlör, Ring & Hotho 2020), the separate-weights variant (`nalui2_layer`).

    W_a = tanh(W_hat_a) * sigmoid(M_hat_a);  W_m = tanh(W_hat_m) * sigmoid(M_hat_m);
    a = x W_a;  m = exp(min(log(max(|x|, eps)) W_m, omega));
    s = clip(prod_i (sign(x_i) |W_m,i| + 1 - |W_m,i|), -1, 1);
    y = sigmoid(g) * a + (1 - sigmoid(g)) * m * s,   g a vector over the outputs.

    Regulariser (theirs): (1/t) * sum over W_hat_a, M_hat_a, W_hat_m, M_hat_m, g of
    mean(max(t - |v|, 0)), t = 20: it pushes the raw parameters out of [-t, t] so
    tanh and sigmoid saturate at {-1, 0, 1}. Their code adds it from epoch 10 (1e4 steps
    of batch 64) on, as a switch rather than a ramp: schedule (1, 1e4, 1e4 + 1). Their
    extra condition "only while the batch loss is below 1" and their re-initialisation
    on plateaus belong to a trainer and are not part of this layer.

    Args:
        units: Positive integer, size of the output.
        w_initializer: Initializer for `w_hat_add` and `w_hat_mul`; N(1, 0.1) by default.
        m_initializer: Initializer for `m_hat_add` and `m_hat_mul`; N(-1, 0.1) by default.
        gate_initializer: Initializer for the gate `g`; N(0, 0.1) by default.
            (The defaults are the values their experiment scripts set.)
        epsilon: Positive float, the floor of |x| before the logarithm.
        omega: Positive float, the ceiling of the exponent of the multiplicative path.
        regularizer_threshold: Positive float, t above.

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("w_hat_add", "m_hat_add", "w_hat_mul", "m_hat_mul", "g")
    discrete_weight_names = ("W_add", "W_mul", "gate")
    regularizer_schedule = (1.0, 10_000, 10_001)

    def __init__(
        self,
        units,
        w_initializer=None,
        m_initializer=None,
        gate_initializer=None,
        epsilon=1e-7,
        omega=20.0,
        regularizer_threshold=20.0,
        **kwargs,
    ):
        super().__init__(units, **kwargs)
        for name, value in (
            ("epsilon", epsilon),
            ("omega", omega),
            ("regularizer_threshold", regularizer_threshold),
        ):
            positive_number(name, value)
        self.w_initializer = keras.initializers.get(w_initializer or keras.initializers.RandomNormal(1.0, 0.1))
        self.m_initializer = keras.initializers.get(m_initializer or keras.initializers.RandomNormal(-1.0, 0.1))
        self.gate_initializer = keras.initializers.get(
            gate_initializer or keras.initializers.RandomNormal(0.0, 0.1)
        )
        self.epsilon = float(epsilon)
        self.omega = float(omega)
        self.regularizer_threshold = float(regularizer_threshold)

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.w_hat_add = self.add_weight(name="w_hat_add", shape=shape, initializer=self.w_initializer)
        self.m_hat_add = self.add_weight(name="m_hat_add", shape=shape, initializer=self.m_initializer)
        self.w_hat_mul = self.add_weight(name="w_hat_mul", shape=shape, initializer=self.w_initializer)
        self.m_hat_mul = self.add_weight(name="m_hat_mul", shape=shape, initializer=self.m_initializer)
        self.g = self.add_weight(name="g", shape=(self.units,), initializer=self.gate_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, w_hat_add, m_hat_add, w_hat_mul, m_hat_mul, g):
        return functional.inalu(
            x, w_hat_add, m_hat_add, w_hat_mul, m_hat_mul, g, epsilon=self.epsilon, omega=self.omega
        )

    def discrete_weights(self, w_hat_add, m_hat_add, w_hat_mul, m_hat_mul, g, **_):
        return [
            functional.nac_weight(w_hat_add, m_hat_add),
            functional.nac_weight(w_hat_mul, m_hat_mul),
            ops.expand_dims(ops.sigmoid(g), -2),  # [..., 1, out], so reductions over (-2, -1) apply
        ]

    def paths(self, w_hat_add, m_hat_add, w_hat_mul, m_hat_mul, **_):
        return [
            ("sum", functional.nac_weight(w_hat_add, m_hat_add)),
            ("product", functional.nac_weight(w_hat_mul, m_hat_mul)),
        ]

    def gate(self, x, g, **_):
        # One gate per output, the same for every input: broadcast it over the batch.
        return ops.expand_dims(ops.sigmoid(g), -2) + ops.zeros_like(x[..., :1])

    def snap(self, w_hat_add, m_hat_add, w_hat_mul, m_hat_mul, g, **params):
        """Both weight matrices rounded to {-1, 0, 1} and the gate to {0, 1}, made exact by saturation.

        The multiplicative path stays capped at exp(omega): it cannot be exact beyond that.
        """
        w_hat_add, m_hat_add = functional.snapped_nac_params(functional.nac_weight(w_hat_add, m_hat_add))
        w_hat_mul, m_hat_mul = functional.snapped_nac_params(functional.nac_weight(w_hat_mul, m_hat_mul))
        return {
            **params,
            "w_hat_add": w_hat_add,
            "m_hat_add": m_hat_add,
            "w_hat_mul": w_hat_mul,
            "m_hat_mul": m_hat_mul,
            "g": functional.snapped_gate_logit(ops.sigmoid(g)),
        }

    def regularizer(self, w_hat_add, m_hat_add, w_hat_mul, m_hat_mul, g, **_):
        t = self.regularizer_threshold
        matrices = (w_hat_add, m_hat_add, w_hat_mul, m_hat_mul)
        total = ops.mean(ops.relu(t - ops.abs(g)), axis=-1)
        for v in matrices:
            total = total + ops.mean(ops.relu(t - ops.abs(v)), axis=(-2, -1))
        return total / t

    def get_config(self):
        return {
            **super().get_config(),
            "w_initializer": keras.initializers.serialize(self.w_initializer),
            "m_initializer": keras.initializers.serialize(self.m_initializer),
            "gate_initializer": keras.initializers.serialize(self.gate_initializer),
            "epsilon": self.epsilon,
            "omega": self.omega,
            "regularizer_threshold": self.regularizer_threshold,
        }
