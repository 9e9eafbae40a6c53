"""Models: two arithmetic-unit layers, input_size -> hidden_size -> 1, or a recurrent cell and an output unit.

Static: x [batch, n] -> layer_1 -> layer_2 -> y [batch, 1].
Recurrent: x [batch, T, n] -> keras.layers.RNN(cell "layer_1") -> the last h_t -> layer_2 -> y.
A recurrent model computes in float64 (RECURRENT_DTYPE), its input and output stay float32.
"""

from __future__ import annotations

import random

import keras
import numpy as np
from keras import ops

from nalu_cli.config import ModelConfig
from nalu_cli.units import UNIT_LAYERS, ArithmeticCell, ArithmeticUnit, RecurrentUnit

# A float32 accumulator's rounding over 1,000 steps (about 5e-7 relative) exceeds the error of the
# near-perfect solution the success criterion allows on seeds whose slices cancel it (measured: an
# exact NAU accumulator in float32 failed 2 of 20 seeds of a+b and of a*b at T = 1,000); in float64
# an exact cell stays exact far beyond any length tested.
RECURRENT_DTYPE = "float64"


def build_model(model_config: ModelConfig, input_size: int, seed: int, kind: str = "static") -> keras.Model:
    """A freshly initialised model; the same seed gives the same initial weights."""
    keras.utils.set_random_seed(seed)
    first, second = model_config.layer_units
    name = f"{model_config.name.replace('-', '_')}_model"
    if kind == "recurrent":
        cell = make_cell(first, model_config.hidden_size, model_config.learns_initial_state)
        return keras.Sequential(
            [
                keras.Input((None, input_size), name="x"),
                keras.layers.RNN(cell, name="recurrence", dtype=RECURRENT_DTYPE),
                UNIT_LAYERS[second](1, name="layer_2", dtype=RECURRENT_DTYPE),
                keras.layers.Activation("linear", dtype="float32", name="y"),  # float32 out, as static models
            ],
            name=name,
        )
    return keras.Sequential([keras.Input((input_size,), name="x"), *static_layers(model_config)], name=name)


def static_layers(model_config: ModelConfig) -> list[ArithmeticUnit]:
    """A static model's two units, unbuilt: input -> hidden_size -> 1."""
    first, second = model_config.layer_units
    return [UNIT_LAYERS[first](model_config.hidden_size, name="layer_1"), UNIT_LAYERS[second](1, name="layer_2")]


def initial_params(model_config: ModelConfig, input_size: int, seed: int, kind: str = "static") -> list[dict]:
    """`get_params(build_model(model_config, input_size, seed, kind))`, the same numbers, without the
    model for a static one: its units' `initial_params`, built in the order the model builds them
    (the seed's draws are taken in that order). A recurrent model's cell adjusts its weights as it
    builds (an identity recurrence), so that model is built."""
    if kind == "recurrent":
        return get_params(build_model(model_config, input_size, seed, kind))
    # Keras's initializers take their seeds from Python's generator as they are made, so seeding it
    # is what keras.utils.set_random_seed does that matters here; its TensorFlow seed would also
    # clear TensorFlow's kernel caches (2 ms a weight after it, against 0.3 ms).
    random.seed(seed)
    np.random.seed(seed)
    layers = static_layers(model_config)
    return [layer.initial_params((None, fan_in)) for layer, fan_in in zip(layers, (input_size, model_config.hidden_size))]


def make_cell(unit: str, units: int, learn_initial_state: bool = True) -> RecurrentUnit:
    """The recurrent cell for a unit name: Keras's LSTM / GRU cells (which always learn their
    initial state), or any nalu unit as an ArithmeticCell."""
    cls = UNIT_LAYERS[unit]
    if issubclass(cls, RecurrentUnit):
        return cls(units, name="layer_1", dtype=RECURRENT_DTYPE)
    return ArithmeticCell(unit, units, learn_initial_state, name="layer_1", dtype=RECURRENT_DTYPE)


def unit_layers(model: keras.Model) -> list[ArithmeticUnit]:
    """The model's units in order (a recurrent model's cell first), in any Keras model: at any depth
    (the cell of a `keras.layers.RNN`, the layers of a nested model); a unit's own sublayers (an
    ArithmeticCell's unit) are part of it."""
    found, seen = [], set()

    def visit(layer):
        for sublayer in layer._layers:  # every layer Keras tracks under this one (RNN.cell, a model's layers)
            if id(sublayer) in seen:
                continue
            seen.add(id(sublayer))
            if isinstance(sublayer, ArithmeticUnit):
                found.append(sublayer)
            else:
                visit(sublayer)

    visit(model)
    return found


def get_params(model: keras.Model) -> list[dict]:
    """Current weights as one {name: numpy array} dict per unit layer."""
    return [{name: var.numpy() for name, var in layer.params().items()} for layer in unit_layers(model)]


def set_params(model: keras.Model, params: list[dict]) -> None:
    for layer, values in zip(unit_layers(model), params):
        for name, var in layer.params().items():
            var.assign(values[name])


def forward(model: keras.Model, params: list, x):
    """The model's output computed with `params` instead of its own weights (pure).

    x is [..., batch, n] (static) or [..., batch, T, n] (recurrent); the output has x's dtype
    whatever the model computes in (a recurrent model: float64).
    """
    dtype = x.dtype
    for layer, layer_params in zip(unit_layers(model), params):
        x = layer.forward(x, **layer_params)
    return ops.cast(x, dtype)
