"""Reading what a trained model computes, and snapping it to exact arithmetic (`nalu inspect`).

A unit that has learned a*b holds weights at -1, 0 and 1 (gates at 0 and 1) that spell
out the formula. `inspect` reads them as an expression over input slices and compares
it with the task's true formula as algebra, not as text; `snap` moves every weight to its
exact value, keeps the result only if the interpolation validation error does not grow,
and measures the error 10^6 times beyond the extrapolation range, where only exact
arithmetic survives.

Each unit says how it reads (`paths`, `gate`) and how it snaps (`snap`); this module
composes the layers and does the bookkeeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nalu_cli import ops, tasks
from nalu_cli.errors import NaluError
from nalu_cli.evaluation import finite_or_none, mse, relative_error
from nalu_cli.rundir import (
    KERAS_FILE,
    ModelSource,
    check_output,
    discard_backup,
    prepare_output,
    resolve_source,
    restore_backup,
)

# Weights further than this from their exact value are listed as deviating.
DEVIATION_TOLERANCE = 1e-4
# A snapped model is checked on the extrapolation range scaled by this factor.
FAR_FACTOR = 1e6
FAR_SAMPLES = 10_000
# Relative error a float32 model reaches by rounding alone (sums of ~100 terms, one product).
FLOAT_PRECISION = 1e-5
# Snapping may raise the interpolation MSE by float noise only: relative slack, plus the
# MSE of rounding every prediction by ~10 float32 ulps (absolute, scaled by mean(y^2)).
MSE_RELATIVE_SLACK = 1e-6
MSE_ROUNDING_NOISE = (10 * float(np.finfo(np.float32).eps)) ** 2


# -- loading -------------------------------------------------------------------------------------


@dataclass
class _Loaded:
    source: ModelSource
    spec: tasks.TaskSpec
    model: Any  # keras.Model
    layers: list  # its ArithmeticUnit layers
    params: list[dict]  # their weights, numpy


def _load(path: Path) -> _Loaded:
    from nalu_cli.model import get_params, unit_layers

    source = resolve_source(Path(path))
    spec = tasks.TaskSpec.from_dict(source.meta["task"])
    model = _keras_model(source, spec)
    return _Loaded(source, spec, model, unit_layers(model), get_params(model))


def _keras_model(source: ModelSource, spec: tasks.TaskSpec):
    """A run's model.keras; for a bare SavedModel, its architecture rebuilt with the saved variables."""
    from nalu_cli.export import load_keras_model

    if source.run_dir is not None and (source.run_dir / KERAS_FILE).is_file():
        return load_keras_model(source.run_dir / KERAS_FILE)
    return _model_from_saved_model(source, spec)


def _model_from_saved_model(source: ModelSource, spec: tasks.TaskSpec):
    import tensorflow as tf

    from nalu_cli.config import from_dict
    from nalu_cli.model import build_model

    try:
        model_config = from_dict({"model": source.meta["model"]}).model
    except (KeyError, TypeError):
        raise NaluError(f"SavedModel {source.saved_model} carries no model config in its task spec") from None
    try:
        loaded = tf.saved_model.load(str(source.saved_model))
    except (OSError, ValueError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NaluError(f"cannot load SavedModel {source.saved_model}: {first_line}") from None
    saved = {_weight_key(variable.name): variable for variable in loaded.variables}
    model = build_model(model_config, spec.input_size, seed=0)
    for weight in model.weights:
        key = _weight_key(weight.path)
        variable = saved.get(key)
        if variable is None or tuple(variable.shape) != tuple(weight.shape):
            raise NaluError(
                f"SavedModel {source.saved_model} does not hold the weights of a {model_config.name} model "
                f"({key} is missing or has another shape)"
            )
        weight.assign(variable.numpy())
    return model


def _weight_key(name: str) -> str:
    """'nau_nmu_model/layer_1/w:0' (SavedModel) and 'nau_nmu_model/layer_1/w' (Keras) -> 'layer_1/w'."""
    return "/".join(name.split(":")[0].split("/")[-2:])


def _unit_name(layer) -> str:
    from nalu_cli.units import UNIT_LAYERS

    return next((name for name, cls in UNIT_LAYERS.items() if type(layer) is cls), type(layer).__name__)


def _snapped(layer, params: dict) -> tuple[dict | None, str | None]:
    """(snapped params, None), or (None, why the unit cannot snap)."""
    try:
        snapped = layer.snap(**params)
    except NotImplementedError as reason:
        return None, str(reason)
    return {name: np.asarray(value, dtype=np.float32) for name, value in snapped.items()}, None


def _predict(loaded: _Loaded, params: list[dict], x: np.ndarray) -> np.ndarray:
    from nalu_cli.model import forward

    return np.asarray(forward(loaded.model, params, x))


# -- the learned expression, as text and as algebra ----------------------------------------------
#
# A term's `canon` is what it computes, in a form where equal maths compare equal:
#   ("linear", ((i, c), ...))              sum_i c x_i, nonzero c, sorted by i
#   ("product", sign, ((form, p), ...))    sign * prod form^p over linear forms, merged, sorted
#   ("opaque", text)                       anything else (equal to no task formula)


@dataclass(frozen=True)
class _Term:
    text: str
    canon: tuple
    compound: bool = False  # the text needs parentheses inside a product or a power
    index: int | None = None  # set for the input x[i] itself
    negation_of: str | None = None  # text is "-" + this single piece: a sum can fold the sign in


def _linear(coefficients: dict) -> tuple:
    return ("linear", tuple(sorted((i, c) for i, c in coefficients.items() if c != 0)))


def _product(sign: float, factors: list) -> tuple:
    merged: dict = {}
    for form, power in factors:
        if not form:  # the zero form
            if power > 0:
                return _linear({})
            if power < 0:
                return ("opaque", "division by zero")
            continue
        if form[0][1] < 0 and float(power).is_integer():  # -A and A are one factor: move the sign out
            form = tuple((i, -c) for i, c in form)
            sign *= (-1) ** int(power)
        merged[form] = merged.get(form, 0.0) + power
    factors = tuple(sorted((form, power) for form, power in merged.items() if power != 0))
    if len(factors) == 1 and factors[0][1] == 1:
        return _linear({i: sign * c for i, c in factors[0][0]})
    return ("product", sign, factors)


def true_canon(spec: tasks.TaskSpec) -> tuple:
    """The task's formula in the same algebraic form as a reading."""
    (a0, a1), (b0, b1) = spec.subsets
    a = {i: 1.0 for i in range(a0, a1)}
    b = {i: 1.0 for i in range(b0, b1)}
    op = ops.get(spec.op)
    if op.sum_sign is not None:
        total = dict(a)
        for i, c in b.items():
            total[i] = total.get(i, 0.0) + op.sum_sign * c
        return _linear(total)
    factors = [(form, power) for form, power in zip((_linear(a)[1], _linear(b)[1]), op.powers) if power != 0]
    return _product(1.0, factors)


def _input_terms(input_size: int) -> list[_Term]:
    return [_Term(f"x[{i}]", ("linear", ((i, 1.0),)), index=i) for i in range(input_size)]


def _runs(weighted: list[tuple[float, _Term]]) -> list[tuple[float, str, bool, int | None, int | None]]:
    """(weight, text, compound, first, last) pieces: consecutive inputs x[first..last] with one weight
    become one slice; other terms with equal text merge (their weights add)."""
    pieces: list[list] = []  # [weight, text, compound, first index, last index]
    for weight, term in weighted:
        last = pieces[-1] if pieces else None
        if (
            term.index is not None
            and last is not None
            and last[3] is not None
            and last[0] == weight
            and last[4] == term.index - 1
        ):
            last[4] = term.index
            continue
        same = next((p for p in pieces if p[3] is None and p[1] == term.text), None)
        if same is not None:
            same[0] += weight
            continue
        pieces.append([weight, term.text, term.compound, term.index, term.index])
    return [(weight, text, compound, first, last) for weight, text, compound, first, last in pieces]


def _slice_text(kind: str, text: str, first: int | None, last: int | None) -> tuple[str, bool]:
    if first is None or first == last:
        return text, False
    return f"{'sum' if kind == 'sum' else 'prod'}(x[{first}:{last + 1}])", False


def _number(value: float) -> str:
    return f"{value:g}"


def _sum_term(weighted: list[tuple[float, _Term]]) -> _Term:
    used = [(w, t) for w, t in weighted if w != 0]
    if all(t.canon[0] == "linear" for _, t in used):
        coefficients: dict = {}
        for weight, term in used:
            for i, c in term.canon[1]:
                coefficients[i] = coefficients.get(i, 0.0) + weight * c
        canon = _linear(coefficients)
    else:
        canon = None
    # w * (-t) reads better as -w * t inside a sum.
    unfolded = [(-w, _Term(t.negation_of, t.canon)) if t.negation_of else (w, t) for w, t in used]
    parts = []
    for weight, text, compound, first, last in _runs(unfolded):
        if weight == 0:
            continue
        if first is not None:
            text, compound = _slice_text("sum", text, first, last)
        magnitude = abs(weight)
        body = f"({text})" if compound and (weight < 0 or magnitude != 1) else text
        if magnitude != 1:
            body = f"{_number(magnitude)}*{body}"
        if not parts:
            parts.append(body if weight > 0 else f"-{body}")
        else:
            parts.append(f"{'+' if weight > 0 else '-'} {body}")
    text = " ".join(parts) or "0"
    compound = len(parts) > 1 or text.startswith("-") or (len(parts) == 1 and "*" in parts[0])
    negation_of = text[1:] if len(parts) == 1 and text.startswith("-") and "*" not in text else None
    return _Term(text, canon if canon is not None else ("opaque", text), compound, negation_of=negation_of)


def _product_term(weighted: list[tuple[float, _Term]]) -> _Term:
    used = [(p, t) for p, t in weighted if p != 0]
    sign, factors, opaque = 1.0, [], False
    for power, term in used:
        kind = term.canon[0]
        if kind == "linear":
            factors.append((term.canon[1], power))
        elif kind == "product" and (term.canon[1] > 0 or float(power).is_integer()):
            sign *= term.canon[1] ** power
            factors.extend((form, inner * power) for form, inner in term.canon[2])
        else:
            opaque = True
    numerator, denominator = [], []
    for power, text, compound, first, last in _runs(used):
        if power == 0:
            continue
        if first is not None:
            text, compound = _slice_text("product", text, first, last)
        (numerator if power > 0 else denominator).append(_power_text(text, compound, abs(power)))
    text = " * ".join(numerator) or "1"
    if denominator:
        below = denominator[0] if len(denominator) == 1 else f"({' * '.join(denominator)})"
        text = f"{text} / {below}"
    compound = len(numerator) + len(denominator) > 1
    return _Term(text, ("opaque", text) if opaque else _product(sign, factors), compound)


def _power_text(text: str, compound: bool, power: float) -> str:
    if power == 0.5:
        return f"sqrt({text})"
    base = f"({text})" if compound else text
    return base if power == 1 else f"{base}^{_number(power)}"


def _linear_term(form: tuple, input_size: int) -> _Term:
    inputs = _input_terms(input_size)
    return _sum_term([(c, inputs[i]) for i, c in form])


def canon_text(canon: tuple, input_size: int) -> str | None:
    """The simplest text of what a reading computes (merged slices and factors); None if opaque."""
    if canon[0] == "linear":
        return f"y = {_linear_term(canon[1], input_size).text}"
    if canon[0] == "product":
        _, sign, factors = canon
        text = _product_term([(power, _linear_term(form, input_size)) for form, power in factors]).text
        return f"y = {text}" if sign > 0 else f"y = -({text})"
    return None


def _rounded_paths(paths: list) -> list:
    """Exact values for a unit that cannot snap: integers for sums, halves for powers."""
    return [
        (kind, np.clip(np.round(w), -1, 1) if kind == "sum" else np.round(2 * w) / 2)
        for kind, w in ((kind, np.asarray(w)) for kind, w in paths)
    ]


def _read(loaded: _Loaded, snapped: list) -> dict:
    """The expression the model computes once its weights sit at their exact values."""
    needs_data = any(len(layer.paths(**p)) == 2 for layer, p in zip(loaded.layers, loaded.params))
    x = tasks.validation_set(loaded.spec)[0] if needs_data else None
    terms = _input_terms(loaded.spec.input_size)
    layer_reports = []
    for layer, params, exact in zip(loaded.layers, loaded.params, snapped):
        raw_paths = layer.paths(**params)
        if not raw_paths:
            return {
                "expression": None,
                "canon": ("opaque", ""),
                "layers": layer_reports,
                "unreadable": f"{layer.name} ({_unit_name(layer)}) has no exact reading",
            }
        paths = (
            [(kind, np.asarray(w)) for kind, w in layer.paths(**exact)]
            if exact is not None
            else _rounded_paths(raw_paths)
        )
        gates = np.asarray(layer.gate(x, **params)).mean(axis=0) if len(paths) == 2 else None
        outputs, next_terms = [], []
        for j in range(layer.units):
            # gate > 0.5 picks the first path, as rounding the gate does (0.5 rounds to 0).
            kind, weights = paths[0] if gates is None or gates[j] > 0.5 else paths[1]
            weighted = list(zip((float(w) for w in weights[:, j]), terms))
            term = _sum_term(weighted) if kind == "sum" else _product_term(weighted)
            next_terms.append(term)
            outputs.append(
                {"path": kind, "gate": None if gates is None else float(gates[j]), "expression": term.text}
            )
        layer_reports.append({"name": layer.name, "unit": _unit_name(layer), "outputs": outputs})
        terms = next_terms
        if x is not None:
            x = np.asarray(layer.forward(x, **params))
    (output,) = terms
    return {"expression": f"y = {output.text}", "canon": output.canon, "layers": layer_reports, "unreadable": None}


# -- deviations ------------------------------------------------------------------------------------


def _deviations(layer, params: dict, exact: dict | None, gates, tolerance: float) -> list[dict]:
    raw = [np.asarray(w, dtype=np.float64) for w in layer.discrete_weights(**params)]
    if exact is not None:
        targets = [np.asarray(w, dtype=np.float64) for w in layer.discrete_weights(**exact)]
    else:
        targets = [np.clip(np.round(w), -1, 1) for w in raw]
    rows = []
    for name, values, target in zip(layer.discrete_weight_names, raw, targets):
        values, target = np.atleast_1d(np.squeeze(values)), np.atleast_1d(np.squeeze(target))
        deviation = np.abs(values - target)
        for index in zip(*np.nonzero(~(deviation <= tolerance))):  # NaN deviates too
            rows.append(
                {
                    "layer": layer.name,
                    "weight": f"{name}[{', '.join(str(int(i)) for i in index)}]",
                    "value": finite_or_none(float(values[index])),
                    "exact": finite_or_none(float(target[index]) + 0.0),  # + 0.0: no "-0"
                    "deviation": finite_or_none(float(deviation[index])),
                }
            )
    # An input-dependent gate (NALU) is no weight: report its mean on the validation set.
    if gates is not None and "gate" not in layer.discrete_weight_names:
        for j, gate in enumerate(gates):
            if not abs(gate - round(gate)) <= tolerance:
                rows.append(
                    {
                        "layer": layer.name,
                        "weight": f"gate[{j}] (mean on the validation set)",
                        "value": float(gate),
                        "exact": float(round(gate)),
                        "deviation": float(abs(gate - round(gate))),
                    }
                )
    return rows


# -- the two commands ------------------------------------------------------------------------------


def inspect(path: Path, tolerance: float = DEVIATION_TOLERANCE) -> dict:
    """The learned expression, whether it is the task's formula, and the weights off their exact values."""
    if not tolerance >= 0:
        raise NaluError(f"--tolerance must be a non-negative number, got {tolerance}")
    loaded = _load(path)
    return _inspect(loaded, path, tolerance)


def _inspect(loaded: _Loaded, path: Path, tolerance: float) -> dict:
    snapped, problems = zip(*(_snapped(layer, p) for layer, p in zip(loaded.layers, loaded.params)))
    reading = _read(loaded, list(snapped))
    gates = {
        report["name"]: [output["gate"] for output in report["outputs"]]
        for report in reading["layers"]
        if report["outputs"][0]["gate"] is not None
    }
    deviating = []
    for layer, params, exact in zip(loaded.layers, loaded.params, snapped):
        deviating.extend(_deviations(layer, params, exact, gates.get(layer.name), tolerance))
    deviating.sort(key=lambda row: -math.inf if row["deviation"] is None else -row["deviation"])  # NaN first
    sparsity = max((float(np.asarray(l.sparsity_error(**p))) for l, p in zip(loaded.layers, loaded.params)), default=0.0)
    cannot_snap = next(
        (f"{layer.name} ({_unit_name(layer)}): {problem}" for layer, problem in zip(loaded.layers, problems) if problem),
        None,
    )
    spec = loaded.spec
    return {
        "path": str(path),
        "model": {"units": [_unit_name(layer) for layer in loaded.layers], "hidden_size": loaded.layers[0].units},
        "task": {**spec.to_dict(), "formula": spec.formula()},
        "expression": reading["expression"],
        "simplified": canon_text(reading["canon"], spec.input_size) if reading["unreadable"] is None else None,
        "true_expression": f"y = {spec.formula()}",
        "matches": reading["unreadable"] is None and reading["canon"] == true_canon(spec),
        "unreadable": reading["unreadable"],
        "layers": reading["layers"],
        "sparsity_error": finite_or_none(sparsity),
        "tolerance": tolerance,
        "deviating_weights": deviating,
        "weights_total": int(
            sum(np.size(w) for layer, p in zip(loaded.layers, loaded.params) for w in layer.discrete_weights(**p))
        ),
        "snappable": cannot_snap is None,
        "cannot_snap": cannot_snap,
    }


def snap(path: Path, out: Path, overwrite: bool = False) -> dict:
    """Round every weight and gate to its exact value; save the result (SavedModel + model.keras) in `out`
    only if the interpolation validation error does not grow.

    The report's `far` block gives the relative error sqrt(MSE / mean(y^2)) before and after,
    on the extrapolation range scaled by FAR_FACTOR: a correctly snapped model is exact there
    up to float precision.
    """
    from nalu_cli.export import write_model
    from nalu_cli.model import set_params

    out = Path(out)
    check_output(out, overwrite, kind="SavedModel")  # before any work, so a refusal is immediate
    loaded = _load(path)
    snapped = []
    for layer, params in zip(loaded.layers, loaded.params):
        exact, problem = _snapped(layer, params)
        if problem:
            raise NaluError(f"cannot snap {layer.name} ({_unit_name(layer)}): {problem}")
        snapped.append(exact)
    reading = _read(loaded, snapped)

    x, y = tasks.validation_set(loaded.spec)
    before = mse(_predict(loaded, loaded.params, x), y)
    after = mse(_predict(loaded, snapped, x), y)
    noise = MSE_ROUNDING_NOISE * float(np.mean(np.square(y, dtype=np.float64)))
    if math.isfinite(before):
        accepted = after <= before * (1 + MSE_RELATIVE_SLACK) + noise
    else:
        accepted = math.isfinite(after)
    far_range, far_x, far_y = _far_sample(loaded.spec)
    far_before = relative_error(mse(_predict(loaded, loaded.params, far_x), far_y), far_y)
    far_after = relative_error(mse(_predict(loaded, snapped, far_x), far_y), far_y)
    report = {
        "path": str(path),
        "out": str(out),
        "expression": reading["expression"],
        "matches": reading["unreadable"] is None and reading["canon"] == true_canon(loaded.spec),
        "interpolation_mse_before": finite_or_none(before),
        "interpolation_mse_after": finite_or_none(after),
        "accepted": bool(accepted),
        "saved": False,
        "far": {
            "factor": FAR_FACTOR,
            "range": far_range,
            "relative_error_before": far_before,
            "relative_error_after": far_after,
            "float_precision": FLOAT_PRECISION,
            "exact": far_after is not None and far_after <= FLOAT_PRECISION,
        },
    }
    if not accepted:
        return report

    set_params(loaded.model, snapped)
    meta = {**loaded.source.meta, "snapped_from": str(path)}
    backup = prepare_output(out, overwrite, kind="SavedModel")
    try:
        write_model(loaded.model, meta, out, out / KERAS_FILE)
    except BaseException:
        restore_backup(out, backup)
        raise
    discard_backup(backup)
    report["saved"] = True
    report["files"] = {"savedmodel": str(out), "keras": str(out / KERAS_FILE)}
    return report


def _far_sample(spec: tasks.TaskSpec):
    """Inputs FAR_FACTOR times beyond the extrapolation range; float64 targets from the float32 inputs."""
    intervals = [[lo * FAR_FACTOR, hi * FAR_FACTOR] for lo, hi in spec.extrapolation_range]
    rng = tasks.fork(spec.seed, tasks.TEST_STREAM)
    x = tasks.uniform_union_numpy(rng, intervals, (FAR_SAMPLES, spec.input_size), dtype=np.float32)
    return intervals, x, tasks.targets_numpy(spec, x)
