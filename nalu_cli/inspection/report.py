"""`nalu inspect`: the learned expression, whether it is the task's formula, and the weights off their exact values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nalu_cli.errors import NaluError
from nalu_cli.evaluation import finite_or_none
from nalu_cli.inspection.algebra import canon_text, true_canon
from nalu_cli.inspection.loading import Loaded, load, unit_name
from nalu_cli.inspection.reading import deviations, read, snap_layer, weights_checked

# Weights further than this from their exact value are listed as deviating.
DEVIATION_TOLERANCE = 1e-4


def inspect(path: Path, tolerance: float = DEVIATION_TOLERANCE) -> dict:
    """The learned expression, whether it is the task's formula, and the weights off their exact values."""
    if not tolerance >= 0:
        raise NaluError(f"--tolerance must be a non-negative number, got {tolerance}")
    loaded = load(path)
    return _inspect(loaded, path, tolerance)


def _inspect(loaded: Loaded, path: Path, tolerance: float) -> dict:
    snapped, problems = zip(*(snap_layer(layer, p) for layer, p in zip(loaded.layers, loaded.params)))
    reading = read(loaded, list(snapped))
    gates = {
        report["name"]: [output["gate"] for output in report["outputs"]]
        for report in reading["layers"]
        if report["outputs"][0]["gate"] is not None
    }
    deviating = []
    for layer, params, exact in zip(loaded.layers, loaded.params, snapped):
        deviating.extend(deviations(layer, params, exact, gates.get(layer.name), tolerance))
    deviating.sort(key=lambda row: -math.inf if row["deviation"] is None else -row["deviation"])  # NaN first
    sparsity = max((float(np.asarray(l.sparsity_error(**p))) for l, p in zip(loaded.layers, loaded.params)), default=0.0)
    cannot_snap = next(
        (f"{layer.name} ({unit_name(layer)}): {problem}" for layer, problem in zip(loaded.layers, problems) if problem),
        None,
    )
    spec = loaded.spec
    return {
        "path": str(path),
        "model": {"units": [unit_name(layer) for layer in loaded.layers], "hidden_size": loaded.layers[0].units},
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
        "weights_total": sum(weights_checked(layer, p) for layer, p in zip(loaded.layers, loaded.params)),
        "snappable": cannot_snap is None,
        "cannot_snap": cannot_snap,
    }
