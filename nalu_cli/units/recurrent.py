"""Recurrent cells: Keras RNN cells whose maths are pure functions of their weights.

Each cell is a Keras RNN cell (`state_size`, `call(inputs, states)`, `get_initial_state`), so
`keras.layers.RNN(cell)` runs it in any model, and an `ArithmeticUnit` whose `forward` runs a
whole sequence [..., batch, T, in] from pure functions (`functional.recurrence`), so nalu's
trainer runs R replicas of it in one compiled graph as it does a static unit. Every cell has a
learnable initial state (initialised to 0), as in stable-nalu's recurrent network.

- `ArithmeticCell("nau", 2)`: any unit as the cell, h_t = unit([x_t, h_{t-1}]); the unit's
  regulariser, clipping and snapping carry over, and the initial state snaps to an integer.
- `LSTMCell(2)`, `GRUCell(2)`: Keras's own cells (the baselines), wrapped to learn their initial
  state; `forward` repeats Keras's maths (tested equal).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from nalu_cli.units import functional
from nalu_cli.units.base import ArithmeticUnit


# Units whose output is a plain sum path, y = [x_t, h_{t-1}] W, with the name of W: as a cell, the
# h_{t-1} rows of W start at the identity.
IDENTITY_UNITS = {"nau": "w", "linear": "kernel"}


class RecurrentUnit(ArithmeticUnit):
    """Base of the cells: subclasses give `step`, their weights (`params`) and their states' names
    (`state_names`: one learnable initial value per state, made by `add_initial_states`)."""

    state_names: tuple[str, ...] = ("initial_state",)  # one learnable initial value per state

    @property
    def state_size(self):
        return [self.units] * len(self.state_names)

    @property
    def output_size(self):
        return self.units

    def step(self, x_t, states: list, **params) -> list:
        """New states from x_t [..., batch, in] and the states [..., batch, units]; the first is the output."""
        raise NotImplementedError

    def forward(self, x, **weights):
        """The output after the last step of x [..., batch, T, in]: [..., batch, units]."""
        dtype = weights[self.state_names[0]].dtype
        # x_t is cast at its step, not the whole sequence at once: a test set of 1,000 sequences of
        # 1,000 steps is 40 MB in float32 and would take 80 MB more in float64 at every evaluation.
        first = ops.cast(x[..., :1, :1], dtype)  # the states' shape and dtype
        states = [functional.initial_state(weights[name], first) for name in self.state_names]
        return functional.recurrence(lambda x_t, s: self.step(ops.cast(x_t, dtype), s, **weights), states, x)

    def call(self, inputs, states):
        states = self.step(inputs, list(states), **self.params())
        return states[0], states

    def get_initial_state(self, batch_size=None):
        return [ops.broadcast_to(ops.expand_dims(getattr(self, name), 0), (batch_size, self.units))
                for name in self.state_names]

    def add_initial_states(self, trainable: bool = True):
        for name in self.state_names:
            setattr(self, name, self.add_weight(name=name, shape=(self.units,), initializer="zeros", trainable=trainable))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)


@keras.saving.register_keras_serializable(package="nalu")
class ArithmeticCell(RecurrentUnit):
    """Any nalu unit as a recurrent cell: h_t = unit([x_t, h_{t-1}]), h_0 learned (initially 0).

    An NAU cell accumulates exactly: with weights [[slice mask], [identity]] it computes
    h_t = h_{t-1} + sum(x_t[slice]), and stays exact at any sequence length. A sum-path cell
    (NAU, linear) starts with that identity on its h_{t-1} rows (IDENTITY_UNITS).

    Args:
        unit: Name of the unit (as in nalu's config: "nau", "nmu", "nalu", ...).
        units: Positive integer, size of the hidden state.
        learn_initial_state: Whether h_0 is learned (stable-nalu's network) or stays 0, the state
            an exact accumulator starts from (the weight is then non-trainable, and `clip` keeps
            nalu's trainer from moving it). A learned h_0 is a bias: at the training length the
            sums concentrate (10 steps of U[1, 2]: mean 15, sd 0.9), so a scaled sum plus an
            offset fits almost as well as the exact sum, and training settles there.

    Input shape (as a cell): `(batch_size, input_dim)`; states `[(batch_size, units)]`.
    """

    def __init__(self, unit, units, learn_initial_state=True, **kwargs):
        from nalu_cli.units import UNIT_LAYERS

        super().__init__(units, **kwargs)
        if unit not in UNIT_LAYERS or issubclass(UNIT_LAYERS[unit], RecurrentUnit):
            raise ValueError(f"`unit` must be one of {', '.join(UNIT_LAYERS)}. Received: unit={unit!r}")
        if not isinstance(learn_initial_state, bool):
            raise ValueError(f"`learn_initial_state` must be True or False. Received: {learn_initial_state!r}")
        self.unit_name, self.learn_initial_state = unit, learn_initial_state
        self.unit = UNIT_LAYERS[unit](units, name="unit", dtype=self.dtype_policy)
        self.weight_names = (*self.unit.weight_names, "initial_state")
        self.regularizer_schedule = self.unit.regularizer_schedule
        self.discrete_weight_names = self.unit.discrete_weight_names

    def build(self, input_shape):
        self.unit.build((*input_shape[:-1], input_shape[-1] + self.units))
        self.add_initial_states(trainable=self.learn_initial_state)
        self.split_rows = input_shape[-1]  # the unit's first rows read x_t, the rest h_{t-1} (split-adam)
        for weight in self.unit.trainable_weights:
            weight.split_rows = self.split_rows  # for nalu_cli.keras.SplitAdam, which sees variables only
        # An identity recurrence (Le, Jaitly & Hinton 2015, "IRNN"): a sum unit starts as an exact
        # accumulator h_t = h_{t-1} + x_t W_x and learns what to accumulate. The evidence here is
        # thin: NAU cells on a+b (10,000 steps) solved 2 of seeds 0-3 with it and 2 without, 6 of
        # seeds 0-7 with it; runs that fail, with or without it, end on a decaying recurrence (the
        # decay of old steps and the scale of new ones trade off at the training length).
        if self.unit_name in IDENTITY_UNITS:
            weight = getattr(self.unit, IDENTITY_UNITS[self.unit_name])
            values = ops.convert_to_numpy(weight)
            values[input_shape[-1]:, :] = np.eye(self.units)
            weight.assign(values)

    def params(self) -> dict:
        return {**self.unit.params(), "initial_state": self.initial_state}

    def step(self, x_t, states, initial_state=None, **unit_params):
        (h,) = states
        return [self.unit.forward(ops.concatenate([functional.broadcast_like(x_t, h), h], axis=-1), **unit_params)]

    def discrete_weights(self, initial_state=None, **unit_params):
        return self.unit.discrete_weights(**unit_params)

    def regularizer(self, initial_state=None, **unit_params):
        return self.unit.regularizer(**unit_params)

    def clip(self, initial_state, **unit_params):
        if not self.learn_initial_state:  # nalu's trainer steps every weight; this one stays at 0
            initial_state = ops.zeros_like(initial_state)
        return {**self.unit.clip(**unit_params), "initial_state": initial_state}

    def paths(self, initial_state=None, **unit_params):
        """The unit's paths over [x_t, h_{t-1}] (the last `units` rows read the previous state)."""
        return self.unit.paths(**unit_params)

    def structure(self, initial_state=None, **unit_params):
        return self.unit.structure(**unit_params)

    def unit_scaled(self, rows=None, initial_state=None, **unit_params):
        """The unit's x_t rows scaled (its h_{t-1} rows left as they are)."""
        return {**self.unit.unit_scaled(rows=self.split_rows, **unit_params), "initial_state": initial_state}

    def snap(self, initial_state, **unit_params):
        return {**self.unit.snap(**unit_params), "initial_state": ops.round(initial_state)}

    def get_config(self):
        return {**super().get_config(), "unit": self.unit_name, "learn_initial_state": self.learn_initial_state}


class _KerasCell(RecurrentUnit):
    """Keras's own cell `keras_cell` with learnable initial states; `forward` repeats its maths."""

    keras_weights = ("kernel", "recurrent_kernel", "bias")

    def build(self, input_shape):
        self.cell.build(input_shape)
        self.add_initial_states()

    def params(self) -> dict:
        return {**{name: getattr(self.cell, name) for name in self.keras_weights},
                **{name: getattr(self, name) for name in self.state_names}}

    def call(self, inputs, states):
        output, states = self.cell(inputs, list(states))
        return output, states


@keras.saving.register_keras_serializable(package="nalu")
class LSTMCell(_KerasCell):
    """keras.layers.LSTMCell with a learnable initial state (h_0, c_0), initially 0.

    Args:
        units: Positive integer, size of the hidden state.
    """

    state_names = ("initial_h", "initial_c")

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        self.cell = keras.layers.LSTMCell(units, name="lstm", dtype=self.dtype_policy)

    def step(self, x_t, states, kernel, recurrent_kernel, bias, **_):
        h, c = states
        return list(functional.lstm_step(functional.broadcast_like(x_t, h), h, c, kernel, recurrent_kernel, bias))


@keras.saving.register_keras_serializable(package="nalu")
class GRUCell(_KerasCell):
    """keras.layers.GRUCell (reset_after=True) with a learnable initial state h_0, initially 0.

    Args:
        units: Positive integer, size of the hidden state.
    """

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        self.cell = keras.layers.GRUCell(units, name="gru", dtype=self.dtype_policy)

    def step(self, x_t, states, kernel, recurrent_kernel, bias, **_):
        (h,) = states
        return [functional.gru_step(functional.broadcast_like(x_t, h), h, kernel, recurrent_kernel, bias)]
