"""What a model's weights spell: each unit's exact weights, the expression they compute, the weights off them.

Each unit says how it reads (`paths`, `gate`) and how it snaps (`snap`); this module
composes the layers.

A recurrent model's first layer is a cell, h_t = unit([x_t, h_{t-1}]) from a learned h_0: its
paths read x_t (the first n rows) and h_{t-1} (the last `units` rows). Each output's step is read
as `h_t[j] = <expression over x_t and h_{t-1}>`. When the cell is an exact accumulator (every
output on its sum path, h_{t-1} -> h_t the identity, h_0 = 0) the last state has a closed form,
h_T[j] = sum_t <expression over x_t>, and the output layer reads those; otherwise the model has
no closed form and the reading says why.
"""

from __future__ import annotations

import numpy as np

from nalu_cli import tasks
from nalu_cli.evaluation import finite_or_none
from nalu_cli.inspection.algebra import Term, accumulated, input_terms, product_term, sum_term
from nalu_cli.inspection.loading import Loaded, unit_name


def is_cell(layer) -> bool:
    """A recurrent cell that wraps a unit (ArithmeticCell): read step by step, its initial state too."""
    from nalu_cli.units import ArithmeticCell

    return isinstance(layer, ArithmeticCell)


def snap_layer(layer, params: dict) -> tuple[dict | None, str | None]:
    """(the layer's params at their exact values, in their own dtypes, None), or (None, why the unit cannot snap)."""
    try:
        snapped = layer.snap(**params)
    except NotImplementedError as reason:
        return None, str(reason)
    dtype = lambda name: np.asarray(params[name]).dtype if name in params else np.float32  # noqa: E731
    return {name: np.asarray(value, dtype=dtype(name)) for name, value in snapped.items()}, None


def _rounded_paths(paths: list) -> list:
    """Exact values for a unit that cannot snap: integers for sums, halves for powers."""
    return [
        (kind, np.clip(np.round(w), -1, 1) if kind == "sum" else np.round(2 * w) / 2)
        for kind, w in ((kind, np.asarray(w)) for kind, w in paths)
    ]


def read(loaded: Loaded, snapped: list) -> dict:
    """The expression the model computes once its weights sit at their exact values."""
    needs_data = any(len(layer.paths(**p)) == 2 for layer, p in zip(loaded.layers, loaded.params))
    x = tasks.validation_set(loaded.spec)[0] if needs_data else None
    terms = input_terms(loaded.spec.input_size)
    layer_reports, unreadable = [], None
    for layer, params, exact in zip(loaded.layers, loaded.params, snapped):
        raw_paths = layer.paths(**params)
        if not raw_paths:
            return {
                "expression": None,
                "canon": ("opaque", ""),
                "layers": layer_reports,
                "unreadable": f"{layer.name} ({unit_name(layer)}) has no exact reading",
            }
        paths = (
            [(kind, np.asarray(w)) for kind, w in layer.paths(**exact)]
            if exact is not None
            else _rounded_paths(raw_paths)
        )
        if is_cell(layer):
            gates = _cell_gates(layer, params, x) if len(paths) == 2 else None
            initial = exact["initial_state"] if exact is not None else np.round(params["initial_state"])
            report, terms, why = _read_cell(layer, paths, gates, np.asarray(initial), loaded.spec.input_size)
            layer_reports.append(report)
            unreadable = unreadable or why
        else:
            gates = np.asarray(layer.gate(x, **params)).mean(axis=0) if len(paths) == 2 else None
            outputs, next_terms = [], []
            for j in range(layer.units):
                kind, weights = _chosen_path(paths, gates, j)
                weighted = list(zip((float(w) for w in weights[:, j]), terms))
                term = sum_term(weighted) if kind == "sum" else product_term(weighted)
                next_terms.append(term)
                outputs.append(
                    {"path": kind, "gate": None if gates is None else float(gates[j]), "expression": term.text}
                )
            layer_reports.append({"name": layer.name, "unit": unit_name(layer), "outputs": outputs})
            terms = next_terms
        if x is not None:
            x = np.asarray(layer.forward(x, **params))
    (output,) = terms
    if unreadable is not None:
        return {"expression": None, "canon": ("opaque", ""), "layers": layer_reports, "unreadable": unreadable}
    return {"expression": f"y = {output.text}", "canon": output.canon, "layers": layer_reports, "unreadable": None}


def _chosen_path(paths: list, gates, j: int) -> tuple:
    # gate > 0.5 picks the first path, as rounding the gate does (0.5 rounds to 0).
    return paths[0] if gates is None or gates[j] > 0.5 else paths[1]


def _read_cell(layer, paths: list, gates, initial: np.ndarray, input_size: int) -> tuple[dict, list, str | None]:
    """(the cell's report, the terms its last state reads as, None or why it has no closed form)."""
    units = layer.units
    step_terms = input_terms(input_size, "x_t") + input_terms(units, "h_{t-1}")
    identity = np.eye(units)
    outputs, closed, problems = [], [], []
    for j in range(units):
        kind, weights = _chosen_path(paths, gates, j)
        column = [float(w) for w in weights[:, j]]
        step = (sum_term if kind == "sum" else product_term)(list(zip(column, step_terms)))
        start = float(initial[j]) + 0.0  # + 0.0: no "-0"
        if kind != "sum":
            problems.append(f"h_t[{j}] is a product, not a sum")
        elif not np.array_equal(np.asarray(column[input_size:]), identity[:, j]):
            reads = ", ".join(f"{w + 0.0:g}" for w in column[input_size:])  # + 0.0: no "-0"
            problems.append(f"h_t[{j}] reads h_{{t-1}} by [{reads}], not by the identity")
        if start != 0:
            problems.append(f"h_0[{j}] = {start:g}, not 0")
        closed.append(accumulated(sum_term(list(zip(column[:input_size], step_terms)))) if kind == "sum" else None)
        outputs.append(
            {
                "path": kind,
                "gate": None if gates is None else float(gates[j]),
                "step": f"h_t[{j}] = {step.text}",
                "initial_state": start,
                "expression": None,  # below, once every output is known to accumulate
            }
        )
    why = None
    if problems:
        why = (
            f"{layer.name} ({unit_name(layer)}) is no exact accumulator ({'; '.join(problems)}): "
            "the recurrence has no closed form"
        )
        terms = [Term(f"h_T[{j}]", ("opaque", f"h_T[{j}]")) for j in range(units)]
    else:
        terms = closed
        for output, term in zip(outputs, terms):
            output["expression"] = term.text
    report = {
        "name": layer.name,
        "unit": unit_name(layer),
        "recurrent": True,
        "accumulates": why is None,
        "outputs": outputs,
    }
    return report, terms, why


def _cell_gates(layer, params: dict, x: np.ndarray) -> np.ndarray:
    """A two-path cell's gates, per output, averaged over every step of the validation sequences."""
    unit_params = {name: value for name, value in params.items() if name != "initial_state"}
    h = np.broadcast_to(np.asarray(params["initial_state"]), (len(x), layer.units))
    gates = []
    for t in range(x.shape[1]):
        step_input = np.concatenate([x[:, t].astype(h.dtype), h], axis=-1)
        gates.append(np.asarray(layer.unit.gate(step_input, **unit_params)))
        h = np.asarray(layer.unit.forward(step_input, **unit_params))
    return np.concatenate(gates).mean(axis=0)


def weights_checked(layer, params: dict) -> int:
    """How many numbers `deviations` compares with their exact values (a cell's initial state too)."""
    total = sum(np.size(w) for w in layer.discrete_weights(**params))
    return int(total + (np.size(params["initial_state"]) if is_cell(layer) else 0))


def deviations(layer, params: dict, exact: dict | None, gates, tolerance: float) -> list[dict]:
    """One row per weight (or input-dependent gate) further than `tolerance` from its exact value."""
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
    # A cell's initial state snaps to an integer (an accumulator's to 0).
    if is_cell(layer):
        values = np.asarray(params["initial_state"], dtype=np.float64)
        target = np.asarray(exact["initial_state"] if exact is not None else np.round(values), dtype=np.float64)
        for j in np.flatnonzero(~(np.abs(values - target) <= tolerance)):
            rows.append(
                {
                    "layer": layer.name,
                    "weight": f"initial_state[{j}]",
                    "value": finite_or_none(float(values[j])),
                    "exact": finite_or_none(float(target[j]) + 0.0),
                    "deviation": finite_or_none(float(abs(values[j] - target[j]))),
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
