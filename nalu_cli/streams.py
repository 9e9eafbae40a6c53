"""Counter-based random numbers for the training data: SplitMix64 read at a counter.

The same numbers in numpy (`uniform_numpy`, the reference) and in the compiled training step
(`uniform_tf`), for any batch, chunking or replica count: `tasks` maps them to inputs.
"""

from __future__ import annotations

import numpy as np

# Training data: SplitMix64 (Steele, Lea & Flood 2014) read at a counter. Number i of the stream
# with key k is mix64(k + (i + 1) * GAMMA), exactly the i-th output of a SplitMix64 generator
# seeded with k, so any batch is one vectorised hash of its counters: no state to carry, and
# the same numbers in the compiled step, in numpy and at any replica count. Under XLA this
# costs about 9 us per 128 x 100 batch against 30 us for TF's threefry and 180 us for philox
# (measured; philox was also 75 us a batch without XLA, a third of the whole training step).
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
_MIX_1, _MIX_2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def stream_key(seed: int, stream: int, *spawn: int) -> int:
    """A 64-bit SplitMix64 key for one training-data stream.

    Keys are spread over 2^64, so two streams overlapping within a run is vanishingly unlikely.
    """
    state = np.random.SeedSequence(seed, spawn_key=(stream, *spawn)).generate_state(1, np.uint64)
    return int(state[0])


def _mix64(z, right_shift, u64):
    """SplitMix64's output function on uint64 arrays or tensors (products wrap mod 2^64)."""
    z = (z ^ right_shift(z, 30)) * u64(_MIX_1)
    z = (z ^ right_shift(z, 27)) * u64(_MIX_2)
    return z ^ right_shift(z, 31)


def uniform_numpy(key: int, step: int, shape) -> np.ndarray:
    """float32 U[0, 1) numbers of `step`'s batch: the reference for `uniform_tf` (tests use it)."""
    size = int(np.prod(shape))
    counters = np.uint64(key) + (np.uint64(step) * np.uint64(size) + np.arange(1, size + 1, dtype=np.uint64)) * np.uint64(
        SPLITMIX_GAMMA
    )
    z = _mix64(counters, lambda z, bits: z >> np.uint64(bits), np.uint64)
    return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)).reshape(shape)


def uniform_tf(key, step, shape):
    """`uniform_numpy(key, step, shape)` in-graph; `step` is an int64 tensor. Counters wrap mod 2^64.

    `key` is one key, or a list of R keys: then the result has a leading axis of R streams. It may
    be a uint64 tensor (an argument of the compiled step, so that one graph serves any seeds).
    """
    import tensorflow as tf

    u64 = lambda value: tf.constant(np.asarray(value, dtype=np.uint64))  # noqa: E731
    size = int(np.prod(shape))
    key_shape = tuple(key.shape) if tf.is_tensor(key) else np.shape(key)
    key = key if tf.is_tensor(key) else u64(key)
    # key + (step * size + i + 1) * GAMMA, as (key + step * size * GAMMA) + (i + 1) * GAMMA: the same
    # sum mod 2^64, with one scalar a batch and a constant per number instead of a 64-bit multiply
    # per number (the data generation ran 1.1-1.25x as fast; README "Speed and memory").
    batch_start = key[..., None] + tf.cast(step, tf.uint64) * u64(size * SPLITMIX_GAMMA % 2**64)  # [1] or [R, 1]
    offsets = np.arange(1, size + 1, dtype=np.uint64) * np.uint64(SPLITMIX_GAMMA)  # wraps mod 2^64, as the graph's
    z = _mix64(batch_start + u64(offsets), lambda z, bits: tf.bitwise.right_shift(z, u64(bits)), u64)
    u = tf.cast(tf.bitwise.right_shift(z, u64(40)), tf.float32) * 2.0**-24
    return tf.reshape(u, (*key_shape, *shape))
