"""`SplitAdam`: nalu's split-adam as a Keras optimiser, so any model can `compile` with it.

Each step is `optimizer.update`, the function nalu's trainer runs, applied to one variable at
a time: on the same gradients it takes the same steps (tests/test_keras_api.py checks it).
"""

from __future__ import annotations

import re

import keras
from keras import ops

from nalu_cli.training import optimizer


@keras.saving.register_keras_serializable(package="nalu")
class SplitAdam(keras.optimizers.Optimizer):
    """Adam whose input-reading weight matrices move their common mode with moments of its own.

    A matrix's gradient G is split into its mean over the input rows, C = mean_i G_ij, and the
    rest G - C; each part has its own Adam moments and the step is the sum of the two Adam
    steps (see `nalu_cli.training.optimizer.update`). Inputs that share a mean (U[1, 2] has
    mean 1.5 everywhere) put one large common term in every input's gradient, and plain Adam
    divides the small differences that tell the inputs apart by it. Other variables take
    plain Adam steps. beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-7, as Keras's Adam.

    Args:
        learning_rate: A float, a `keras.optimizers.schedules.LearningRateSchedule` or a
            callable, as for any Keras optimiser. Defaults to `0.001`.
        split: Which weight matrices (2-D, more than one row) get split moments. `None`
            (default): those of the first layer the optimiser is built on, the layer that
            reads the inputs in a Sequential or functional model (nalu's trainer splits its
            first layer only: splitting the second made its default model worse on a*b).
            A list of strings: the matrices whose `variable.path` matches one of them
            (`re.search`), e.g. `["nau"]`; `[]` gives plain Adam.
        **kwargs: The base optimiser's arguments (`name`, `clipnorm`, `weight_decay`, ...).

        recurrent_step_scale: A float >= 0, the factor on the step of a cell's h_{t-1} rows.
            Defaults to `1.0`; nalu's trainer uses 1/T for sequences of T steps (see
            `nalu_cli.training.optimizer.recurrent_step_scale`).

        hidden_split_start: An integer >= 0 or `None`. From this step (`iterations`), a split
            matrix of more than one output (hidden unit) also splits the rest of its gradient
            between what its outputs share and what tells them apart, each part with its own
            moments (see `nalu_cli.training.optimizer._hidden_split`). Defaults to `None`
            (never); nalu's default model's gated member begins at 1,000 (`training.hidden_split_start`).

        common_step_scale: A float >= 0, the factor on the common mode's step (the step a split
            matrix takes in all its split rows at once). Defaults to `1.0`; see
            `training.common_step_scale` and `nalu_cli.training.optimizer.update`.

    A matrix whose variable has an integer attribute `split_rows` (an `ArithmeticCell`'s unit,
    which reads [x_t, h_{t-1}]) splits its first rows only, the x_t rows that share the inputs'
    mean, and its other rows, the recurrence, step `recurrent_step_scale` times as far.
    """

    def __init__(self, learning_rate=0.001, split=None, recurrent_step_scale=1.0, hidden_split_start=None,
                 common_step_scale=1.0, name="split_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if hidden_split_start is not None and (isinstance(hidden_split_start, bool) or not isinstance(
                hidden_split_start, int) or hidden_split_start < 0):
            raise ValueError(f"`hidden_split_start` must be an integer >= 0 or None. Received: {hidden_split_start!r}")
        self.hidden_split_start = hidden_split_start
        if split is not None and (isinstance(split, str) or not all(isinstance(p, str) for p in split)):
            raise ValueError(f"`split` must be None or a list of strings. Received: split={split!r}")
        self.split = None if split is None else list(split)
        self.recurrent_step_scale = _step_factor("recurrent_step_scale", recurrent_step_scale)
        self.common_step_scale = _step_factor("common_step_scale", common_step_scale)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])
        first_layer = _path(var_list[0]).rsplit("/", 1)[0] + "/" if var_list else ""
        self._common = {}  # variable index -> (mc, vc): the common mode's moments, [1, out] each
        self._rows = {}  # variable index -> split_rows, read here: update_step may be handed the backend's variable
        self._hidden = {}  # variable index -> {mh, vh, s, u}: the hidden split's state (optimizer.HIDDEN_FIELDS)
        for index, variable in enumerate(var_list):
            if len(variable.shape) != 2 or variable.shape[0] < 2:
                continue
            if getattr(variable, "split_rows", None) is not None:
                self._rows[index] = variable.split_rows
            if self.split is None:
                chosen = _path(variable).startswith(first_layer)
            else:
                chosen = any(re.search(pattern, _path(variable)) for pattern in self.split)
            if chosen:
                prefix = _path(variable).replace("/", "_").replace(":", "_")
                moments = tuple(
                    self.add_variable((1, variable.shape[1]), dtype=variable.dtype, name=f"{prefix}_{kind}")
                    for kind in ("common_m", "common_v")
                )
                self._common[index] = moments
                if self.hidden_split_start is not None and variable.shape[1] > 1:
                    units = variable.shape[1]
                    shapes = {"mh": (variable.shape[0], 1), "vh": (variable.shape[0], 1), "s": (units, units),
                              "u": (1, units)}
                    self._hidden[index] = {
                        kind: self.add_variable(shapes[kind], dtype=variable.dtype, name=f"{prefix}_hidden_{kind}",
                                                initializer=keras.initializers.Constant(units ** -0.5) if kind == "u"
                                                else "zeros")
                        for kind in optimizer.HIDDEN_FIELDS
                    }

    def split_variables(self) -> list:
        """The variables whose common mode moves with its own moments (after `build`)."""
        return [self._trainable_variables[index] for index in sorted(self._common)]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        common = self._common.get(index)
        hidden = self._hidden.get(index)
        state = optimizer.AdamState(
            m=[{"w": self._m[index]}],
            v=[{"w": self._v[index]}],
            mc=[{"w": common[0]}] if common else [{}],
            vc=[{"w": common[1]}] if common else [{}],
            **{kind: [{"w": hidden[kind]}] if hidden else [{}] for kind in optimizer.HIDDEN_FIELDS},
        )
        (new_weight,), new_state = optimizer.update(
            [{"w": ops.cast(gradient, variable.dtype)}],
            state,
            [{"w": variable}],
            optimizer.step_size(learning_rate, self.iterations),
            rows=[self._rows.get(index)],
            row_scales=[{"w": self.recurrent_step_scale} if index in self._rows else {}],
            hidden=(self.hidden_split_start, self.iterations) if hidden else None,
            common_scale=self.common_step_scale,
        )
        self.assign(self._m[index], new_state.m[0]["w"])
        self.assign(self._v[index], new_state.v[0]["w"])
        if common:
            self.assign(common[0], new_state.mc[0]["w"])
            self.assign(common[1], new_state.vc[0]["w"])
        for kind, value in (hidden or {}).items():
            self.assign(value, getattr(new_state, kind)[0]["w"])
        self.assign(variable, new_weight["w"])

    def get_config(self):
        return {**super().get_config(), "split": self.split, "recurrent_step_scale": self.recurrent_step_scale,
                "hidden_split_start": self.hidden_split_start, "common_step_scale": self.common_step_scale}


def _step_factor(name: str, value) -> float:
    """`value` as a float, if it is a finite number >= 0 (a factor on some weights' steps)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"`{name}` must be a finite number >= 0. Received: {value!r}")
    return float(value)


def _path(variable) -> str:
    """A Keras variable's path ('sequential/nau/w'); a plain tf.Variable's name."""
    return getattr(variable, "path", None) or variable.name
