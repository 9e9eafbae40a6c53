"""The arithmetic tasks: a and b sums of two overlapping slices of the input, y = op(a, b).

Static (Trask et al. 2018, section 4.1, as made precise by Madsen & Johansen 2020):
x ~ U(range)^n; slices of subset_ratio * n elements overlapping by overlap_ratio, placed
at an offset drawn once per seed.

Recurrent (Trask's Table 1, right half; stable-nalu's simple_function_recurrent at e088f71):
x is a sequence of T steps of n numbers; a = sum_t sum(x_t[A]), b likewise, y = op(a, b)
given once after the last step; the slices' sizes (1-5) and overlap (1-2) are drawn per
seed. Training and validation sequences have `length` steps, the test (extrapolation)
sequences `extrapolation_length`.

Training batches are drawn inside the compiled training step (`sample_batch_tf`); the
validation (interpolation) and test (extrapolation) sets are fixed samples, each from its
own seed (`sample_numpy`). Arrays are [N, n] (static) or [N, T, n] (recurrent).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from nalu_cli import ops
from nalu_cli.streams import stream_key, uniform_numpy, uniform_tf  # noqa: F401  (tasks.stream_key for callers)
from nalu_cli.config import RECURRENT_OVERLAPS, RECURRENT_SUBSET_SIZES, TaskConfig

# Stream identifiers: every split draws from its own seed, forked from the run seed.
(
    PLACEMENT_STREAM, VALIDATION_STREAM, TEST_STREAM, TRAIN_STREAM, THRESHOLD_STREAM, BASELINE_STREAM, RESTART_STREAM,
    POLISH_STREAM,
) = range(8)
# Numbers drawn at a time in float64 for a fixed set (uniform_union_numpy): 8 MB a block.
DRAW_BLOCK_NUMBERS = 1_000_000


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
    kind: str = "static"
    length: int | None = None  # recurrent: steps of a training / validation sequence
    extrapolation_length: int | None = None  # recurrent: steps of a test sequence

    @property
    def recurrent(self) -> bool:
        return self.kind == "recurrent"

    def shape(self, length: int | None = None) -> tuple:
        """One sample's shape: (n,) or (T, n), T the training length unless given."""
        return (length or self.length, self.input_size) if self.recurrent else (self.input_size,)

    @classmethod
    def from_config(cls, task: TaskConfig, seed: int) -> "TaskSpec":
        recurrent = task.kind == "recurrent"
        if task.subsets:
            subsets = task.subsets
        elif recurrent:
            subsets = draw_recurrent_subsets(task.input_size, seed)
        else:
            subsets = place_subsets(task.input_size, task.subset_ratio, task.overlap_ratio, seed)
        return cls(
            op=task.op,
            input_size=task.input_size,
            subsets=tuple(tuple(int(i) for i in s) for s in subsets),
            interpolation_range=_as_intervals(task.interpolation_range),
            extrapolation_range=_as_intervals(task.extrapolation_range),
            seed=seed,
            validation_size=task.validation_size,
            test_size=task.test_size,
            kind=task.kind,
            length=task.length if recurrent else None,
            extrapolation_length=task.extrapolation_length if recurrent else None,
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
            kind=data.get("kind", "static"),
            length=data.get("length"),
            extrapolation_length=data.get("extrapolation_length"),
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("subsets", "interpolation_range", "extrapolation_range"):
            data[key] = [list(v) for v in data[key]]
        if not self.recurrent:  # a static spec reads as it did before there were two kinds
            for key in ("kind", "length", "extrapolation_length"):
                del data[key]
        return data

    def formula(self) -> str:
        """The target as text over the slices, e.g. `sum(x[3:28]) * sum(x[16:41])`, or over every
        step of a sequence, `(sum_t sum(x_t[2:5])) * (sum_t sum(x_t[4:7]))`."""
        (a0, a1), (b0, b1) = self.subsets
        if self.recurrent:
            return ops.get(self.op).formula(f"(sum_t sum(x_t[{a0}:{a1}]))", f"(sum_t sum(x_t[{b0}:{b1}]))")
        return ops.get(self.op).formula(f"sum(x[{a0}:{a1}])", f"sum(x[{b0}:{b1}])")


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


def draw_recurrent_subsets(input_size: int, seed: int):
    """stable-nalu's recurrent slices (e088f71): sizes 1-5, overlap 1-2, b starting where a ends minus the overlap.

    The overlap is at most the smaller size, so the slices always overlap and always fit
    input_size >= 9 (config.RECURRENT_MIN_INPUT). The draw comes from the seed's placement stream.
    """
    rng = fork(seed, PLACEMENT_STREAM)
    a_size, b_size = (int(rng.integers(RECURRENT_SUBSET_SIZES[0], RECURRENT_SUBSET_SIZES[1] + 1)) for _ in range(2))
    overlap = int(rng.integers(RECURRENT_OVERLAPS[0], min(RECURRENT_OVERLAPS[1], a_size, b_size) + 1))
    a_start = int(rng.integers(0, input_size - a_size - b_size + overlap + 1))
    b_start = a_start + a_size - overlap
    return ((a_start, a_start + a_size), (b_start, b_start + b_size))


def apply_op(op: str, a, b, sqrt=np.sqrt):
    """y = op(a, b); works on numpy arrays and tensors alike (pass the matching sqrt)."""
    return ops.get(op).function(a, b, sqrt)


def uniform_union_numpy(rng: np.random.Generator, intervals, shape, dtype=np.float64) -> np.ndarray:
    """Uniform samples over a union of disjoint intervals (each weighted by its length).

    Drawn a block of rows (the first axis) at a time into the result, so that the float64
    draws of a large float32 set never exist whole (a validation set of 10,000 samples of
    10,000 inputs is 400 MB in float32; drawn at once, its float64 intermediates took 1.9 GB
    more). The generator fills its numbers in order, so the blocks are the one draw's numbers.
    """
    lengths = np.array([hi - lo for lo, hi in intervals])
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    shape = tuple(shape)
    out = np.empty(shape, dtype)
    rows = max(1, DRAW_BLOCK_NUMBERS // max(1, int(np.prod(shape[1:]))))
    for first in range(0, shape[0], rows):
        u = rng.uniform(0.0, lengths.sum(), size=(min(rows, shape[0] - first), *shape[1:]))
        x = u + intervals[0][0]
        for (lo, _), start in zip(intervals[1:], starts[1:]):
            x = np.where(u >= start, u - start + lo, x)
        out[first : first + len(x)] = x
    return out


def slice_sums(spec: TaskSpec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a and b of every sample: slice sums of x [N, n], or of its steps' total, x [N, T, n]."""
    if x.ndim == 3:
        x = x.sum(axis=1)
    (a0, a1), (b0, b1) = spec.subsets
    return x[:, a0:a1].sum(axis=1), x[:, b0:b1].sum(axis=1)


def targets_numpy(spec: TaskSpec, x: np.ndarray) -> np.ndarray:
    a, b = slice_sums(spec, x.astype(np.float64))
    return apply_op(spec.op, a, b)[:, None]


def sample_numpy(spec: TaskSpec, intervals, size: int, rng: np.random.Generator, length: int | None = None):
    """(x float32 [size, n] or [size, T, n], y float32 [size, 1]); y computed in float64 from the float32 inputs.

    Recurrent: T = `length` (default the training length). Long sequences are drawn and summed a
    block of samples at a time, so a float64 copy of the whole set never exists.
    """
    x = uniform_union_numpy(rng, intervals, (size, *spec.shape(length)), dtype=np.float32)
    block = max(1, 10_000_000 // max(1, int(np.prod(x.shape[1:]))))
    y = np.concatenate([targets_numpy(spec, x[i : i + block]) for i in range(0, size, block)] or [np.zeros((0, 1))])
    return x, y.astype(np.float32)


def validation_set(spec: TaskSpec):
    """Fixed interpolation samples (10,000 by default): model selection uses these, and only these."""
    return sample_numpy(spec, spec.interpolation_range, spec.validation_size, fork(spec.seed, VALIDATION_STREAM))


def polish_set(spec: TaskSpec, size: int):
    """Fixed interpolation samples for the polish step (training data, not the validation set):
    (x float32 [size, n] or [size, T, n], y float64 [size, 1])."""
    x = uniform_union_numpy(fork(spec.seed, POLISH_STREAM), spec.interpolation_range, (size, *spec.shape()), np.float32)
    return x, targets_numpy(spec, x)


def test_set(spec: TaskSpec):
    """Fixed extrapolation samples (10,000; recurrent: 1,000 sequences of extrapolation_length steps):
    reported, never used to choose a model."""
    return sample_numpy(spec, spec.extrapolation_range, spec.test_size, fork(spec.seed, TEST_STREAM),
                        length=spec.extrapolation_length)


def _batch_from_uniform(spec: TaskSpec, u, where, reduce_sum, sqrt):
    x = _map_to_intervals(spec.interpolation_range, u, where)
    totals = reduce_sum(x, axis=1) if spec.recurrent else x  # [batch, n]: every step's inputs added up
    (a0, a1), (b0, b1) = spec.subsets
    a = reduce_sum(totals[:, a0:a1], axis=1, keepdims=True)
    b = reduce_sum(totals[:, b0:b1], axis=1, keepdims=True)
    return x, apply_op(spec.op, a, b, sqrt=sqrt)


def _map_to_intervals(intervals, u, where):
    """U[0, 1) numbers to uniform over a union of intervals (each weighted by its length)."""
    lengths = [hi - lo for lo, hi in intervals]
    u = u * float(sum(lengths))
    x = u + intervals[0][0]
    start = 0.0
    for (lo, _), previous in zip(intervals[1:], lengths[:-1]):
        start += previous
        x = where(u >= start, u - start + lo, x)
    return x


def sample_batch_tf(spec: TaskSpec, batch_size: int, key: int, step):
    """The training batch number `step` of the stream `key`, drawn in-graph (same key and step, same batch)."""
    import tensorflow as tf

    u = uniform_tf(key, step, (batch_size, *spec.shape()))
    return _batch_from_uniform(spec, u, tf.where, tf.reduce_sum, tf.sqrt)


def sample_batches_tf(specs: list[TaskSpec], batch_size: int, keys: list[int], step):
    """`sample_batch_tf` for R streams at once, stacked on a leading axis: one op for all R.

    The specs may differ in their slices (each seed places its own); op, input size and
    range must be shared. Slice sums are one masked matmul, so they add in a different order
    than `sample_batch_tf`'s: targets agree to float rounding.
    """
    return sample_streams_tf(shared_task(specs), batch_size, keys, slice_masks(specs), step)


def shared_task(specs: list[TaskSpec]) -> TaskSpec:
    """The first of `specs`, which replicas sampled together must agree with in op, input shape
    and range (their slices and seeds may differ)."""
    first = specs[0]
    shared = lambda s: (s.op, s.shape(), s.interpolation_range)  # noqa: E731
    if any(shared(s) != shared(first) for s in specs):
        raise ValueError("replicas sampled together must share op, input shape and range")
    return first


def slice_masks(specs: list[TaskSpec]) -> np.ndarray:
    """[R, n, 2] float32: 1 where replica r's slice a (column 0) or b (column 1) reads input i."""
    masks = np.zeros((len(specs), specs[0].input_size, 2), np.float32)
    for r, spec in enumerate(specs):
        for side, (lo, hi) in enumerate(spec.subsets):
            masks[r, lo:hi, side] = 1.0
    return masks


def sample_streams_tf(spec: TaskSpec, batch_size: int, keys, masks, step):
    """The batches `sample_batches_tf` draws, from what tells the streams apart given as tensors, so
    that one compiled graph serves any seeds: `keys` the R streams' keys (uint64), `masks` their
    slices (`slice_masks`). `spec` gives what they share: the op, the input shape and the range.

    The op stays a constant: chosen in the graph (a switch on an op argument), a*b's training
    changed in the last bits (its product, we think, no longer fused into the loss that reads it)."""
    import tensorflow as tf

    x = _map_to_intervals(spec.interpolation_range, uniform_tf(keys, step, (batch_size, *spec.shape())), tf.where)
    totals = tf.reduce_sum(x, axis=-2) if spec.recurrent else x  # [R, batch, n]
    sums = tf.matmul(totals, masks)
    return x, apply_op(spec.op, sums[..., :1], sums[..., 1:], sqrt=tf.sqrt)


def sample_batch_numpy(spec: TaskSpec, batch_size: int, key: int, step: int):
    """`sample_batch_tf` in numpy (float32 throughout, as in the graph)."""
    u = uniform_numpy(key, step, (batch_size, *spec.shape()))
    return _batch_from_uniform(spec, u, np.where, np.sum, np.sqrt)
