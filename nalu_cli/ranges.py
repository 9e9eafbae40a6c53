"""The task's input ranges and slice placements: checked and normalised; ranges checked against the op.

Config validation uses all three; `nalu extrapolate --range` uses parse_range and check_domain.
Imports neither TensorFlow nor numpy.
"""

from __future__ import annotations

import math
from typing import Any

from nalu_cli.errors import NaluError


def parse_range(key: str, value: Any) -> list[list[float]]:
    """Normalise `[lo, hi]` or `[[lo, hi], ...]` to a sorted list of disjoint intervals."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        value = [value]
    if not isinstance(value, list) or not value:
        raise NaluError(f"config key '{key}' must be [lo, hi] or a list of [lo, hi], got {value!r}")
    intervals = []
    for interval in value:
        if not (
            isinstance(interval, list)
            and len(interval) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
        ):
            raise NaluError(f"config key '{key}' must be [lo, hi] or a list of [lo, hi], got {value!r}")
        lo, hi = float(interval[0]), float(interval[1])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NaluError(f"config key '{key}' must be finite, got {interval!r}")
        if lo >= hi:
            raise NaluError(f"config key '{key}': lo must be below hi, got [{lo:g}, {hi:g}]")
        intervals.append([lo, hi])
    intervals.sort()
    for (_, hi0), (lo1, _) in zip(intervals, intervals[1:]):
        if lo1 < hi0:
            raise NaluError(f"config key '{key}': intervals overlap in {value!r}")
    return intervals


def parse_subsets(value: Any, input_size: int) -> list[list[int]]:
    """Check explicit slice placements [[a_start, a_end], [b_start, b_end]] against the input size."""
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in s)
            for s in value
        )
    ):
        raise NaluError(f"config key 'task.subsets' must be [[start, end], [start, end]], got {value!r}")
    for start, end in value:
        if not 0 <= start < end <= input_size:
            raise NaluError(
                f"config key 'task.subsets': slice [{start}, {end}] does not fit input_size={input_size}"
            )
    return [list(s) for s in value]


def check_domain(op: str, key: str, intervals: list[list[float]]) -> None:
    """Reject ranges where the target is undefined: sqrt of negatives, division by a sum that can be 0."""
    lowest, highest = intervals[0][0], intervals[-1][1]
    if op == "sqrt" and lowest < 0:
        raise NaluError(f"op 'sqrt' needs non-negative inputs, but {key} reaches {lowest:g}")
    if op == "div" and lowest <= 0 <= highest:
        raise NaluError(
            f"op 'div' needs inputs of one sign (a sum over them divides), but {key} "
            f"[{lowest:g}, {highest:g}] contains 0"
        )
