import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit


@keras.saving.register_keras_serializable(package="nalu")
class NMRU(ArithmeticUnit):
    """Neural multiplicative reciprocal unit (Mistry, Farrahi & Hare 2021): an NMU over [x, 1/x].

    z = [x, 1 / (x + eps sign(x))];  W: [2 * input_dim, units], clipped to [0, 1];
    y_j = prod_i (W_ij |z_i| + 1 - W_ij) * cos(pi [z < 0] W)_j   (sign retrieval, default)
    y_j = prod_i (W_ij z_i + 1 - W_ij)                             (sign_retrieval=False)

    Regulariser: the base mean(min(|W|, 1 - |W|)), ramped 0 -> 10 over steps 5e4 -> 7.5e4,
    as in their experiments. Their gradient-norm clipping (norm 1) is the trainer's business.

    Args:
        units: Positive integer, size of the output.
        kernel_initializer: Initializer for `w`; the published U[0.25, 0.75] by default.
        epsilon: Non-negative float guarding 1/x; it moves x away from 0 without
            flipping its sign. Float32 machine epsilon by default, as in their code.
        sign_retrieval: Whether to compute the magnitude on |z| and the sign with a cosine.

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("w",)
    discrete_weight_names = ("w",)
    regularizer_schedule = (10.0, 50_000, 75_000)
    weight_ranges = {"w": (0.0, 1.0)}

    def __init__(
        self, units, kernel_initializer=None, epsilon=1.1920929e-07, sign_retrieval=True, **kwargs
    ):
        super().__init__(units, **kwargs)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise ValueError(f"`epsilon` must be a non-negative number. Received: epsilon={epsilon}")
        if not isinstance(sign_retrieval, bool):
            raise ValueError(f"`sign_retrieval` must be True or False. Received: sign_retrieval={sign_retrieval}")
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomUniform(0.25, 0.75)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.epsilon = float(epsilon)
        self.sign_retrieval = sign_retrieval

    def build(self, input_shape):
        shape = (2 * input_shape[-1], self.units)
        self.w = self.add_weight(name="w", shape=shape, initializer=self.kernel_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, w):
        return functional.nmru(x, w, epsilon=self.epsilon, sign_retrieval=self.sign_retrieval)

    def discrete_weights(self, w, **_):
        return [w]

    def paths(self, w, **_):
        # At W in {0, 1}, x_i enters to the power W[i] (from x) minus W[in + i] (from 1/x).
        inputs = w.shape[-2] // 2
        return [("product", w[..., :inputs, :] - w[..., inputs:, :])]

    def snap(self, w, **params):
        """W rounded to {0, 1}: each factor is then exactly z_i or 1."""
        return {**params, "w": ops.clip(ops.round(w), 0.0, 1.0)}

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "epsilon": self.epsilon,
            "sign_retrieval": self.sign_retrieval,
        }
