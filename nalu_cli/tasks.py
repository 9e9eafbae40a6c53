"""The static arithmetic task: x ~ U(range)^n, a and b sums of two overlapping slices, y = op(a, b).

Protocol of Trask et al. (2018, section 4.1) as made precise by Madsen & Johansen
(2020): slices of subset_ratio * n elements overlapping by overlap_ratio, placed
at an offset drawn once per seed. Training batches are drawn inside the compiled
training step (`sample_batch_tf`); the validation (interpolation) and test
(extrapolation) sets are fixed samples, each from its own seed (`sample_numpy`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass

import numpy as np

from nalu_cli.config import TaskConfig

# Stream identifiers: every split draws from its own seed, forked from the run seed.
PLACEMENT_STREAM, VALIDATION_STREAM, TEST_STREAM, TRAIN_STREAM, THRESHOLD_STREAM, BASELINE_STREAM, RESTART_STREAM = range(7)
SUCCESS_EPSILON = 1e-5
THRESHOLD_SAMPLES = 1_000_000


@dataclass(frozen=True)
class TaskSpec:
    """A fully resolved task: everything needed to regenerate its data, independent of nalu's config."""

    op: str
    input_size: int
    subsets: tuple[tuple[int, int], tuple[int, int]]
    interpolation_range: tuple[tuple[float, float], ...]
    extrapolation_range: tuple[tuple[float, float], ...]
    seed: int
    validation_size: int = 10_000
    test_size: int = 10_000

    @classmethod
    def from_config(cls, task: TaskConfig, seed: int) -> "TaskSpec":
        subsets = task.subsets or place_subsets(task.input_size, task.subset_ratio, task.overlap_ratio, seed)
        return cls(
            op=task.op,
            input_size=task.input_size,
            subsets=tuple(tuple(int(i) for i in s) for s in subsets),
            interpolation_range=_as_intervals(task.interpolation_range),
            extrapolation_range=_as_intervals(task.extrapolation_range),
            seed=seed,
            validation_size=task.validation_size,
            test_size=task.test_size,
        )

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        return cls(
            op=data["op"],
            input_size=int(data["input_size"]),
            subsets=tuple(tuple(int(i) for i in s) for s in data["subsets"]),
            interpolation_range=_as_intervals(data["interpolation_range"]),
            extrapolation_range=_as_intervals(data["extrapolation_range"]),
            seed=int(data["seed"]),
            validation_size=int(data.get("validation_size", 10_000)),
            test_size=int(data.get("test_size", 10_000)),
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("subsets", "interpolation_range", "extrapolation_range"):
            data[key] = [list(v) for v in data[key]]
        return data

    def formula(self) -> str:
        (a0, a1), (b0, b1) = self.subsets
        a, b = f"sum(x[{a0}:{a1}])", f"sum(x[{b0}:{b1}])"
        return {
            "add": f"{a} + {b}",
            "sub": f"{a} - {b}",
            "mul": f"{a} * {b}",
            "div": f"{a} / {b}",
            "square": f"{a}^2",
            "sqrt": f"sqrt({a})",
        }[self.op]


def _as_intervals(value) -> tuple[tuple[float, float], ...]:
    if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        value = [value]
    return tuple((float(lo), float(hi)) for lo, hi in value)


def fork(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (run seed, stream)."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(stream,)))


def place_subsets(input_size: int, subset_ratio: float, overlap_ratio: float, seed: int):
    """a = x[k : k+s], b = x[k+s-o : k+2s-o] with offset k drawn from the seed."""
    subset = int(subset_ratio * input_size)
    overlap = int(overlap_ratio * subset)
    span = 2 * subset - overlap
    offset = int(fork(seed, PLACEMENT_STREAM).integers(0, input_size - span + 1))
    a_start = offset
    b_start = offset + subset - overlap
    return ((a_start, a_start + subset), (b_start, b_start + subset))


def apply_op(op: str, a, b, sqrt=np.sqrt):
    """y = op(a, b); works on numpy arrays and tensors alike (pass the matching sqrt)."""
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / b
    if op == "square":
        return a * a
    if op == "sqrt":
        return sqrt(a)
    raise ValueError(f"unknown op {op!r}")


def uniform_union_numpy(rng: np.random.Generator, intervals, shape, dtype=np.float64) -> np.ndarray:
    """Uniform samples over a union of disjoint intervals (each weighted by its length)."""
    lengths = np.array([hi - lo for lo, hi in intervals])
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    u = rng.uniform(0.0, lengths.sum(), size=shape)
    x = u + intervals[0][0]
    for (lo, _), start in zip(intervals[1:], starts[1:]):
        x = np.where(u >= start, u - start + lo, x)
    return x.astype(dtype)


def slice_sums(spec: TaskSpec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    (a0, a1), (b0, b1) = spec.subsets
    return x[:, a0:a1].sum(axis=1), x[:, b0:b1].sum(axis=1)


def targets_numpy(spec: TaskSpec, x: np.ndarray) -> np.ndarray:
    a, b = slice_sums(spec, x.astype(np.float64))
    return apply_op(spec.op, a, b)[:, None]


def sample_numpy(spec: TaskSpec, intervals, size: int, rng: np.random.Generator):
    """(x float32 [size, n], y float32 [size, 1]); y computed in float64 from the float32 inputs."""
    x = uniform_union_numpy(rng, intervals, (size, spec.input_size), dtype=np.float32)
    return x, targets_numpy(spec, x).astype(np.float32)


def validation_set(spec: TaskSpec):
    """10,000 fixed interpolation samples: model selection uses these, and only these."""
    return sample_numpy(spec, spec.interpolation_range, spec.validation_size, fork(spec.seed, VALIDATION_STREAM))


def test_set(spec: TaskSpec):
    """10,000 fixed extrapolation samples: reported, never used to choose a model."""
    return sample_numpy(spec, spec.extrapolation_range, spec.test_size, fork(spec.seed, TEST_STREAM))


def sample_batch_tf(spec: TaskSpec, batch_size: int, seed_pair):
    """A training batch drawn in-graph from a stateless seed pair (same pair -> same batch)."""
    import tensorflow as tf

    intervals = spec.interpolation_range
    lengths = [hi - lo for lo, hi in intervals]
    u = tf.random.stateless_uniform(
        [batch_size, spec.input_size], seed=seed_pair, minval=0.0, maxval=float(sum(lengths))
    )
    x = u + intervals[0][0]
    start = 0.0
    for (lo, _), previous in zip(intervals[1:], lengths[:-1]):
        start += previous
        x = tf.where(u >= start, u - start + lo, x)
    (a0, a1), (b0, b1) = spec.subsets
    a = tf.reduce_sum(x[:, a0:a1], axis=1, keepdims=True)
    b = tf.reduce_sum(x[:, b0:b1], axis=1, keepdims=True)
    return x, apply_op(spec.op, a, b, sqrt=tf.sqrt)


def _spec_key(spec: TaskSpec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)


def success_threshold(spec: TaskSpec, intervals=None, samples: int = THRESHOLD_SAMPLES) -> float:
    """Madsen & Johansen's success threshold for this exact task.

    The MSE, on the extrapolation range, of a near-perfect solution: first-layer
    weights 1 - eps on the correct slice entries and eps everywhere else
    (eps = 1e-5), followed by an exact second layer. Simulated in float64.
    """
    ranges = spec.extrapolation_range if intervals is None else tuple(tuple(i) for i in intervals)
    return _threshold_cached(_spec_key(spec), ranges, samples)


@functools.lru_cache(maxsize=64)
def _threshold_cached(spec_key: str, intervals, samples: int) -> float:
    spec = TaskSpec.from_dict(json.loads(spec_key))
    rng = fork(spec.seed, THRESHOLD_STREAM)
    eps = SUCCESS_EPSILON
    total, done, chunk = 0.0, 0, 100_000
    while done < samples:
        n = min(chunk, samples - done)
        x = uniform_union_numpy(rng, intervals, (n, spec.input_size))
        a, b = slice_sums(spec, x)
        everything = x.sum(axis=1)
        # Weights 1 - eps on the slice and eps elsewhere: (1 - eps) * a + eps * (sum(x) - a).
        a_near = (1 - eps) * a + eps * (everything - a)
        b_near = (1 - eps) * b + eps * (everything - b)
        error = apply_op(spec.op, a_near, b_near) - apply_op(spec.op, a, b)
        total += float(np.sum(error * error))
        done += n
    return total / samples
