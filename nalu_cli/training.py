"""Training: R independent models in one compiled graph, data drawn in-graph, selection on interpolation only.

The model's Keras layers hold the weights for saving and export; training runs
their pure functions (`forward`, `regularizer`, `clip`) on parameter tensors with
a leading replica axis, carried through a `tf.while_loop` with Adam written out
(the same update as keras.optimizers.Adam). One Python call runs `eval_every`
steps for all R replicas. Replica r is exactly the model `nalu train --seed s_r`
trains alone: its own initialisation, task slices and data stream. A single
model is R = 1, so there is one training path.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nalu_cli import tasks
from nalu_cli.config import Config, ModelConfig, TrainingConfig, dump_yaml
from nalu_cli.export import make_meta, write_saved_model
from nalu_cli.rundir import (
    CONFIG_FILE,
    KERAS_FILE,
    METRICS_FILE,
    SAVED_MODEL_DIR,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    atomic_path,
    atomic_write_text,
    discard_backup,
    prepare_output,
    restore_backup,
)

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


@dataclass(frozen=True)
class Replica:
    """One model to train: its initialisation seed, its task, and its training-data stream."""

    init_seed: int
    spec: tasks.TaskSpec
    data_seed: int

    @classmethod
    def for_seed(cls, config: Config, seed: int) -> "Replica":
        """What `nalu train --seed seed` trains: everything derived from that one seed."""
        spec = tasks.TaskSpec.from_config(config.task, seed)
        data_seed = int(tasks.fork(seed, tasks.TRAIN_STREAM).integers(2**31))
        return cls(init_seed=seed, spec=spec, data_seed=data_seed)


@dataclass
class ReplicaResult:
    """What training made of one replica; selection is on interpolation validation MSE only."""

    selected_step: int = 0
    selected_params: list | None = None
    interpolation_mse: float = math.inf
    extrapolation_mse: float = math.inf
    solved_at_step: int | None = None
    solved_at_seconds: float | None = None
    diverged_at_step: int | None = None
    stopped_at_step: int | None = None


def regularizer_lambda(schedule: tuple[float, int, int], step):
    """lambda ramps linearly from 0 at `start` to `scale` at `end` (Madsen & Johansen 2020)."""
    import tensorflow as tf

    scale, start, end = schedule
    if scale == 0:
        return tf.constant(0.0)
    progress = (tf.cast(step, tf.float32) - float(start)) / float(max(end - start, 1))
    return scale * tf.clip_by_value(progress, 0.0, 1.0)


def _schedules(layers, training: TrainingConfig) -> list[tuple[float, int, int]]:
    """Each layer's published schedule, with any value the config sets taking its place."""
    overrides = (training.regularizer_scale, training.regularizer_start, training.regularizer_end)
    return [
        tuple(default if override is None else override for default, override in zip(layer.regularizer_schedule, overrides))
        for layer in layers
    ]


class ReplicaTrainer:
    """Trains R replicas of one architecture at once; replica r matches training it alone."""

    def __init__(self, model_config: ModelConfig, training: TrainingConfig, replicas: list[Replica]):
        import tensorflow as tf

        from nalu_cli.model import build_model, get_params, unit_layers

        if not replicas:
            raise ValueError("need at least one replica")
        sizes = {r.spec.input_size for r in replicas}
        if len(sizes) != 1:
            raise ValueError(f"replicas must share one input size, got {sorted(sizes)}")
        self.replicas = list(replicas)
        self.training = training
        self.model_config = model_config
        self.input_size = sizes.pop()
        models = [build_model(model_config, self.input_size, seed=r.init_seed) for r in replicas]
        self.model = models[0]  # the template whose layers' pure functions run every replica
        self.layers = unit_layers(self.model)
        self.schedules = _schedules(self.layers, training)
        self.params = tf.nest.map_structure(lambda *leaves: tf.constant(np.stack(leaves)), *[get_params(m) for m in models])
        self.m = tf.nest.map_structure(tf.zeros_like, self.params)
        self.v = tf.nest.map_structure(tf.zeros_like, self.params)
        self.active = np.ones(len(replicas), dtype=bool)
        self.diverged = np.zeros(len(replicas), dtype=bool)
        self.step = 0
        self.thresholds = np.array([tasks.success_threshold(r.spec) for r in replicas])
        self._chunk = self._make_chunk()
        self._evaluate = self._make_evaluate()

    # -- the compiled pieces ------------------------------------------------------------------
    def forward(self, params, x):
        from nalu_cli.model import forward

        return forward(self.model, params, x)

    def _make_chunk(self):
        import tensorflow as tf

        replicas, training = self.replicas, self.training
        lr, batch = training.learning_rate, training.batch_size
        # One replica runs without the replica axis: TF's batched matmul (and its gradient) costs
        # 3-4x a plain matmul for these tiny matrices on CPU (measured: 6.3k vs 25.6k steps/s).
        single = len(replicas) == 1
        to_compute = (lambda tree: tf.nest.map_structure(lambda t: t[0], tree)) if single else (lambda tree: tree)
        from_compute = (lambda tree: tf.nest.map_structure(lambda t: t[None], tree)) if single else (lambda tree: tree)

        def batches(step):
            pairs = [
                tasks.sample_batch_tf(r.spec, batch, tf.stack([tf.constant(r.data_seed, tf.int64), step]))
                for r in replicas
            ]
            if single:
                return pairs[0]
            return tf.stack([x for x, _ in pairs]), tf.stack([y for _, y in pairs])

        def loss_fn(params, x, y, step):
            per_replica = tf.reshape(tf.reduce_mean(tf.square(self.forward(params, x) - y), axis=(-2, -1)), [-1])
            penalty = 0.0
            for layer, layer_params, schedule in zip(self.layers, params, self.schedules):
                if schedule[0]:
                    penalty += regularizer_lambda(schedule, step) * layer.regularizer(**layer_params)
            return per_replica, per_replica + penalty

        @tf.function(reduce_retracing=True, autograph=False)  # plain graph code: no Python control flow to convert
        def chunk(start, n, params, m, v, active):
            def body(i, params, m, v, loss_sum):
                step = start + i
                x, y = batches(step)
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    mse, loss = loss_fn(params, x, y, step)
                    total = tf.reduce_sum(loss)  # replicas are independent: d total / d params_r = d loss_r
                grads = tape.gradient(total, params)
                t = tf.cast(step + 1, tf.float32)
                step_size = lr * tf.sqrt(1.0 - ADAM_BETA_2**t) / (1.0 - ADAM_BETA_1**t)
                m = tf.nest.map_structure(lambda m_, g: ADAM_BETA_1 * m_ + (1 - ADAM_BETA_1) * g, m, grads)
                v = tf.nest.map_structure(lambda v_, g: ADAM_BETA_2 * v_ + (1 - ADAM_BETA_2) * g * g, v, grads)
                updated = tf.nest.map_structure(
                    lambda p, m_, v_: p - step_size * m_ / (tf.sqrt(v_) + ADAM_EPSILON), params, m, v
                )
                params = [layer.clip(**p) for layer, p in zip(self.layers, updated)]
                return i + 1, params, m, v, loss_sum + mse

            zero = tf.constant(0, tf.int64)
            initial = (zero, to_compute(params), to_compute(m), to_compute(v), tf.zeros([len(replicas)]))
            _, new_params, new_m, new_v, loss_sum = tf.while_loop(
                lambda i, *_: i < n, body, initial, parallel_iterations=1
            )
            # Finished or diverged replicas keep their state (computed, then discarded: cheaper than masking per step).
            keep_new = lambda new, old: _where(active, new, old)  # noqa: E731
            return (
                tf.nest.map_structure(keep_new, from_compute(new_params), params),
                tf.nest.map_structure(keep_new, from_compute(new_m), m),
                tf.nest.map_structure(keep_new, from_compute(new_v), v),
                loss_sum / tf.cast(n, tf.float32),
            )

        return chunk

    def _make_evaluate(self):
        import tensorflow as tf

        single = len(self.replicas) == 1
        sets = {}
        for name, make in (("interpolation", tasks.validation_set), ("extrapolation", tasks.test_set)):
            pairs = [make(r.spec) for r in self.replicas]
            sets[name] = (tf.constant(np.stack([x for x, _ in pairs])), tf.constant(np.stack([y for _, y in pairs])))

        @tf.function(autograph=False)
        def evaluate(params):
            errors = {}
            for name, (x, y) in sets.items():
                if single:
                    params_, x, y = tf.nest.map_structure(lambda t: t[0], params), x[0], y[0]
                else:
                    params_ = params
                errors[name] = tf.reshape(tf.reduce_mean(tf.square(self.forward(params_, x) - y), axis=(-2, -1)), [-1])
            return errors

        return evaluate

    # -- the Python-side API ------------------------------------------------------------------
    def train(self, n: int) -> np.ndarray:
        """n steps for every active replica; a replica whose step goes non-finite is restored and frozen."""
        import tensorflow as tf

        before = (self.params, self.m, self.v)
        params, m, v, loss = self._chunk(
            tf.constant(self.step, tf.int64), tf.constant(n, tf.int64), self.params, self.m, self.v,
            tf.constant(self.active),
        )
        loss = loss.numpy()
        finite = np.isfinite(loss) & _finite_per_replica(params)
        self.diverged = self.active & ~finite
        keep = tf.constant(finite)
        self.params, self.m, self.v = (
            tf.nest.map_structure(lambda new, old: _where(keep, new, old), after, old_state)
            for after, old_state in zip((params, m, v), before)
        )
        self.active &= finite
        self.step += n
        return loss

    def evaluate(self) -> dict[str, np.ndarray]:
        return {name: values.numpy().astype(np.float64) for name, values in self._evaluate(self.params).items()}

    def replica_params(self, index: int) -> list[dict]:
        return [{name: value.numpy()[index] for name, value in layer.items()} for layer in self.params]

    def sparsity_error(self, params: list[dict]) -> float:
        """max over weights of min(|W|, |1 - |W||) for one replica's parameters (0 if the units have none)."""
        errors = [float(np.asarray(layer.sparsity_error(**p))) for layer, p in zip(self.layers, params)]
        return max(errors, default=0.0)

    def fit(
        self,
        steps: int,
        eval_every: int,
        early_stop: bool,
        on_eval: Callable[[int, list[dict], list[ReplicaResult]], None] | None = None,
    ) -> list[ReplicaResult]:
        """Train up to `steps`, evaluating every `eval_every`; per replica keep the lowest-interpolation checkpoint.

        With early_stop, a replica stops once its selected checkpoint meets the success criterion.
        """
        started = time.perf_counter()
        results = [ReplicaResult() for _ in self.replicas]
        losses = np.full(len(self.replicas), np.nan)
        while True:
            errors = self.evaluate()
            entries = []
            for r, result in enumerate(results):
                entry = {
                    "step": self.step,
                    "loss": float(losses[r]) if np.isfinite(losses[r]) else None,
                    "interpolation_mse": float(errors["interpolation"][r]),
                    "extrapolation_mse": float(errors["extrapolation"][r]),
                }
                if self.diverged[r]:
                    result.diverged_at_step = self.step
                if result.solved_at_step is None and entry["extrapolation_mse"] < self.thresholds[r]:
                    result.solved_at_step = self.step
                    result.solved_at_seconds = time.perf_counter() - started
                interpolation = entry["interpolation_mse"]
                if math.isfinite(interpolation) and interpolation < result.interpolation_mse:
                    result.selected_step = self.step
                    result.selected_params = self.replica_params(r)
                    result.interpolation_mse = interpolation
                    result.extrapolation_mse = entry["extrapolation_mse"]
                entry["selected_step"] = result.selected_step
                if early_stop and result.extrapolation_mse < self.thresholds[r]:
                    self.active[r] = False
                if not self.active[r] and result.stopped_at_step is None:
                    result.stopped_at_step = self.step
                entries.append(entry)
            if on_eval:
                on_eval(self.step, entries, results)
            if self.step >= steps or not self.active.any():
                for result in results:
                    if result.stopped_at_step is None:
                        result.stopped_at_step = self.step
                return results
            self.diverged = np.zeros(len(self.replicas), dtype=bool)
            losses = self.train(min(eval_every, steps - self.step))


def _where(mask, new, old):
    import tensorflow as tf

    shape = tf.concat([tf.shape(mask), tf.ones(tf.rank(new) - 1, tf.int32)], axis=0)
    return tf.where(tf.reshape(mask, shape), new, old)


def _finite_per_replica(params) -> np.ndarray:
    import tensorflow as tf

    leaves = [leaf.numpy() for leaf in tf.nest.flatten(params)]
    return np.all([np.isfinite(leaf.reshape(len(leaf), -1)).all(axis=1) for leaf in leaves], axis=0)


# -- one run: `nalu train` -----------------------------------------------------------------------


def train(
    config: Config,
    out: Path,
    overwrite: bool = False,
    on_progress: Callable[[dict], None] | None = None,
) -> dict:
    """Train one model as `config` says, writing the run directory `out`; returns the summary."""
    out = Path(out)
    backup = prepare_output(out, overwrite, kind="run")
    try:
        summary = _train(config, out, on_progress)
    except BaseException:
        restore_backup(out, backup)
        raise
    discard_backup(backup)
    return summary


def _train(config: Config, out: Path, on_progress) -> dict:
    import tensorflow as tf

    from nalu_cli.model import set_params

    started = time.perf_counter()
    out.mkdir(parents=True)
    atomic_write_text(out / CONFIG_FILE, dump_yaml(config))
    training = config.training
    replica = Replica.for_seed(config, config.seed)
    trainer = ReplicaTrainer(config.model, training, [replica])
    threshold = float(trainer.thresholds[0])
    writer = tf.summary.create_file_writer(str(out / TENSORBOARD_DIR))
    train_started = time.perf_counter()
    metrics = open(out / METRICS_FILE, "a")

    def on_eval(step, entries, results):
        elapsed = time.perf_counter() - train_started
        entry = {
            **entries[0],
            "success_threshold": threshold,
            "elapsed_seconds": round(time.perf_counter() - started, 4),
            "steps_per_second": step / elapsed if step else 0.0,
        }
        metrics.write(json.dumps(_jsonable(entry)) + "\n")
        metrics.flush()
        with writer.as_default(step=step):
            for key in ("loss", "interpolation_mse", "extrapolation_mse"):
                if entry[key] is not None and math.isfinite(entry[key]):
                    tf.summary.scalar(key, entry[key])
        if on_progress:
            on_progress({**entry, "total_steps": training.steps})

    try:
        (result,) = trainer.fit(training.steps, training.eval_every, training.early_stop, on_eval)
    finally:
        metrics.close()
        writer.close()
    train_seconds = time.perf_counter() - train_started

    set_params(trainer.model, result.selected_params)
    with atomic_path(out / KERAS_FILE) as tmp:
        trainer.model.save(str(tmp))
    meta = make_meta(replica.spec.to_dict(), config.to_dict()["model"], selected_step=result.selected_step)
    write_saved_model(trainer.model, meta, out / SAVED_MODEL_DIR)

    success = bool(result.extrapolation_mse < threshold)
    if result.diverged_at_step is not None:
        stop_reason = "diverged"
    elif training.early_stop and success and trainer.step < training.steps:
        stop_reason = "success"
    else:
        stop_reason = "steps"
    summary = {
        "task": replica.spec.to_dict(),
        "formula": replica.spec.formula(),
        "unit": config.model.name,
        "seed": config.seed,
        "steps_trained": trainer.step,
        "stop_reason": stop_reason,
        "selected_step": result.selected_step,
        "interpolation_mse": result.interpolation_mse,
        "extrapolation_mse": result.extrapolation_mse,
        "success_threshold": threshold,
        "success": success,
        "solved_at_step": result.solved_at_step,
        "diverged_at_step": result.diverged_at_step,
        "train_seconds": round(train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "steps_per_second": round(trainer.step / train_seconds, 1) if train_seconds > 0 else None,
    }
    atomic_write_text(out / SUMMARY_FILE, json.dumps(_jsonable(summary), indent=2) + "\n")
    return summary


def _jsonable(data: dict) -> dict:
    """JSON has no inf/NaN: write them as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
