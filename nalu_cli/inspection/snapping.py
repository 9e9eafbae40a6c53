"""`nalu inspect --snap`: every weight at its exact value, kept only if the interpolation error does not grow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nalu_cli import tasks
from nalu_cli.errors import NaluError
from nalu_cli.evaluation import finite_or_none, mse, relative_error
from nalu_cli.inspection.algebra import true_canon
from nalu_cli.inspection.loading import Loaded, load, unit_name
from nalu_cli.inspection.reading import read, snap_layer
from nalu_cli.outputs import check_apart, check_output, replacing
from nalu_cli.rundir import KERAS_FILE

# A snapped model is checked on the extrapolation range scaled by this factor.
FAR_FACTOR = 1e6
FAR_SAMPLES = 10_000
# A snapped recurrent model is checked on sequences this long (10x the default extrapolation
# length), on the extrapolation range: an exact accumulator in float64 stays exact there.
FAR_LENGTH = 10_000
FAR_SEQUENCES = 128
# Relative error a float32 model reaches by rounding alone (sums of ~100 terms, one product).
FLOAT_PRECISION = 1e-5
# Snapping may raise the interpolation MSE by float noise only: relative slack, plus the
# MSE of rounding every prediction by ~10 float32 ulps (absolute, scaled by mean(y^2)).
MSE_RELATIVE_SLACK = 1e-6
MSE_ROUNDING_NOISE = (10 * float(np.finfo(np.float32).eps)) ** 2


def snap(path: Path, out: Path, overwrite: bool = False) -> dict:
    """Round every weight and gate to its exact value; save the result (SavedModel + model.keras) in `out`
    only if the interpolation validation error does not grow.

    The report's `far` block gives the relative error sqrt(MSE / mean(y^2)) before and after,
    on the extrapolation range scaled by FAR_FACTOR (a recurrent model: on FAR_SEQUENCES
    sequences of FAR_LENGTH steps over the extrapolation range): a correctly snapped model is
    exact there up to float precision.
    """
    out = Path(out)
    check_output(out, overwrite, kind="SavedModel")  # before any work, so a refusal is immediate
    check_apart(path, out)
    loaded = load(path)
    snapped = snapped_params(loaded)
    report = {"path": str(path), "out": str(out), **judge(loaded, snapped), "saved": False}
    if report["accepted"]:
        save_snapped(loaded, snapped, path, out, overwrite)
        report["saved"] = True
        report["files"] = {"savedmodel": str(out), "keras": str(out / KERAS_FILE)}
    return report


def snapped_params(loaded: Loaded) -> list[dict]:
    """Every layer's weights at their exact values; a NaluError naming a layer that has none."""
    try:
        return exact_params(loaded.layers, loaded.params)
    except ValueError as error:
        raise NaluError(str(error)) from None


def exact_params(layers: list, params: list[dict]) -> list[dict]:
    """Each unit layer's weights at their exact values (its `snap`); ValueError naming a layer that has none."""
    snapped = []
    for layer, layer_params in zip(layers, params):
        exact, problem = snap_layer(layer, layer_params)
        if problem:
            raise ValueError(f"cannot snap {layer.name} ({unit_name(layer)}): {problem}")
        snapped.append(exact)
    return snapped


def snap_units(model) -> list[str]:
    """Snap every nalu unit of a Keras model in place: each unit's weights to their exact values
    (`nalu inspect --snap`'s rounding, without its check). Returns the snapped layers' names.

    Any model: units at any depth, a cell inside `keras.layers.RNN` included; other layers are
    left as they are. Raises ValueError naming a unit that has no exact form (NALU, ReLU, LSTM),
    before any weight changes.
    """
    from nalu_cli.model import get_params, set_params, unit_layers

    layers = unit_layers(model)
    set_params(model, exact_params(layers, get_params(model)))
    return [layer.name for layer in layers]


def judge(loaded: Loaded, snapped: list[dict]) -> dict:
    """The snapped weights against the loaded ones: their reading, interpolation MSE (which decides
    `accepted`: not worse beyond float noise) and relative error far outside the training range."""
    reading = read(loaded, snapped)
    x, y = tasks.validation_set(loaded.spec)
    before = mse(_predict(loaded, loaded.params, x), y)
    after = mse(_predict(loaded, snapped, x), y)
    noise = MSE_ROUNDING_NOISE * float(np.mean(np.square(y, dtype=np.float64)))
    if math.isfinite(before):
        accepted = after <= before * (1 + MSE_RELATIVE_SLACK) + noise
    else:
        accepted = math.isfinite(after)
    recurrent = loaded.spec.recurrent
    far_range, far_x, far_y = _far_sample(loaded.spec)
    far_before = relative_error(mse(_predict(loaded, loaded.params, far_x), far_y), far_y)
    far_after = relative_error(mse(_predict(loaded, snapped, far_x), far_y), far_y)
    return {
        "expression": reading["expression"],
        "matches": reading["unreadable"] is None and reading["canon"] == true_canon(loaded.spec),
        "interpolation_mse_before": finite_or_none(before),
        "interpolation_mse_after": finite_or_none(after),
        "accepted": bool(accepted),
        "far": {
            "factor": 1.0 if recurrent else FAR_FACTOR,  # the extrapolation range scaled by this
            "length": FAR_LENGTH if recurrent else None,  # steps of a sequence; None: static inputs
            "samples": len(far_x),
            "range": far_range,
            "relative_error_before": far_before,
            "relative_error_after": far_after,
            "float_precision": FLOAT_PRECISION,
            "exact": far_after is not None and far_after <= FLOAT_PRECISION,
        },
    }


def save_snapped(loaded: Loaded, snapped: list[dict], path: Path, out: Path, overwrite: bool) -> None:
    """The snapped model as a SavedModel in `out` with model.keras inside; an old `out` comes back on failure."""
    from nalu_cli.export import write_model
    from nalu_cli.model import set_params

    set_params(loaded.model, snapped)
    meta = {**loaded.source.meta, "snapped_from": str(path)}
    with replacing(out, overwrite, kind="SavedModel"):
        write_model(loaded.model, meta, out, out / KERAS_FILE)


def _far_sample(spec: tasks.TaskSpec):
    """Inputs FAR_FACTOR times beyond the extrapolation range (recurrent: FAR_SEQUENCES sequences of
    FAR_LENGTH steps on the extrapolation range); float64 targets from the float32 inputs."""
    rng = tasks.fork(spec.seed, tasks.TEST_STREAM)
    if spec.recurrent:
        intervals = [[lo, hi] for lo, hi in spec.extrapolation_range]
        x = tasks.uniform_union_numpy(rng, intervals, (FAR_SEQUENCES, *spec.shape(FAR_LENGTH)), dtype=np.float32)
        block = 16  # sequences whose float64 copy is summed at once
        y = np.concatenate([tasks.targets_numpy(spec, x[i : i + block]) for i in range(0, len(x), block)])
        return intervals, x, y
    intervals = [[lo * FAR_FACTOR, hi * FAR_FACTOR] for lo, hi in spec.extrapolation_range]
    x = tasks.uniform_union_numpy(rng, intervals, (FAR_SAMPLES, spec.input_size), dtype=np.float32)
    return intervals, x, tasks.targets_numpy(spec, x)


def _predict(loaded: Loaded, params: list[dict], x: np.ndarray) -> np.ndarray:
    from nalu_cli.model import forward

    if not loaded.spec.recurrent:
        return np.asarray(forward(loaded.model, params, x))
    import tensorflow as tf

    # A compiled graph: eagerly, a loop over 10,000 steps runs each step's ops from Python (minutes).
    graph = tf.function(lambda x: forward(loaded.model, params, x))
    return np.asarray(graph(tf.constant(x)))
