"""Common base of the arithmetic-unit layers: a Keras layer over pure functions of its weights.

The same hooks serve nalu's trainer (pure functions over replica-stacked tensors) and
`model.fit`: a unit's weight ranges become Keras constraints (`Clip`), its sparsity penalty a
Keras weight regulariser (`SparsityPenalty`) scaled by a non-trainable variable that
`nalu_cli.keras.RegularizerSchedule` ramps with the optimiser's step.
"""

import keras
from keras import ops

# The name of a unit's non-trainable lambda variable (`ArithmeticUnit.regularizer_strength`).
REGULARIZER_STRENGTH = "regularizer_strength"


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
        clip(**params): parameters after each optimiser step: the base clips every weight in
            `weight_ranges` (e.g. W in [-1, 1]).
        paths(**params): what a solved unit computes, as exact arithmetic (`nalu inspect`).
        gate(x, **params): for two-path units, the weight of the first path.
        snap(**params): parameters moved to the exact solution nearest them.

    Class attributes:
        regularizer_schedule: published (scale, start_step, end_step): lambda ramps
            linearly from 0 at start_step to scale at end_step.
        weight_ranges: {weight name: (low, high)}, the range `clip` keeps it in.
        discrete_weight_names: one name per `discrete_weights` entry, for reports.

    For `model.fit`, every weight in `weight_ranges` gets a `Clip` constraint (the optimiser
    applies it after each step), and a unit with a published schedule has a non-trainable
    scalar `regularizer_strength` (lambda, initially 0; saved with the model, inert at
    inference) and its penalty `regularizer_strength * regularizer(**weights)` in
    `layer.losses` (`SparsityPenalty`, carried by its first weight).

    Args:
        units: Positive integer, size of the output.

    Input shape: `(batch_size, input_dim)`. Output shape: `(batch_size, units)`.
    """

    weight_names: tuple[str, ...] = ()
    regularizer_schedule: tuple[float, int, int] = (0.0, 0, 1)
    weight_ranges: dict[str, tuple[float, float]] = {}
    discrete_weight_names: tuple[str, ...] = ()
    regularizer_strength = None  # built with the first weight for units with a published schedule

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"`units` must be a positive integer. Received: units={units}")
        self.units = units
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def add_weight(self, *args, name=None, constraint=None, regularizer=None, **kwargs):
        """Keras's `add_weight`; a weight in `weight_ranges` gets its `Clip` constraint, and the first
        of `weight_names` carries the unit's whole sparsity penalty (`SparsityPenalty`), made with
        the `regularizer_strength` variable it scales by when the unit has a published schedule.
        Inside `initial_params`: the weight's initial value, as numpy, and no variable."""
        if self._initial_values_only:
            return self._initial_value(*args, **kwargs)
        if constraint is None and name in self.weight_ranges:
            constraint = Clip(*self.weight_ranges[name])
        if self.regularizer_schedule[0] and self.weight_names and name == self.weight_names[0]:
            self.regularizer_strength = super().add_weight(
                name=REGULARIZER_STRENGTH, shape=(), initializer="zeros", trainable=False
            )
            regularizer = regularizer or SparsityPenalty(self)
        return super().add_weight(*args, name=name, constraint=constraint, regularizer=regularizer, **kwargs)

    _initial_values_only = False  # set while `initial_params` builds

    def initial_params(self, input_shape) -> dict:
        """The weights `build(input_shape)` creates, as {name: numpy array}, without creating them.

        The unit's own `build` runs with `add_weight` returning each weight's initial value
        (Keras's own initializer, called as Keras calls it, in the same order): the same numbers
        as the variables of a built layer, for a layer that is then discarded. A Keras variable
        costs about 5 ms here (tracking, eager ops); the trainer builds one Keras model per
        architecture and draws its other restarts' initial weights this way (model.initial_params).
        An unbuilt layer only: a built one keeps its variables.
        """
        if self.built:
            raise ValueError(f"initial_params needs an unbuilt layer; {self.name} is built")
        self._initial_values_only = True
        try:
            self.build(input_shape)
        finally:
            self._initial_values_only = False
        return {name: getattr(self, name) for name in self.weight_names}

    def _initial_value(self, shape=None, initializer=None, dtype=None, **_):
        """What Keras's add_weight would initialise a variable with (keras.Variable calls the
        initializer with the standardised shape and the layer's variable dtype)."""
        dtype = keras.backend.standardize_dtype(dtype or self.variable_dtype)
        value = keras.initializers.get(initializer)(tuple(int(d) for d in shape), dtype=dtype)
        return ops.convert_to_numpy(value)

    def load_own_variables(self, store):
        # A .keras file written before units had `regularizer_strength` holds every weight but
        # that one, the last variable: load them and leave the strength at 0.
        variables = self._trainable_variables + self._non_trainable_variables
        if self.regularizer_strength is not None and len(store.keys()) == len(variables) - 1:
            if variables[-1] is self.regularizer_strength:
                for i, variable in enumerate(variables[:-1]):
                    variable.assign(store[f"{i}"])
                return
        super().load_own_variables(store)

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
        return {
            **params,
            **{name: ops.clip(params[name], low, high) for name, (low, high) in self.weight_ranges.items()},
        }

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

    def structure(self, **params) -> dict:
        """The weights that give this unit its form, moved onto the form nearest them: {name: value}.

        The polish step with `training.polish_hold` holds these where this puts them and refits
        every other weight (training/polish.py). Empty (the default): nothing to hold.
        """
        return {}

    def unit_scaled(self, rows: int | None = None, **params) -> dict:
        """The weights with every output's largest weight (over the first `rows` input rows, all
        when None) at +-1, for a unit whose outputs are sums of its inputs; others unchanged.

        A product of powers of such outputs is blind to a scale per output that its powers cancel
        (a ratio's common factor), and the exact weights are at +-1: the held polish starts a layer
        that feeds a held one here (training/polish.py), so that snapping finds the exact weights.
        """
        return params

    def snap(self, **params) -> dict:
        """Parameters moved to the exact solution nearest them: discrete weights exactly at
        their values, in the unit's float32 arithmetic.

        Raises NotImplementedError, with the reason, when the unit has no exact form.
        """
        raise NotImplementedError(f"{type(self).__name__} has no exact discrete form")

    def as_sum(self, weights, **params) -> dict | None:
        """Parameters with which the unit computes exactly the sum x `weights` ([..., in, out], integer
        values within the unit's range), the rest of `params` (snapped ones, from selection) kept; None
        when it has no such form. Selection tries exact sums of sums and products of powers this way
        (training/forms.py)."""
        return None

    def as_power(self, powers, **params) -> dict | None:
        """Parameters with which the unit computes exactly prod_i x_i ** powers_i (`powers` [..., in,
        out], multiples of 1/2; an input at power 0 left out), the rest of `params` kept; None when it
        has no such form. A unit holding fewer powers (NMU: 0 and 1) is exact on those only.
        Selection tries an exact product of powers this way (training/forms.py)."""
        return None

    def call(self, inputs):
        return self.forward(inputs, **self.params())

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="nalu")
class Clip(keras.constraints.Constraint):
    """Keeps a weight in [low, high] after every optimiser step: a unit's `weight_ranges` for `model.fit`.

    Args:
        low: Float, the smallest value a weight may take.
        high: Float, the largest, above `low`.
    """

    def __init__(self, low, high):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise ValueError(f"`low` must be a number below `high`. Received: low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    def __call__(self, w):
        return ops.clip(w, self.low, self.high)

    def get_config(self):
        return {"low": self.low, "high": self.high}


class SparsityPenalty(keras.regularizers.Regularizer):
    """A unit's penalty for `layer.losses`: `unit.regularizer_strength * unit.regularizer(**weights)`.

    Keras hands a weight regulariser one variable; this one is attached to the unit's first
    weight and computes from all of them (iNALU's and the gated unit's penalties span several).
    Keras recomputes weight regularisers from the variables after the forward pass, outside any
    loop, so the penalty also reaches `model.losses` for a unit inside `keras.layers.RNN`, where
    `add_loss` from the cell's step (a `tf.while_loop`) fails. The layer builds it; it is not
    serialised (the strength variable is, with the layer's weights).
    """

    def __init__(self, unit: ArithmeticUnit):
        self.unit = unit

    def __call__(self, weight):
        unit = self.unit
        penalty = ops.cast(unit.regularizer(**unit.params()), unit.regularizer_strength.dtype)
        # The loss Keras sums it into is in floatx (a recurrent unit computes in float64).
        return ops.cast(unit.regularizer_strength * penalty, keras.backend.floatx())
