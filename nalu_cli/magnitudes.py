"""How large a task's targets get, and whether float32 can hold what nalu computes from them.

nalu trains and selects on float32 MSEs: sums of squared errors over a batch (128) or over a
validation or test set (10,000). A model's error starts about as large as the targets, so
targets whose squares, summed over that many samples, pass float32's largest number (3.4e38)
make every loss and MSE infinite: nothing is learned, selected or measured. Targets whose
squares fall below its smallest normal number (1.2e-38) make every MSE zero, and every model
look perfect. Both follow from the config (op, slices, ranges, sequence lengths), so they are
refused before any work. No TensorFlow or numpy here.
"""

from __future__ import annotations

import math

from nalu_cli import ops
from nalu_cli.errors import NaluError

FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # smallest normal float32


def target_bound(spec, intervals, length: int | None = None) -> float:
    """The largest |y| of `spec`'s task over inputs in `intervals` (a union of [lo, hi]), for
    sequences of `length` steps on the recurrent task. Exact, except for a/b, where it is an upper
    bound (the largest |a| over the smallest |b|, which slices that overlap never reach together)."""
    (a0, a1), (b0, b1) = spec.subsets
    steps = (length or spec.length or 1) if spec.recurrent else 1
    lowest, highest = min(lo for lo, _ in intervals), max(hi for _, hi in intervals)
    largest = max(abs(lowest), abs(highest))  # every input at the end of the range farthest from 0
    smallest = min(0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)) for lo, hi in intervals)
    a_size, b_size = a1 - a0, b1 - b0
    op = ops.get(spec.op)
    if op.sum_sign is not None:
        # y = sum_t sum_i c_i x_ti, c_i = [i in a] + sign [i in b]: each term at whichever end of the range
        # pushes y furthest, all up or all down.
        weights = [(a0 <= i < a1) + op.sum_sign * (b0 <= i < b1) for i in range(min(a0, b0), max(a1, b1))]
        up = sum(max(c * lowest, c * highest) for c in weights)
        down = sum(min(c * lowest, c * highest) for c in weights)
        return steps * max(abs(up), abs(down))
    a, b = a_size * steps * largest, b_size * steps * largest
    if spec.op == "div":
        return math.inf if smallest == 0 else a_size * largest / (b_size * smallest)
    return abs(op.function(a, b, math.sqrt))  # |a*b|, a^2, sqrt(a): largest with every input at `largest`


def check_config(config, seeds=None) -> None:
    """`check_training` for a config's task with each of `seeds` (default its own seed). The static
    task's slice sizes do not depend on the seed; the recurrent task draws them per seed."""
    from nalu_cli import tasks

    seeds = [config.seed] if seeds is None else seeds
    for seed in seeds if config.task.kind == "recurrent" and not config.task.subsets else seeds[:1]:
        check_training(tasks.TaskSpec.from_config(config.task, seed), config.training.batch_size)


def check_training(spec, batch_size: int) -> None:
    """Refuse a task whose float32 training, selection or success criterion cannot be computed."""
    recurrent = spec.recurrent
    splits = (
        ("task.interpolation_range", spec.interpolation_range, spec.length, max(batch_size, spec.validation_size)),
        ("task.extrapolation_range", spec.extrapolation_range, spec.extrapolation_length, spec.test_size),
    )
    for key, intervals, length, count in splits:
        largest = target_bound(spec, intervals, length)
        where = _where(spec, key, intervals, length if recurrent else None)
        if largest == 0:
            raise NaluError(f"{where} gives targets that are always 0 (a - b over identical slices): there is "
                            "nothing to learn; use other task.subsets")
        if largest * largest * count > FLOAT32_MAX:
            raise NaluError(f"{where} gives targets up to {largest:.3g}: {count:,} squared errors that large overflow "
                            f"float32 (largest {FLOAT32_MAX:.3g}), in which nalu trains and measures; use a smaller "
                            f"range{' or shorter sequences' if recurrent else ''}")
        if largest * largest < FLOAT32_TINY:
            raise NaluError(f"{where} gives targets of at most {largest:.3g}: their squared errors underflow "
                            f"float32 (smallest {FLOAT32_TINY:.3g}) to 0, so every model would look exact; "
                            "use a larger range")


def check_evaluation(spec, intervals, length: int | None = None, key: str = "--range") -> None:
    """Refuse inputs whose targets float32 cannot hold (they are float32, as the model's output is)."""
    largest = target_bound(spec, intervals, length)
    where = _where(spec, key, intervals, length if spec.recurrent else None)
    if largest > FLOAT32_MAX:
        raise NaluError(f"{where} gives targets up to {largest:.3g}, beyond float32 (largest {FLOAT32_MAX:.3g}); "
                        f"use a smaller range{' or shorter sequences' if spec.recurrent else ''}")
    if largest < FLOAT32_TINY:
        raise NaluError(f"{where} gives targets of at most {largest:.3g}, which float32 rounds to 0; "
                        "use a larger range")


def _where(spec, key: str, intervals, length: int | None) -> str:
    """'task.interpolation_range [1e+09, 2e+09] (a*b over slices of 25 and 25, 10 steps)'."""
    ranges = " u ".join(f"[{lo:g}, {hi:g}]" for lo, hi in intervals)
    (a0, a1), (b0, b1) = spec.subsets
    steps = f", {length:,} steps" if length else ""
    return f"{key} {ranges} ({ops.get(spec.op).symbol} over slices of {a1 - a0} and {b1 - b0}{steps})"
