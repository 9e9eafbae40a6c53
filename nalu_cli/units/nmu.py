import keras
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit


@keras.saving.register_keras_serializable(package="nalu")
class NMU(ArithmeticUnit):
    """Neural multiplication unit (Madsen & Johansen 2020): y_j = prod_i (W_ij x_i + 1 - W_ij).

    W is clipped to [0, 1]. The sparsity penalty mean(min(|W|, 1 - |W|)) (the base
    regulariser) ramps from 0 at step 1e6 to 10 at step 2e6, as published.

    Args:
        units: Positive integer, size of the output.
        kernel_initializer: Initializer for `w`; the published U[0.25, 0.75] by default.

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names = ("w",)
    discrete_weight_names = ("w",)
    regularizer_schedule = (10.0, 1_000_000, 2_000_000)
    weight_ranges = {"w": (0.0, 1.0)}

    def __init__(self, units, kernel_initializer=None, **kwargs):
        super().__init__(units, **kwargs)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomUniform(0.25, 0.75)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.w = self.add_weight(name="w", shape=shape, initializer=self.kernel_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def forward(self, x, w):
        return functional.nmu(x, w)

    def discrete_weights(self, w, **_):
        return [w]

    def paths(self, w, **_):
        # W_ij x_i + 1 - W_ij is x_i ** W_ij at W_ij in {0, 1}.
        return [("product", w)]

    def snap(self, w, **params):
        """W rounded to {0, 1}: each factor is then exactly x_i or 1."""
        return {**params, "w": ops.clip(ops.round(w), 0.0, 1.0)}

    def as_power(self, powers, **params):
        """Exact for powers 0 and 1, the only ones an NMU holds; an input at any other power is left
        out, so such a form computes something else and selection's MSE rejects it."""
        return {**params, "w": ops.cast(ops.equal(powers, 1.0), powers.dtype)}

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
