"""A run directory or a nalu SavedModel as a Keras model, its unit layers and their weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nalu_cli import tasks
from nalu_cli.errors import NaluError
from nalu_cli.rundir import KERAS_FILE, ModelSource, resolve_source, rewrite_hint


@dataclass
class Loaded:
    """A model to inspect: where it came from, its task, and its unit layers with their weights."""

    source: ModelSource
    spec: tasks.TaskSpec
    model: Any  # keras.Model
    layers: list  # its ArithmeticUnit layers
    params: list[dict]  # their weights, numpy


def load(path: Path) -> Loaded:
    from nalu_cli.model import get_params, unit_layers

    source = resolve_source(Path(path))
    spec = tasks.TaskSpec.from_dict(source.meta["task"])
    model = _keras_model(source, spec)
    return Loaded(source, spec, model, unit_layers(model), get_params(model))


def _keras_model(source: ModelSource, spec: tasks.TaskSpec):
    """A run's model.keras; for a bare SavedModel, its architecture rebuilt with the saved variables."""
    from nalu_cli.export import load_keras_model

    if source.run_dir is not None and (source.run_dir / KERAS_FILE).is_file():
        return load_keras_model(source.run_dir / KERAS_FILE, rewrite_hint(source.run_dir))
    return _model_from_saved_model(source, spec)


def _model_from_saved_model(source: ModelSource, spec: tasks.TaskSpec):
    import tensorflow as tf

    from nalu_cli.config import from_dict
    from nalu_cli.model import build_model, unit_layers
    from nalu_cli.units.base import REGULARIZER_STRENGTH

    try:
        # The task's kind only: a cell-only unit (lstm) is valid on the recurrent task alone.
        model_config = from_dict({"model": source.meta["model"], "task": {"kind": spec.kind}}).model
    except (KeyError, TypeError):
        raise NaluError(f"SavedModel {source.saved_model} carries no model config in its task spec") from None
    try:
        loaded = tf.saved_model.load(str(source.saved_model))
    except (OSError, ValueError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NaluError(f"cannot load SavedModel {source.saved_model}: {first_line}") from None
    model = build_model(model_config, spec.input_size, seed=0, kind=spec.kind)
    roots = {layer.name for layer in unit_layers(model)}
    saved: dict = {}
    for variable in loaded.variables:
        saved.setdefault(_weight_key(variable.name, roots), []).append(variable)
    for weight in model.weights:
        key = _weight_key(weight.path, roots)
        variables = saved.get(key, [])
        if not variables and weight.name == REGULARIZER_STRENGTH:
            continue  # a SavedModel written before units had one: it stays at 0
        if len(variables) != 1 or tuple(variables[0].shape) != tuple(weight.shape):
            raise NaluError(
                f"SavedModel {source.saved_model} does not hold the weights of a {model_config.name} model "
                f"({key} is missing, ambiguous or has another shape)"
            )
        (variable,) = variables
        weight.assign(variable.numpy())
    return model


def _weight_key(name: str, roots: set[str]) -> str:
    """A variable's path from its unit layer (`roots`: the unit layers' names) down.

    What comes before the unit layer depends on how the model was made: a SavedModel of a built
    model says 'nau_nmu_model/layer_1/w:0' and 'nau_nmu_model/recurrence/layer_1/unit/w:0', one
    of a model loaded from model.keras 'layer_1/w:0' and 'layer_1/unit/w:0'. All key as
    'layer_1/w', 'layer_1/unit/w', 'layer_1/initial_state': a cell's nested variables keep their
    nesting, so the inner unit's weights and the cell's own never collide.
    """
    parts = name.split(":")[0].split("/")
    first = next((i for i, part in enumerate(parts) if part in roots), max(0, len(parts) - 2))
    return "/".join(parts[first:])


def unit_name(layer) -> str:
    """The config name of a unit layer ("nau"); its class name if it is not registered."""
    from nalu_cli.units import UNIT_LAYERS, ArithmeticCell

    if isinstance(layer, ArithmeticCell):
        return layer.unit_name  # the unit inside the cell
    return next((name for name, cls in UNIT_LAYERS.items() if type(layer) is cls), type(layer).__name__)
