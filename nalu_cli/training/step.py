"""The compiled training chunk: n steps of every replica in one XLA-compiled loop, state in, state out.

A step draws its batch in-graph (tasks.sample_batch_tf, a counter-based stream, so step k's
batch is the same in any chunking), takes the gradient of MSE plus the scheduled sparsity
penalty, applies the optimiser and each unit's `clip`. `ChunkRunner` runs a chunk of any
length as calls of about CALL_SECONDS each (an interrupt is answered between them) and,
like optax's apply_if_finite, lets no replica keep a non-finite state.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from nalu_cli import faults, tasks
from nalu_cli.config import TrainingConfig
from nalu_cli.training import optimizer

# How long one compiled call runs, about (seconds). A chunk of eval_every steps is split into
# calls this long, so that Ctrl-C is answered within about this time however large eval_every
# is (Python runs signal handlers only between calls). The calls carry the state and the loss
# sum on: how a chunk is split changes no number. Measured cost: see README "Speed".
CALL_SECONDS = 0.25
# The first call also compiles: a few steps, then calls sized by the rate measured.
FIRST_CALL_STEPS = 100

class TrainState(NamedTuple):
    """What the compiled chunk carries: the weights and the optimiser's moments, replica axis first."""

    params: list
    optimizer: optimizer.AdamState


def regularizer_lambda(schedule: tuple[float, int, int], step):
    """lambda ramps linearly from 0 at `start` to `scale` at `end` (Madsen & Johansen 2020)."""
    scale, start, end = schedule
    if scale == 0:
        return tf.constant(0.0)
    progress = (tf.cast(step, tf.float32) - float(start)) / float(max(end - start, 1))
    return scale * tf.clip_by_value(progress, 0.0, 1.0)


def layer_schedules(layers, scale=None, start=None, end=None) -> list[tuple[float, int, int]]:
    """Each layer's published schedule, with any value given (not None) taking its place."""
    overrides = (scale, start, end)
    return [
        tuple(default if override is None else override for default, override in zip(layer.regularizer_schedule, overrides))
        for layer in layers
    ]


def recurrent_row_scales(layers, training: TrainingConfig, replicas) -> list[dict]:
    """Per layer, {weight name: factor on the step of its h_{t-1} rows}: a cell's matrices
    (their variables carry `split_rows`, set by the cell's build), empty for other layers."""
    if not replicas[0].spec.recurrent:
        return [{} for _ in layers]
    factor = optimizer.recurrent_step_scale(training.recurrent_step_scale, training.optimizer, replicas[0].spec.length)
    return [{name: factor for name, value in layer.params().items() if hasattr(value, "split_rows")
             and len(value.shape) == 2} for layer in layers]


def make_chunk(forward, layers, replicas, training: TrainingConfig):
    """chunk(start, n, state, lr_scale, loss_sum, streams) -> (state after steps start..start+n-1,
    loss_sum plus each of those steps' MSE, per replica).

    `forward(params, x)` is the model's pure forward pass; replica r draws from its own
    stream and learns at `learning_rate * lr_scale[r]`. R > 1 replicas' streams are an argument,
    `streams(replicas)`: so the chunk computes nothing particular to their seeds, and serves
    any replicas of the same architecture, training settings and task (op, input shape, range)
    (`Architecture` reuses it for later trainers in the process). One replica runs with its
    stream built in (`streams` is ()).
    """
    lr, batch = training.learning_rate, training.batch_size
    schedules = layer_schedules(layers, training.regularizer_scale, training.regularizer_start, training.regularizer_end)
    split_rows = [getattr(layer, "split_rows", None) for layer in layers]  # a cell: its x_t rows
    row_scales = recurrent_row_scales(layers, training, replicas)
    hidden_start = training.hidden_split_start
    # One replica runs without the replica axis: TF's batched matmul (and its gradient) costs
    # 3-4x a plain matmul for these tiny matrices on CPU (measured: 6.3k vs 25.6k steps/s).
    single = len(replicas) == 1
    to_compute = (lambda tree: tf.nest.map_structure(lambda t: t[0], tree)) if single else (lambda tree: tree)
    from_compute = (lambda tree: tf.nest.map_structure(lambda t: t[None], tree)) if single else (lambda tree: tree)

    def batches(step, streams):
        if single:
            return tasks.sample_batch_tf(replicas[0].spec, batch, replicas[0].data_seed, step)
        keys, masks = streams
        return tasks.sample_streams_tf(replicas[0].spec, batch, keys, masks, step)

    def loss_fn(params, x, y, step):
        per_replica = tf.reshape(tf.reduce_mean(tf.square(forward(params, x) - y), axis=(-2, -1)), [-1])
        penalty = 0.0
        for layer, layer_params, schedule in zip(layers, params, schedules):
            if schedule[0]:
                # in float32 whatever the layer computes in (recurrent models: float64)
                penalty += regularizer_lambda(schedule, step) * tf.cast(layer.regularizer(**layer_params), tf.float32)
        return per_replica, per_replica + penalty

    # plain graph code (no Python control flow to convert), compiled whole by XLA; see README "Speed".
    @tf.function(reduce_retracing=True, autograph=False, jit_compile=True)
    def chunk(start, n, state, lr_scale, loss_sum, streams=()):
        replica_lr = lr * (lr_scale[0] if single else lr_scale)  # one learning rate per replica

        def body(i, state, loss_sum):
            step = start + i
            x, y = batches(step, streams)
            with tf.GradientTape() as tape:
                tape.watch(state.params)
                mse, loss = loss_fn(state.params, x, y, step)
                total = tf.reduce_sum(loss)  # replicas are independent: d total / d params_r = d loss_r
            grads = tape.gradient(total, state.params)
            params, moments = optimizer.update(
                grads, state.optimizer, state.params, optimizer.step_size(replica_lr, step), split_rows, row_scales,
                hidden=None if hidden_start is None else (hidden_start, step),
                common_scale=training.common_step_scale,
            )
            params = [layer.clip(**p) for layer, p in zip(layers, params)]
            return i + 1, TrainState(params, moments), loss_sum + mse

        initial = (tf.constant(0, tf.int64), to_compute(state), loss_sum)
        _, new_state, loss_sum = tf.while_loop(lambda i, *_: i < n, body, initial, parallel_iterations=1)
        return from_compute(new_state), loss_sum

    return chunk


def streams(replicas) -> tuple:
    """What the chunk of R > 1 replicas draws their batches from: their streams' keys [R] (uint64) and
    slices [R, n, 2] (tasks.slice_masks); () for one replica."""
    if len(replicas) == 1:
        return ()
    specs = [r.spec for r in replicas]
    tasks.shared_task(specs)  # the chunk draws every stream as the first replica's task
    return tf.constant(np.array([r.data_seed for r in replicas], np.uint64)), tf.constant(tasks.slice_masks(specs))


class ChunkRunner:
    """Runs a compiled chunk for any number of steps, in calls of about `call_seconds` each.

    `runner(start, n, state, active, lr_scale, should_stop)` returns (state, losses, finite):
    replicas not `active` keep their state; a replica whose mean loss or weights went
    non-finite is back where the chunk began, its loss NaN and `finite` False (optax's
    apply_if_finite, per replica). `should_stop` is asked between calls: when it says yes the
    steps are abandoned and the runner returns None (the caller's state is untouched).
    """

    def __init__(self, chunk, call_seconds: float = CALL_SECONDS, streams: tuple = ()):
        """`streams`: the chunk's `streams` argument (see `streams`)."""
        self.chunk, self.call_seconds, self.streams = chunk, call_seconds, streams
        self.call_steps = FIRST_CALL_STEPS
        self.compiled = False

    def compile(self, state: TrainState, lr_scale: np.ndarray) -> None:
        """Trace and compile the chunk now, taking no step (a call of 0 steps), if no call has yet."""
        if not self.compiled:
            self.chunk(tf.constant(0, tf.int64), tf.constant(0, tf.int64), state, tf.constant(lr_scale),
                       tf.zeros(len(lr_scale)), self.streams)
            self.compiled = True

    def __call__(self, start: int, n: int, state: TrainState, active: np.ndarray, lr_scale: np.ndarray,
                 should_stop: Callable[[], bool] | None = None):
        new_state, loss_sum, lr_scale, done = state, tf.zeros(len(active)), tf.constant(lr_scale), 0
        while done < n:
            if done and should_stop is not None and should_stop():
                return None
            steps = min(self.call_steps, n - done)
            started = time.perf_counter()
            new_state, loss_sum = self.chunk(
                tf.constant(start + done, tf.int64), tf.constant(steps, tf.int64), new_state, lr_scale, loss_sum,
                self.streams)
            self.compiled = True
            self._pace(steps, time.perf_counter() - started)
            done += steps
            faults.reached("chunk-call")
        # Finished or diverged replicas keep their state (computed, then discarded: cheaper than masking per step).
        new_state = tf.nest.map_structure(lambda new, old: where(tf.constant(active), new, old), new_state, state)
        loss = loss_sum.numpy() / np.float32(n)
        finite = np.isfinite(loss) & finite_per_replica(new_state.params)
        keep = tf.constant(finite)
        state = tf.nest.map_structure(lambda new, old: where(keep, new, old), new_state, state)
        return state, np.where(finite, loss, np.nan), finite

    def _pace(self, steps: int, seconds: float) -> None:
        """Size the next call to last about call_seconds at the rate just measured; growing at
        most 4x a call, so one call that ran fast by chance cannot make the next one long."""
        rate = steps / max(seconds, 1e-6)
        self.call_steps = max(1, min(int(rate * self.call_seconds), 4 * self.call_steps))


def where(mask, new, old):
    """Per replica: `new` where the [R] `mask` holds, else `old`."""
    shape = tf.concat([tf.shape(mask), tf.ones(tf.rank(new) - 1, tf.int32)], axis=0)
    return tf.where(tf.reshape(mask, shape), new, old)


def finite_per_replica(params) -> np.ndarray:
    leaves = [leaf.numpy() for leaf in tf.nest.flatten(params)]
    return np.all([np.isfinite(leaf.reshape(len(leaf), -1)).all(axis=1) for leaf in leaves], axis=0)
