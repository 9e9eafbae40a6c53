"""A benchmark's results as tables: success rates with Wilson intervals (Madsen & Johansen) or
normalised errors (Trask et al. Table 1), and Markdown for either."""

from __future__ import annotations

import math
import statistics

from nalu_cli.formatting import format_number
from nalu_cli.ops import SYMBOLS

WILSON_Z = 1.959963984540054  # two-sided 95%


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (Wilson 1927)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(records: list[dict]) -> list[dict]:
    """One row per (op, unit): success rate with Wilson interval, medians over successful seeds, and
    the solved-at step of each successful seed (the benchmark figure draws them; the table their median)."""
    cells: dict[tuple, list[dict]] = {}
    for record in records:
        cells.setdefault((record["op"], record["unit"]), []).append(record)
    rows = []
    for (op, unit), group in cells.items():
        solved = [r for r in group if r["success"]]
        low, high = wilson_interval(len(solved), len(group))
        solved_at_steps = sorted(r["solved_at_step"] for r in solved if r["solved_at_step"] is not None)
        rows.append(
            {
                "op": op,
                "unit": unit,
                "seeds": len(group),
                "successes": len(solved),
                "success_rate": len(solved) / len(group),
                "wilson_low": low,
                "wilson_high": high,
                "solved_at_steps": solved_at_steps,
                "median_solved_at_step": _median(solved_at_steps),
                "median_seconds_to_solve": _median([r["solved_at_seconds"] for r in solved]),
                "median_sparsity_error": _median([r["sparsity_error"] for r in solved]),
                "median_extrapolation_mse": _median([r["extrapolation_mse"] for r in group], missing=math.inf),
                "median_normalized_interpolation": _median([r.get("normalized_interpolation") for r in group]),
                "median_normalized_extrapolation": _median([r.get("normalized_extrapolation") for r in group]),
            }
        )
    return rows


def _median(values, missing=None):
    """Median of the values, a missing (non-finite) one counting as `missing` (None: left out)."""
    present = [v if v is not None else missing for v in values]
    present = [v for v in present if v is not None]
    return statistics.median(present) if present else None


def mj_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["op", "unit", "success", "95% CI", "solved at (median step)", "seconds to solve", "sparsity error",
              "extrapolation MSE"]
    body = [
        [
            SYMBOLS.get(row["op"], row["op"]),
            row["unit"],
            f"{row['successes']}/{row['seeds']} ({100 * row['success_rate']:.0f}%)",
            f"{100 * row['wilson_low']:.0f}-{100 * row['wilson_high']:.0f}%",
            format_number(int(row["median_solved_at_step"])) if row["median_solved_at_step"] is not None else "-",
            format_number(row["median_seconds_to_solve"], digits=3),
            format_number(row["median_sparsity_error"], digits=3),
            format_number(row["median_extrapolation_mse"], digits=3),
        ]
        for row in rows
    ]
    return header, body


def trask_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Trask et al. Table 1 layout: normalised error (random = 100), interpolation and extrapolation."""
    units = list(dict.fromkeys(row["unit"] for row in rows))
    ops = list(dict.fromkeys(row["op"] for row in rows))
    by_cell = {(row["op"], row["unit"]): row for row in rows}
    header = ["split", "op", *units]
    body = []
    for split in ("interpolation", "extrapolation"):
        for op in ops:
            values = [by_cell.get((op, unit), {}).get(f"median_normalized_{split}") for unit in units]
            body.append([split, SYMBOLS.get(op, op), *[normalized_cell(v) for v in values]])
    return header, body


def normalized_cell(value) -> str:
    """A normalised error as Trask's Table 1 prints it (one decimal: 99.6), but 2.5e+22 rather
    than 23 digits where a model's error ran away; "-" for none."""
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) < 1e6 else f"{value:.2g}"


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)
