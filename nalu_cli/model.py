"""Models: two arithmetic-unit layers, input_size -> hidden_size -> 1."""

from __future__ import annotations

import keras

from nalu_cli.config import ModelConfig
from nalu_cli.units import UNIT_LAYERS, ArithmeticUnit


def build_model(model_config: ModelConfig, input_size: int, seed: int) -> keras.Model:
    """A freshly initialised model; the same seed gives the same initial weights."""
    keras.utils.set_random_seed(seed)
    first, second = (UNIT_LAYERS[unit] for unit in model_config.layer_units)
    return keras.Sequential(
        [
            keras.Input((input_size,), name="x"),
            first(model_config.hidden_size, name="layer_1"),
            second(1, name="layer_2"),
        ],
        name=f"{model_config.name.replace('-', '_')}_model",
    )


def unit_layers(model: keras.Model) -> list[ArithmeticUnit]:
    return [layer for layer in model.layers if isinstance(layer, ArithmeticUnit)]


def get_params(model: keras.Model) -> list[dict]:
    """Current weights as one {name: numpy array} dict per unit layer."""
    return [{name: var.numpy() for name, var in layer.params().items()} for layer in unit_layers(model)]


def set_params(model: keras.Model, params: list[dict]) -> None:
    for layer, values in zip(unit_layers(model), params):
        for name, var in layer.params().items():
            var.assign(values[name])


def forward(model: keras.Model, params: list, x):
    """The model's output computed with `params` instead of its own weights (pure)."""
    for layer, layer_params in zip(unit_layers(model), params):
        x = layer.forward(x, **layer_params)
    return x
