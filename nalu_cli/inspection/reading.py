"""What a model's weights spell: each unit's exact weights, the expression they compute, the weights off them.

Each unit says how it reads (`paths`, `gate`) and how it snaps (`snap`); this module
composes the layers.
"""

from __future__ import annotations

import numpy as np

from nalu_cli import tasks
from nalu_cli.evaluation import finite_or_none
from nalu_cli.inspection.algebra import input_terms, product_term, sum_term
from nalu_cli.inspection.loading import Loaded, unit_name


def snap_layer(layer, params: dict) -> tuple[dict | None, str | None]:
    """(the layer's params at their exact values, None), or (None, why the unit cannot snap)."""
    try:
        snapped = layer.snap(**params)
    except NotImplementedError as reason:
        return None, str(reason)
    return {name: np.asarray(value, dtype=np.float32) for name, value in snapped.items()}, None


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
    layer_reports = []
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
        gates = np.asarray(layer.gate(x, **params)).mean(axis=0) if len(paths) == 2 else None
        outputs, next_terms = [], []
        for j in range(layer.units):
            # gate > 0.5 picks the first path, as rounding the gate does (0.5 rounds to 0).
            kind, weights = paths[0] if gates is None or gates[j] > 0.5 else paths[1]
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
    return {"expression": f"y = {output.text}", "canon": output.canon, "layers": layer_reports, "unreadable": None}


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
