"""Madsen & Johansen's success threshold of a task, simulated from the sums of four groups of inputs.

The near-perfect solution (first-layer weights 1 - eps on the slice entries, eps on every other
input; eps = 1e-5) reads a' = (1 - eps) a + eps (total - a) and b' likewise, so its error
op(a', b') - op(a, b) depends on an input vector only through the sums of four groups of
inputs: in a only, in both slices, in b only, in neither (the recurrent cell: the same per step).
Each sample draws those four sums (`uniform_sums`) rather than every input, so its cost is at
most EXACT_SUM_TERMS + 1 draws per slice group and one for the rest (per interval of the range),
whatever input_size is.

Exact and approximate:
- A slice group of at most EXACT_SUM_TERMS inputs (every one of the default task's) is the sum
  of that many draws: exact.
- A larger slice group is drawn with the exact mean, variance, skewness and kurtosis of its
  sum (`uniform_sums`). Against exact sums of every draw for groups of 17 to 64 inputs
  (`benchmarks/threshold_cost.py --exact-sums 17,24,33,64`: a-b, a*b, a/b and sqrt(a) on three
  ranges, 2,000,000 samples each), every threshold was within 1.9 standard errors (0.26%).
- The inputs in neither slice enter only as eps times their sum, so the error's mean square
  depends on that sum through its mean and variance only, up to relative terms of order
  eps sum(x) / a (4e-5 on the default task): a normal with that mean and variance (per interval
  of the range; how many inputs fall in each is drawn exactly).
benchmarks/threshold_cost.py compares the result with the simulation from whole input vectors.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

from nalu_cli import ops
from nalu_cli.tasks import THRESHOLD_STREAM, TaskSpec, fork

SUCCESS_EPSILON = 1e-5
THRESHOLD_SAMPLES = 1_000_000
# The recurrent threshold is simulated from this many drawn numbers (samples x length x numbers per
# step: the slices' elements and the other inputs' sum), in float64: 2,000 to 10,000 sequences at
# the default extrapolation length.
THRESHOLD_NUMBERS_RECURRENT = 20_000_000
# Slice groups up to this many inputs per interval of the range are summed exactly, draw by draw.
EXACT_SUM_TERMS = 16


def numbers_per_step(groups: tuple[int, ...], intervals, exact_terms: int = EXACT_SUM_TERMS) -> int:
    """The numbers drawn per sample (static) or per step (recurrent): the slice groups' exact
    terms and one per group beyond them, per interval."""
    slice_terms = sum(min(size, exact_terms) + (size > exact_terms) for size in groups[:3])
    return len(intervals) * (slice_terms + 1)


def near_solution_mse(op: str, groups: tuple[int, ...], length: int | None, intervals, samples: int,
                      rng: np.random.Generator, exact_terms: int = EXACT_SUM_TERMS) -> tuple[float, float]:
    """(mean, standard error) of the near solution's squared error over `samples` draws of the
    groups' sums (sizes `groups`: a only, both, b only, neither); `length` steps if recurrent.
    `exact_terms`: see `uniform_sums` (the benchmark's exact reference sets it above every group)."""
    steps = () if length is None else (length,)
    total = total_square = 0.0
    done, chunk = 0, max(1, 10_000_000 // ((length or 1) * numbers_per_step(groups, intervals, exact_terms)))
    while done < samples:
        count = min(chunk, samples - done)
        a_only, both, b_only = (uniform_sums(rng, intervals, size, (count, *steps), exact_terms)
                                 for size in groups[:3])
        rest = uniform_sums(rng, intervals, groups[3], (count, *steps), exact_terms=0)
        a, b = a_only + both, both + b_only  # [count] or [count, steps]
        a_near, b_near = (near_recurrent if length else near_static)(a, b, a + b_only + rest)
        if length:
            a, b = a.sum(axis=1), b.sum(axis=1)
        function = ops.get(op).function
        square = (function(a_near, b_near, np.sqrt) - function(a, b, np.sqrt)) ** 2
        total, total_square = total + float(square.sum()), total_square + float((square * square).sum())
        done += count
    mean = total / samples
    return mean, float(np.sqrt(max(total_square / samples - mean * mean, 0.0) / samples))


def uniform_sums(rng: np.random.Generator, intervals, size: int, shape, exact_terms: int = EXACT_SUM_TERMS):
    """Sums of `size` i.i.d. uniforms over a union of disjoint intervals, one per entry of `shape`.

    How many of the terms fall in each interval is drawn exactly (multinomial, each interval
    weighted by its length); interval [lo, lo + w] contributes m lo + w S_m, S_m a sum of m
    U(0, 1). S_m is summed from m draws when m <= exact_terms; otherwise it is
    m/2 + (m/r)^(1/4) (S_r - r/2) + N(0, (m - sqrt(m r)) / 12), r = exact_terms: the mean,
    variance, skewness (0) and kurtosis of S_m (r = 0: a normal with S_m's mean and variance),
    clipped to S_m's range [0, m].
    """
    if size == 0:
        return np.zeros(shape)
    lows = np.array([lo for lo, _ in intervals])
    widths = np.array([hi - lo for lo, hi in intervals])
    if len(intervals) == 1:
        counts = np.full((*shape, 1), float(size))
    else:
        counts = rng.multinomial(size, widths / widths.sum(), size=shape).astype(np.float64)
    terms = min(size, exact_terms)
    drawn = np.minimum(counts, terms)
    uniforms = rng.random((*shape, len(intervals), terms))
    if len(intervals) > 1:  # each interval's first `drawn` terms
        uniforms = np.where(np.arange(terms) < drawn[..., None], uniforms, 0.0)
    unit_sums = uniforms.sum(axis=-1)
    if size > terms:
        scale = (counts / np.maximum(drawn, 1.0)) ** 0.25
        normal = rng.normal(0.0, np.sqrt((counts - np.sqrt(counts * drawn)) / 12))
        unit_sums = np.clip(counts / 2 + scale * (unit_sums - drawn / 2) + normal, 0.0, counts)
    return (counts * lows + unit_sums * widths).sum(axis=-1)


def near_static(a, b, total):
    """Weights 1 - eps on the slice and eps elsewhere: (1 - eps) * a + eps * (sum(x) - a)."""
    eps = SUCCESS_EPSILON
    return (1 - eps) * a + eps * (total - a), (1 - eps) * b + eps * (total - b)


def near_recurrent(a_t, b_t, total_t):
    """h_t = W_x x_t + W_h h_{t-1}, h_0 = 0, with W_x's slice entries 1 - eps and the rest eps, and
    W_h = [[1 - eps, eps], [eps, 1 - eps]]; returns h_T from every step's a_t, b_t and sum(x_t) [N, T].

    W_h has eigenvalues 1 (on h_1 + h_2) and lam = 1 - 2 eps (on h_1 - h_2), so with u_t = W_x x_t:
    h_T = 1/2 [sum_t p_t + sum_t lam^(T-t) q_t,  sum_t p_t - sum_t lam^(T-t) q_t],
    p_t = u_1t + u_2t, q_t = u_1t - u_2t.
    """
    eps = SUCCESS_EPSILON
    u1 = (1 - eps) * a_t + eps * (total_t - a_t)
    u2 = (1 - eps) * b_t + eps * (total_t - b_t)
    length = a_t.shape[1]
    decay = (1 - 2 * eps) ** np.arange(length - 1, -1, -1, dtype=np.float64)  # lam^(T-t), t = 1..T
    p, q = (u1 + u2).sum(axis=1), ((u1 - u2) * decay).sum(axis=1)
    return (p + q) / 2, (p - q) / 2


# -- a task's threshold -----------------------------------------------------------------------------


def threshold_groups(spec: TaskSpec) -> tuple[int, int, int, int]:
    """The sizes of the inputs' four groups by slice: in a only, in both, in b only, in neither."""
    (a0, a1), (b0, b1) = spec.subsets
    both = max(0, min(a1, b1) - max(a0, b0))
    a_only, b_only = a1 - a0 - both, b1 - b0 - both
    return a_only, both, b_only, spec.input_size - a_only - both - b_only


def success_threshold(spec: TaskSpec, intervals=None, samples: int = THRESHOLD_SAMPLES, length: int | None = None) -> float:
    """Madsen & Johansen's success threshold for this task.

    The MSE, on the extrapolation range (or `intervals`), of a near-perfect solution:
    first-layer weights 1 - eps on the correct slice entries and eps everywhere else
    (eps = 1e-5), followed by an exact second layer. Simulated in float64 from the inputs' group
    sums (`near_solution_mse`, above).

    Recurrent: the same carried over to the cell, at `length` steps (default the
    extrapolation length): every cell weight that is 1 in the exact solution (the slice
    entries and the recurrence h_{t-1} -> h_t) at 1 - eps, every other one (the other
    inputs, the cross terms of the recurrence) at eps, initial state 0, exact output layer.

    The inputs are i.i.d., so the threshold depends on the slices' lengths and overlap,
    not on where a seed placed them: it is simulated once per task (op, group sizes, ranges)
    from one fixed stream, and every seed of a task is held to the same number.
    """
    return threshold_estimate(spec, intervals, samples, length)[0]


def threshold_estimate(spec: TaskSpec, intervals=None, samples: int = THRESHOLD_SAMPLES,
                       length: int | None = None) -> tuple[float, float]:
    """`success_threshold` and the Monte Carlo standard error of its estimate."""
    intervals = spec.extrapolation_range if intervals is None else intervals
    ranges = tuple((float(lo), float(hi)) for lo, hi in intervals)
    groups = threshold_groups(spec)
    length = (length or spec.extrapolation_length) if spec.recurrent else None
    if spec.recurrent:
        drawn = length * numbers_per_step(groups, ranges)
        samples = max(1_000, min(samples, THRESHOLD_NUMBERS_RECURRENT // drawn))
    return _threshold_cached(spec.op, groups, length, ranges, samples)


def prefetch_threshold(spec: TaskSpec) -> threading.Thread:
    """Start simulating `spec`'s success threshold in a background thread; `success_threshold`
    then waits for that result instead of simulating again. `nalu train` calls it before
    importing TensorFlow: the simulation is numpy, which releases the GIL for its arrays, so
    it runs on the other core while the import holds this one. A daemon thread: it ends with
    the process. A failure is not kept: `success_threshold` simulates again and raises it in the
    caller's thread, rather than the thread printing a traceback."""

    def simulate():
        try:
            threshold_estimate(spec)
        except Exception:  # noqa: BLE001 - raised again where the threshold is asked for
            pass

    thread = threading.Thread(target=simulate, name="threshold", daemon=True)
    thread.start()
    return thread


class _Once:
    """A cache of a function's results in which a call for a key being computed in another thread
    waits for that computation (functools.lru_cache would compute it twice). A failed computation
    is not kept: the next call tries again."""

    def __init__(self, function):
        self.function, self.lock, self.results = function, threading.Lock(), {}

    def __call__(self, *key):
        with self.lock:
            future, owner = self.results.get(key), False
            if future is None:
                future = self.results[key] = Future()
                owner = True
        if owner:
            try:
                future.set_result(self.function(*key))
            except BaseException as error:
                with self.lock:
                    del self.results[key]
                future.set_exception(error)
        return future.result()

    def cache_clear(self) -> None:
        with self.lock:
            self.results.clear()


@_Once
def _threshold_cached(op: str, groups: tuple[int, ...], length: int | None, intervals, samples: int):
    return near_solution_mse(op, groups, length, intervals, samples, fork(0, THRESHOLD_STREAM))
