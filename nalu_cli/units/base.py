"""Common base of the arithmetic-unit layers: a Keras layer over pure functions of its weights."""

import keras
from keras import ops


def positive_number(name: str, value) -> float:
    """`value` as a float if it is a positive number (not a bool); ValueError quoting it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value}")
    return float(value)


class ArithmeticUnit(keras.layers.Layer):
    """A layer whose maths are pure functions of its weights, so trainers can call them directly.

    Subclasses list their weights in `weight_names`, create them in `build`, and
    implement `forward`. Every hook takes the weights as keyword tensors that may
    carry leading replica axes (`[..., in, out]`) and must keep those axes:
    the replica trainer runs R models at once through the same functions.

    Hooks:
        forward(x, **params): the output; x is `[..., batch, in]`.
        discrete_weights(**params): effective weights a solved unit holds at
            {-1, 0, 1} (gates at {0, 1}); drives sparsity error and snapping.
        regularizer(**params): sparsity penalty per replica (shape = leading axes),
            scaled by the trainer with `regularizer_schedule`.
        clip(**params): parameters after each optimiser step (e.g. W in [-1, 1]).
        paths(**params): what a solved unit computes, as exact arithmetic (`nalu inspect`).
        gate(x, **params): for two-path units, the weight of the first path.
        snap(**params): parameters moved to the exact solution nearest them.

    Class attributes:
        regularizer_schedule: published (scale, start_step, end_step): lambda ramps
            linearly from 0 at start_step to scale at end_step.
        discrete_weight_names: one name per `discrete_weights` entry, for reports.

    Args:
        units: Positive integer, size of the output.

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names: tuple[str, ...] = ()
    regularizer_schedule: tuple[float, int, int] = (0.0, 0, 1)
    discrete_weight_names: tuple[str, ...] = ()

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"`units` must be a positive integer. Received: units={units}")
        self.units = units
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def params(self) -> dict:
        return {name: getattr(self, name) for name in self.weight_names}

    def forward(self, x, **params):
        raise NotImplementedError

    def discrete_weights(self, **params) -> list:
        return []

    def regularizer(self, **params):
        """Madsen & Johansen's sparsity penalty mean(min(|W|, 1 - |W|)) over the discrete weights."""
        total = 0.0
        for weight in self.discrete_weights(**params):
            magnitude = ops.abs(weight)
            total = total + ops.mean(ops.minimum(magnitude, 1.0 - magnitude), axis=(-2, -1))
        return total

    def sparsity_error(self, **params):
        """max over weights of min(|W|, |1 - |W||): 0 when every weight sits at -1, 0 or 1."""
        errors = [
            ops.max(ops.minimum(ops.abs(w), ops.abs(1.0 - ops.abs(w))), axis=(-2, -1))
            for w in self.discrete_weights(**params)
        ]
        return ops.max(ops.stack(errors), axis=0) if errors else 0.0

    def clip(self, **params) -> dict:
        return params

    def paths(self, **params) -> list[tuple[str, object]]:
        """The unit read as exact arithmetic: one (kind, [..., in, out] matrix) per path.

        ("sum", W):     y_j = sum_i W_ij x_i
        ("product", P): y_j = prod_i x_i ** P_ij
        Exact once the weights sit at their discrete values (see `snap`). Units with two
        paths (NALU, iNALU) mix them with `gate`; an empty list means no such reading.
        """
        return []

    def gate(self, x, **params):
        """For two-path units, the weight of `paths()[0]` per output, [..., batch, out]; None otherwise."""
        return None

    def snap(self, **params) -> dict:
        """Parameters moved to the exact solution nearest them: discrete weights exactly at
        their values, in the unit's float32 arithmetic.

        Raises NotImplementedError, with the reason, when the unit has no exact form.
        """
        raise NotImplementedError(f"{type(self).__name__} has no exact discrete form")

    def call(self, inputs):
        return self.forward(inputs, **self.params())

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
