"""Keras callbacks that give `model.fit` what nalu's trainer does between steps.

- `RegularizerSchedule`: each unit's sparsity penalty ramped with the training step
  (`step.regularizer_lambda`, the trainer's schedule), as `LearningRateScheduler` drives the
  learning rate.
- `SnapSelection`: model selection on a validation set the user names, with every unit's
  weights snapped to their exact values as a candidate (the trainer's snapped-weight selection,
  the exact forms derived from the weights included where they apply).
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from nalu_cli.evaluation import mse
from nalu_cli.inspection.snapping import exact_params, snap_units
from nalu_cli.model import forward, get_params, set_params, unit_layers
from nalu_cli.training.evaluate import make_scores
from nalu_cli.training.forms import FORM_SAMPLES
from nalu_cli.training.step import layer_schedules, regularizer_lambda
from nalu_cli.units import ArithmeticUnit


def penalised_units(model) -> list[ArithmeticUnit]:
    """Every unit with a `regularizer_strength`, at any depth (an ArithmeticCell's unit included)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)  # Keras's walk over every tracked sublayer
        if isinstance(layer, ArithmeticUnit) and layer.regularizer_strength is not None
    ]


class RegularizerSchedule(keras.callbacks.Callback):
    """Sets every unit's sparsity-penalty strength from the training step before each batch.

    lambda = scale * clip((step - start) / (end - start), 0, 1) with step the optimiser's
    `iterations` and (scale, start, end) the unit's published `regularizer_schedule` (NAU: 0.01
    from step 5,000 to 50,000), computed by the function nalu's trainer uses. The strength is a
    non-trainable variable of each unit (saved with the model, inert at inference) that scales
    the penalty Keras adds to `model.losses`; without this callback it stays where it is (0 in
    a new model). With `steps_per_execution` > 1 it is set once per execution.

    Args:
        scale: Float or None. If given, replaces every unit's published final strength.
        start: Integer or None. If given, the step where every unit's ramp starts.
        end: Integer or None. If given, the step where every unit's ramp ends.

    After each epoch, `logs` holds each unit's strength as `<layer name>_regularizer_strength`.
    """

    def __init__(self, scale=None, start=None, end=None):
        super().__init__()
        for name, value in (("scale", scale), ("start", start), ("end", end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"`{name}` must be None or a non-negative number. Received: {name}={value}")
        self.overrides = (scale, start, end)

    def on_train_begin(self, logs=None):
        units = penalised_units(self.model)
        if not units:
            raise ValueError("RegularizerSchedule: the model has no nalu unit with a sparsity penalty")
        schedules = layer_schedules(units, *self.overrides)

        @tf.function(autograph=False)
        def update(step):
            for unit, schedule in zip(units, schedules):
                strength = unit.regularizer_strength
                strength.assign(tf.cast(regularizer_lambda(schedule, step), strength.dtype))

        self._units, self._update = units, update

    def on_train_batch_begin(self, batch, logs=None):
        self._update(self.model.optimizer.iterations)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for unit in self._units:
                logs[f"{unit.name}_regularizer_strength"] = float(unit.regularizer_strength.numpy())


class SnapSelection(keras.callbacks.Callback):
    """Keeps the best weights on a validation set, the snapped ones when they are better.

    Every `every` epochs the model's weights, and the same weights with every nalu unit snapped
    to its exact values (`snap_units`: W to {-1, 0, 1}, gates to {0, 1}, ...), are scored by
    their MSE on `validation_data`. The better of the two becomes the selected checkpoint if it
    beats every earlier one (strictly; the weights as trained win a tie), as in nalu's trainer:
    an exact solution is handed out as soon as the weights are in its basin, where gradient
    descent in float32 only approaches it. Training goes on from the model's own weights; when
    it ends the model holds the selected ones. Give interpolation data: selection should never
    see the data you test extrapolation on.

    When the model is two units and nothing else (its output is the second unit's of the first
    unit's of the input, checked on the first validation samples), the snapped candidate is, as
    in `nalu train`, the better of every unit snapped and the exact forms derived from the
    weights (a sum of sums; a product of powers of the first layer's patterns), chosen on the
    first 1,000 validation samples: the weights can be at the right function at the wrong scale,
    which rounding each weight alone misses (nalu_cli/training/forms.py).

    Args:
        validation_data: A tuple `(x, y)` of arrays.
        every: Positive integer, epochs between two checks.
        batch_size: Positive integer, the batch size of the predictions on `validation_data`.
        verbose: 0 or 1; 1 prints a line when a snapped checkpoint is selected.

    Attributes (after training): `best_mse`, `best_epoch` (0-based, None if nothing was
    selected), `best_snapped` (whether the selected weights are the snapped ones), `best_weights`.
    After each check, `logs` holds `selection_mse` and `snapped_selection_mse`.
    """

    def __init__(self, validation_data, every=1, batch_size=1024, verbose=0):
        super().__init__()
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("`validation_data` must be a tuple (x, y). "
                             f"Received: validation_data of type {type(validation_data).__name__}")
        for name, value in (("every", every), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
        self.x, self.y = validation_data
        self.every, self.batch_size, self.verbose = every, batch_size, verbose

    def on_train_begin(self, logs=None):
        layers = unit_layers(self.model)
        if not layers:
            raise ValueError("SnapSelection: the model has no nalu unit to snap")
        exact_params(layers, get_params(self.model))  # a unit without an exact form fails here, not after an epoch
        self.best_mse, self.best_epoch, self.best_snapped, self.best_weights = math.inf, None, False, None
        self._scores = self._derived_scores(layers)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        weights = self.model.get_weights()
        trained = self._mse()
        if self._scores is None:
            snap_units(self.model)
        else:  # every unit snapped, or an exact form derived from the weights where that is better
            params = [{name: tf.constant(value[None]) for name, value in layer.items()} for layer in get_params(self.model)]
            (snapped_params, _), = self._scores(params, self._sets)[1:]
            set_params(self.model, [{name: value.numpy()[0] for name, value in layer.items()} for layer in snapped_params])
        snapped = self._mse()
        candidates = [(trained, False, weights), (snapped, True, self.model.get_weights())]
        self.model.set_weights(weights)  # training continues from its own weights
        for score, is_snapped, candidate in candidates:
            if math.isfinite(score) and score < self.best_mse:
                self.best_mse, self.best_epoch, self.best_snapped = score, epoch, is_snapped
                self.best_weights = candidate
                if is_snapped and self.verbose:
                    print(f"\nEpoch {epoch + 1}: SnapSelection selected the snapped weights "
                          f"(validation MSE {score:.3g}).")
        if logs is not None:
            logs["selection_mse"], logs["snapped_selection_mse"] = trained, snapped

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def _derived_scores(self, layers):
        """The evaluator's scores graph (training/evaluate.py, one model) when the model is the two
        `layers` in sequence on a static input, else None: the forms are of such models only."""
        x = np.asarray(self.x)
        if len(layers) != 2 or x.ndim != 2:
            return None
        pure = functools.partial(forward, self.model)
        params = get_params(self.model)
        dtype = next(iter(params[0].values())).dtype  # what the units compute in (float64 under that policy)
        head = x[:64].astype(dtype)
        own = np.asarray(self.model.predict(head, batch_size=self.batch_size, verbose=0), np.float64)
        pure_output = pure([{name: tf.constant(v) for name, v in layer.items()} for layer in params], tf.constant(head))
        pure_output = np.asarray(pure_output, np.float64)
        if own.shape != pure_output.shape or not np.allclose(own, pure_output, rtol=1e-5, atol=1e-6, equal_nan=True):
            return None  # other layers or ops around the units
        # the samples the forms are chosen on: the candidates' MSEs are _mse's, on every sample
        y = np.asarray(self.y, dtype).reshape(len(x), -1)[:FORM_SAMPLES]
        self._sets = {"interpolation": (tf.constant(x[None, :FORM_SAMPLES].astype(dtype)), tf.constant(y[None]))}
        return make_scores(pure, layers, snap=True, single=True, per_group=1, jit_compile=False, derived=True)

    def _mse(self) -> float:
        return mse(np.asarray(self.model.predict(self.x, batch_size=self.batch_size, verbose=0)), np.asarray(self.y))
