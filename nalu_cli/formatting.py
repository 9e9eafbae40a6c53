"""Numbers and input ranges as the CLI's tables and reports print them: one set of rules for all.

Plain Python values in, strings out; no TensorFlow, no Rich, so any table can use it.
"""

from __future__ import annotations

import math


def format_number(value, digits: int = 4) -> str:
    """A value of a report as a table cell.

    Args:
        value: None, a bool, an int, a float, or anything else (printed with `str`).
        digits: significant digits of a finite float.

    Returns:
        "-" for None (not measured, never reached); "yes" / "no" for a bool; "inf", "-inf"
        or "nan" for a non-finite float; a float to `digits` significant digits
        ("0.001234", "2.437e-13"); an int with thousands separators ("28,000").
    """
    if value is None:
        return "-"
    if isinstance(value, bool):  # before int: a bool is an int
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_range(intervals) -> str:
    """A union of uniform input ranges: [(1, 2), (4, 5)] -> "U[1, 2] ∪ U[4, 5]"."""
    return " ∪ ".join(f"U[{lo:g}, {hi:g}]" for lo, hi in intervals)
