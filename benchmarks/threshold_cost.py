"""The success threshold's cost and value per task size, and its agreement with whole-vector simulation.

    .venv/bin/python benchmarks/threshold_cost.py [--inputs 100,1000,10000] [--ops mul,div]
        [--compare 100,1000,recurrent] [--exact-sums 17,24,33,64 [--samples 2000000]]

Times `thresholds.success_threshold` (caches cleared before each call) for the static task at each
input size (default slices: 25% of the inputs, overlapping by half; extrapolation U[2,6]) and
for the default recurrent task (10 inputs, T = 1000, seed 0's slices), and prints seconds and
threshold per row. Runs on nalu 0.7.0 too (the threshold from whole input vectors).

`--compare` also simulates the threshold by its definition at those input sizes (or the
recurrent task): whole input vectors in float64 through the perturbed weights as matrices (the
recurrent cell step by step), from the threshold's stream in the chunks nalu 0.7.0 drew, with
its slices at input 0, so the value is 0.7.0's threshold to float rounding (10^6 samples;
recurrent: 2,000 sequences). It prints both estimates with their Monte Carlo standard errors and
their difference in units of the combined error. Slow: about 12 s per op at 1,000 inputs.

`--exact-sums k,...` compares `thresholds.uniform_sums` (exact up to 16 terms, the first four
moments beyond) with sums of every draw, for slice groups of k inputs each and 50 others,
on three ranges, `--samples` samples each (independent streams).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from nalu_cli import tasks, thresholds
from nalu_cli.config import resolve


def clear_caches() -> None:
    for value in [*vars(tasks).values(), *vars(thresholds).values()]:
        if hasattr(value, "cache_clear") and not isinstance(value, type):
            value.cache_clear()


def spec_for(kind: str, op: str, input_size: int | None) -> tasks.TaskSpec:
    task = {"kind": kind, "op": op, **({"input_size": input_size} if input_size else {})}
    return tasks.TaskSpec.from_config(resolve({"task": task}).task, 0)


def timed_threshold(spec: tasks.TaskSpec) -> tuple[float, float]:
    clear_caches()
    started = time.perf_counter()
    value = thresholds.success_threshold(spec)
    return time.perf_counter() - started, value


def full_vector_threshold(spec: tasks.TaskSpec, samples: int) -> tuple[float, float]:
    """(threshold, standard error) from whole input vectors, by the definition: the perturbed
    weights as matrices, the recurrent cell run step by step. The slices start at input 0 and the
    numbers come from the threshold's stream in nalu 0.7.0's chunks, so this is 0.7.0's threshold."""
    eps, n = thresholds.SUCCESS_EPSILON, spec.input_size
    shift = min(start for start, _ in spec.subsets)
    subsets = tuple((lo - shift, hi - shift) for lo, hi in spec.subsets)
    weights = np.full((n, 2), eps)
    for column, (lo, hi) in enumerate(subsets):
        weights[lo:hi, column] = 1 - eps
    recurrence = np.array([[1 - eps, eps], [eps, 1 - eps]])
    shape = (spec.extrapolation_length, n) if spec.recurrent else (n,)
    rng = tasks.fork(0, tasks.THRESHOLD_STREAM)
    total = total_square = 0.0
    done, chunk = 0, max(1, 10_000_000 // math.prod(shape))
    while done < samples:
        count = min(chunk, samples - done)
        x = tasks.uniform_union_numpy(rng, spec.extrapolation_range, (count, *shape))
        totals = x.sum(axis=1) if spec.recurrent else x
        a, b = (totals[:, lo:hi].sum(axis=1) for lo, hi in subsets)
        if spec.recurrent:
            near = np.zeros((count, 2))
            for step in range(x.shape[1]):
                near = x[:, step] @ weights + near @ recurrence
        else:
            near = x @ weights
        square = (tasks.apply_op(spec.op, near[:, 0], near[:, 1]) - tasks.apply_op(spec.op, a, b)) ** 2
        total, total_square = total + float(square.sum()), total_square + float((square * square).sum())
        done += count
    mean = total / samples
    return mean, math.sqrt(max(total_square / samples - mean * mean, 0.0) / samples)


def timing_table(inputs: list[int], ops: list[str]) -> None:
    print(f"{'task':<10} {'input':>8} {'op':<6} {'seconds':>8} {'threshold':>12}")
    for kind, input_size in [("static", n) for n in inputs] + [("recurrent", None)]:
        for op in ops:
            spec = spec_for(kind, op, input_size)
            seconds, value = timed_threshold(spec)
            label = spec.input_size if kind == "static" else f"{spec.input_size}xT{spec.extrapolation_length}"
            print(f"{kind:<10} {label:>8} {op:<6} {seconds:8.2f} {value:12.5g}", flush=True)


def compare_full_vectors(rows: list[str], ops: list[str]) -> None:
    estimate = getattr(tasks, "threshold_estimate", None)  # absent before nalu 0.7.1
    for row in rows:
        kind, input_size = ("recurrent", None) if row == "recurrent" else ("static", int(row))
        spec = spec_for(kind, ops[0], input_size)
        numbers = math.prod(spec.shape(spec.extrapolation_length))
        samples = thresholds.THRESHOLD_SAMPLES  # 0.7.0's recurrent count: 2 * 10^7 input numbers
        if spec.recurrent:
            samples = max(1_000, min(samples, 20_000_000 // numbers))
        print(f"\n{kind}, input {spec.input_size}, slices {spec.subsets}: whole input vectors ({samples} samples) "
              f"against success_threshold (value +- standard error)")
        for op in ops:
            spec = spec_for(kind, op, input_size)
            reference, reference_error = full_vector_threshold(spec, samples)
            clear_caches()
            value, error = estimate(spec) if estimate else (thresholds.success_threshold(spec), float("nan"))
            combined = math.hypot(reference_error, error)
            print(f"  {op:<6} whole {reference:.6g} +- {reference_error:.2g}   nalu {value:.6g} +- {error:.2g}   "
                  f"difference {(value - reference) / reference:+.2%} = {(value - reference) / combined:+.2f} sd",
                  flush=True)


RANGES = {"U[2,6]": ((2.0, 6.0),), "U[0.1,10]": ((0.1, 10.0),), "[2,3]u[4,6]": ((2.0, 3.0), (4.0, 6.0))}


def compare_exact_sums(sizes: list[int], ops: list[str], samples: int) -> None:
    """Slice groups of `size` inputs each (and 50 others): uniform_sums against sums of every draw."""

    exact = 10**9
    print(f"\nslice groups (k, k, k) and 50 others, {samples} samples each: uniform_sums against exact sums")
    for size in sizes:
        for name, intervals in RANGES.items():
            for op in ops:
                groups = (size, size, size, 50)
                rng = np.random.default_rng(1)
                value, error = thresholds.near_solution_mse(op, groups, None, intervals, samples, rng)
                reference, reference_error = thresholds.near_solution_mse(
                    op, groups, None, intervals, samples, np.random.default_rng(2), exact_terms=exact)
                combined = math.hypot(reference_error, error)
                print(f"  k={size:<4} {name:<12} {op:<6} exact {reference:.5g} +- {reference_error / reference:.2%}   "
                      f"nalu {value:.5g} +- {error / value:.2%}   difference {(value - reference) / reference:+.3%} "
                      f"= {(value - reference) / combined:+.2f} sd", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", default="100,1000,10000", help="static input sizes to time (none: '')")
    parser.add_argument("--ops", default="mul,div")
    parser.add_argument("--compare", default="", help="input sizes, or 'recurrent', against whole vectors")
    parser.add_argument("--exact-sums", default="", help="slice group sizes to compare with exact sums")
    parser.add_argument("--samples", type=int, default=2_000_000, help="samples per --exact-sums estimate")
    args = parser.parse_args()
    ops = args.ops.split(",")
    if args.inputs:
        timing_table([int(n) for n in args.inputs.split(",")], ops)
    if args.compare:
        compare_full_vectors(args.compare.split(","), ops)
    if args.exact_sums:
        compare_exact_sums([int(n) for n in args.exact_sums.split(",")], ops, args.samples)


if __name__ == "__main__":
    main()
