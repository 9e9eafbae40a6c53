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
from nalu_cli._tf import use_one_thread
from nalu_cli.config import Config, ModelConfig, TrainingConfig, dump_yaml, load_yaml, resolve
from nalu_cli.errors import NaluError
from nalu_cli.export import make_meta, write_saved_model
from nalu_cli.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    KERAS_FILE,
    METRICS_FILE,
    SAVED_MODEL_DIR,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    atomic_path,
    atomic_write_text,
    discard_backup,
    is_run_dir,
    prepare_output,
    run_lock,
    restore_backup,
)

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7
# A replica whose step goes non-finite is restored with half the learning rate; after this
# many such events it is frozen at its last good state and reported as diverged.
MAX_DIVERGENCE_EVENTS = 5
# `nalu train` runs TF on one thread up to this many models (restarts); see _tf.use_one_thread.
ONE_THREAD_MAX_MODELS = 8
# Fixed interpolation samples the polish step fits (training.polish_every).
POLISH_SAMPLES = 256


@dataclass(frozen=True)
class Replica:
    """One model to train: its initialisation seed, its task, and its training-data stream."""

    init_seed: int
    spec: tasks.TaskSpec
    data_seed: int

    @classmethod
    def for_seed(cls, config: Config, seed: int, restart: int = 0) -> "Replica":
        """What `nalu train --seed seed` trains: everything derived from that one seed.

        Restart k > 0 learns the same task (slices, validation and test sets) from its own
        initialisation and data stream; restart 0 is the run without restarts.
        """
        spec = tasks.TaskSpec.from_config(config.task, seed)
        if restart == 0:
            return cls(init_seed=seed, spec=spec, data_seed=tasks.stream_key(seed, tasks.TRAIN_STREAM))
        init_seed = np.random.SeedSequence(seed, spawn_key=(tasks.RESTART_STREAM, restart)).generate_state(1)[0]
        data_seed = tasks.stream_key(seed, tasks.RESTART_STREAM, restart, tasks.TRAIN_STREAM)
        return cls(init_seed=int(init_seed) % 2**31, spec=spec, data_seed=data_seed)

    @classmethod
    def with_restarts(cls, config: Config, seed: int) -> list["Replica"]:
        return [cls.for_seed(config, seed, restart) for restart in range(config.model.restart_count)]


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
    snapped: bool = False  # the selected checkpoint is the snapped (exact-valued) version of the weights
    polished: bool = False  # ... or the weights after the polish step (see ReplicaTrainer.polish)


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
        # split-adam: moments of the common mode (mean over the inputs) of the first layer's weight matrices.
        self.split = _split_weights(self.params, training.optimizer)
        common = lambda t: tf.zeros_like(t[..., :1, :])  # noqa: E731
        self.mc = [{name: common(layer[name]) for name in names} for layer, names in zip(self.params, self.split)]
        self.vc = tf.nest.map_structure(tf.zeros_like, self.mc)
        self.active = np.ones(len(replicas), dtype=bool)
        self.lr_scale = np.ones(len(replicas), dtype=np.float32)
        self.divergence_events = np.zeros(len(replicas), dtype=np.int64)
        self.results: list[ReplicaResult] | None = None
        self.polish_seconds = 0.0  # wall time spent in the polish step, so speed reports can leave it out
        self.step = 0
        self.thresholds = np.array([tasks.success_threshold(r.spec) for r in replicas])
        self._chunk = self._make_chunk()
        self.snap_selection = training.snap_selection and _can_snap(self.layers, self.params)
        self._evaluate = self._make_evaluate()
        self._polish = self._make_polish() if training.polish_every else None

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
            if single:
                return tasks.sample_batch_tf(replicas[0].spec, batch, replicas[0].data_seed, step)
            return tasks.sample_batches_tf([r.spec for r in replicas], batch, [r.data_seed for r in replicas], step)

        def loss_fn(params, x, y, step):
            per_replica = tf.reshape(tf.reduce_mean(tf.square(self.forward(params, x) - y), axis=(-2, -1)), [-1])
            penalty = 0.0
            for layer, layer_params, schedule in zip(self.layers, params, self.schedules):
                if schedule[0]:
                    penalty += regularizer_lambda(schedule, step) * layer.regularizer(**layer_params)
            return per_replica, per_replica + penalty

        # plain graph code (no Python control flow to convert), compiled whole by XLA; see README "Speed".
        @tf.function(reduce_retracing=True, autograph=False, jit_compile=True)
        def chunk(start, n, params, m, v, mc, vc, active, lr_scale):
            replica_lr = lr * (lr_scale[0] if single else lr_scale)  # one learning rate per replica

            def body(i, params, m, v, mc, vc, loss_sum):
                step = start + i
                x, y = batches(step)
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    mse, loss = loss_fn(params, x, y, step)
                    total = tf.reduce_sum(loss)  # replicas are independent: d total / d params_r = d loss_r
                grads = tape.gradient(total, params)
                t = tf.cast(step + 1, tf.float32)
                step_size = replica_lr * tf.sqrt(1.0 - ADAM_BETA_2**t) / (1.0 - ADAM_BETA_1**t)
                params, m, v, mc, vc = _adam_step(params, grads, m, v, mc, vc, step_size)
                params = [layer.clip(**p) for layer, p in zip(self.layers, params)]
                return i + 1, params, m, v, mc, vc, loss_sum + mse

            zero = tf.constant(0, tf.int64)
            state = (params, m, v, mc, vc)
            initial = (zero, *map(to_compute, state), tf.zeros([len(replicas)]))
            _, *new_state, loss_sum = tf.while_loop(lambda i, *_: i < n, body, initial, parallel_iterations=1)
            # Finished or diverged replicas keep their state (computed, then discarded: cheaper than masking per step).
            keep_new = lambda new, old: _where(active, new, old)  # noqa: E731
            return (
                *(tf.nest.map_structure(keep_new, from_compute(new), old) for new, old in zip(new_state, state)),
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

        def errors_of(params, prefix=""):
            errors = {}
            for name, (x, y) in sets.items():
                if single:
                    params_, x, y = tf.nest.map_structure(lambda t: t[0], params), x[0], y[0]
                else:
                    params_ = params
                mse = tf.reduce_mean(tf.square(self.forward(params_, x) - y), axis=(-2, -1))
                errors[prefix + name] = tf.reshape(mse, [-1])
            return errors

        @tf.function(autograph=False)
        def evaluate(params):
            errors = errors_of(params)
            if self.snap_selection:
                snapped = [layer.snap(**p) for layer, p in zip(self.layers, params)]
                errors.update(errors_of(snapped, prefix="snapped_"))
                errors["snapped_params"] = snapped
            return errors

        return evaluate

    def _make_polish(self):
        """Levenberg-Marquardt on the plain MSE over fixed interpolation samples, every replica at once.

        Adam's noisy steps stop short of an ill-conditioned minimum: on a/b over U[1, 2] the
        output depends on the shared inputs' weights and the powers only at second order
        (a/b = 1 + (a - b)/b + ...), so those directions have curvature ~1e-4 of the others.
        A damped Gauss-Newton step solves (J^T J + lambda diag(J^T J)) d = -J^T r, which
        rescales every direction by its own curvature. It runs in float64 on all parameters
        flattened per replica ([R, P], P is a few hundred), one trial step per iteration,
        clipped like a training step; lambda shrinks 3x after an accepted step and grows 4x
        after a rejected one (Marquardt's rule), per replica. The regulariser is left out:
        this is a fit of the data, and `snap` still rounds afterwards.
        """
        import tensorflow as tf

        replicas, layers = len(self.replicas), self.layers
        names = [(index, name) for index, layer in enumerate(self.params) for name in layer]
        shapes = [self.params[index][name].shape[1:] for index, name in names]
        sizes = [int(np.prod(shape)) for shape in shapes]
        pairs = [tasks.polish_set(r.spec, POLISH_SAMPLES) for r in self.replicas]
        x = tf.constant(np.stack([x for x, _ in pairs]), tf.float64)  # [R, N, in]
        y = tf.constant(np.stack([y[:, 0] for _, y in pairs]), tf.float64)  # [R, N]
        iterations, samples = self.training.polish_iterations, POLISH_SAMPLES

        def unflatten(theta):
            """[R, P] -> params [R, ...]; or [R, N, P] -> one copy of the params per sample, [R, N, ...]."""
            leading = theta.shape[:-1]
            params = [{} for _ in self.params]
            for (index, name), shape, piece in zip(names, shapes, tf.split(theta, sizes, axis=-1)):
                params[index][name] = tf.reshape(piece, [*leading, *shape])
            return params

        def flatten(params):
            return tf.concat([tf.reshape(params[index][name], [replicas, -1]) for index, name in names], axis=1)

        def residuals(theta):
            return tf.reshape(self.forward(unflatten(theta), x), [replicas, -1]) - y

        def residuals_and_jacobian(theta):
            """r [R, N] and dr/dtheta [R, N, P] from one backward pass: every sample gets its own
            copy of the weights (units are vectorised over leading axes), so the gradient of the
            summed outputs with respect to sample n's copy is row n of the Jacobian."""
            copies = tf.broadcast_to(theta[:, None, :], [replicas, samples, theta.shape[-1]])
            with tf.GradientTape() as tape:
                tape.watch(copies)
                out = tf.reshape(self.forward(unflatten(copies), x[:, :, None, :]), [replicas, samples])
            return out - y, tape.gradient(out, copies)

        def mse(theta):
            loss = tf.reduce_mean(tf.square(residuals(theta)), axis=1)
            return tf.where(tf.math.is_finite(loss), loss, tf.constant(np.inf, tf.float64))

        @tf.function(autograph=False)
        def polish(params):
            theta = flatten(tf.nest.map_structure(lambda t: tf.cast(t, tf.float64), params))

            def body(i, theta, damping, loss):
                r, jacobian = residuals_and_jacobian(theta)
                jtj = tf.linalg.matmul(jacobian, jacobian, transpose_a=True)
                jtr = tf.linalg.matvec(jacobian, r, adjoint_a=True)
                diagonal = tf.linalg.diag_part(jtj)
                # Marquardt's scaling, plus a floor so a parameter with no gradient keeps the system solvable.
                floor = 1e-12 * tf.reduce_max(diagonal, axis=1, keepdims=True) + 1e-300
                system = jtj + tf.linalg.diag(damping[:, None] * diagonal + floor)
                step = tf.linalg.solve(system, -jtr[..., None])[..., 0]
                trial = flatten([layer.clip(**p) for layer, p in zip(layers, unflatten(theta + step))])
                trial_loss = mse(trial)
                better = tf.math.is_finite(trial_loss) & (trial_loss < loss) & tf.reduce_all(tf.math.is_finite(trial), axis=1)
                theta = tf.where(better[:, None], trial, theta)
                loss = tf.where(better, trial_loss, loss)
                damping = tf.clip_by_value(tf.where(better, damping / 3.0, damping * 4.0), 1e-12, 1e12)
                return i + 1, theta, damping, loss

            initial = (tf.constant(0), theta, tf.fill([replicas], tf.constant(1e-3, tf.float64)), mse(theta))
            _, theta, _, _ = tf.while_loop(lambda i, *_: i < iterations, body, initial, parallel_iterations=1)
            return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), unflatten(theta))

        return polish

    def polish(self):
        """Every replica's current weights after the polish step (see _make_polish); the trainer's state is unchanged."""
        started = time.perf_counter()
        polished = self._polish(self.params)  # eager call: returns once computed
        self.polish_seconds += time.perf_counter() - started
        return polished

    # -- the Python-side API ------------------------------------------------------------------
    def train(self, n: int) -> np.ndarray:
        """n steps for every active replica; returns each replica's mean loss over them.

        A replica whose loss or weights go non-finite never keeps that state: it is restored to
        where the chunk began, its learning rate is halved, and it continues from the next chunk.
        After MAX_DIVERGENCE_EVENTS such events it is frozen at its last good state.
        """
        import tensorflow as tf

        before = (self.params, self.m, self.v, self.mc, self.vc)
        *after, loss = self._chunk(
            tf.constant(self.step, tf.int64), tf.constant(n, tf.int64), *before,
            tf.constant(self.active), tf.constant(self.lr_scale),
        )
        loss = loss.numpy()
        finite = np.isfinite(loss) & _finite_per_replica(after[0])
        diverged = self.active & ~finite
        keep = tf.constant(finite)
        self.params, self.m, self.v, self.mc, self.vc = (
            tf.nest.map_structure(lambda new, old: _where(keep, new, old), new_state, old_state)
            for new_state, old_state in zip(after, before)
        )
        self.divergence_events += diverged
        self.lr_scale[diverged] *= 0.5
        gave_up = diverged & (self.divergence_events >= MAX_DIVERGENCE_EVENTS)
        self.active &= ~gave_up
        self.step += n
        if self.results is not None:
            for r in np.flatnonzero(gave_up):
                self.results[r].diverged_at_step = self.step
        return np.where(finite, loss, np.nan)

    def evaluate(self) -> dict:
        """MSE per replica on the validation and test sets (and of the snapped weights, with snap_selection)."""
        return self._evaluate_params(self.params, keep_params=False)

    def _evaluate_params(self, params, keep_params: bool = True) -> dict:
        """`evaluate` for any weights with a replica axis; with keep_params, "params" holds them as numpy."""
        results = self._evaluate(params)
        errors = {name: values.numpy().astype(np.float64) for name, values in results.items() if name != "snapped_params"}
        if "snapped_params" in results:
            errors["snapped_params"] = _to_numpy(results["snapped_params"])
        if keep_params:
            errors["params"] = _to_numpy(params)
        return errors

    def replica_params(self, index: int, params_numpy: list[dict] | None = None) -> list[dict]:
        """One replica's weights; pass `params_numpy` (all replicas, as numpy) to avoid converting again."""
        params_numpy = params_numpy or self._params_numpy()
        return [{name: value[index] for name, value in layer.items()} for layer in params_numpy]

    def _params_numpy(self) -> list[dict]:
        return _to_numpy(self.params)

    def sparsity_error(self, params: list[dict]) -> float:
        """max over weights of min(|W|, |1 - |W||) for one replica's parameters (0 if the units have none)."""
        errors = [float(np.asarray(layer.sparsity_error(**p))) for layer, p in zip(self.layers, params)]
        return max(errors, default=0.0)

    def _record(self, losses: np.ndarray, early_stop: bool, started: float) -> list[dict]:
        """Evaluate every replica; update its selected checkpoint (interpolation MSE only) and solved-at step.

        The candidates are the current weights, their snapped form (snap_selection) and, at a
        polish step, the polished weights and their snapped form; the one with the lowest
        interpolation MSE so far is selected. Extrapolation MSE is recorded, never compared.
        """
        errors = self.evaluate()
        params_numpy = None  # converted once per evaluation, and only if a replica improves
        # (name, snapped, polished, interpolation MSEs [R], extrapolation MSEs [R], params of replica r)
        candidates = []
        if self.snap_selection:
            candidates.append(("snapped", True, False, errors["snapped_interpolation"], errors["snapped_extrapolation"],
                               _replica_picker(errors["snapped_params"])))
        if self._polish is not None and self.step > 0 and self.step % self.training.polish_every == 0:
            polished = self._evaluate_params(self.polish())
            candidates.append(("polished", False, True, polished["interpolation"], polished["extrapolation"],
                               _replica_picker(polished["params"])))
            if self.snap_selection:
                candidates.append(("polished_snapped", True, True, polished["snapped_interpolation"],
                                   polished["snapped_extrapolation"], _replica_picker(polished["snapped_params"])))
        entries = []
        for r, result in enumerate(self.results):
            entry = {
                "step": self.step,
                "loss": float(losses[r]) if np.isfinite(losses[r]) else None,
                "interpolation_mse": float(errors["interpolation"][r]),
                "extrapolation_mse": float(errors["extrapolation"][r]),
                "divergence_events": int(self.divergence_events[r]),
            }
            interpolation = entry["interpolation_mse"]
            if math.isfinite(interpolation) and interpolation < result.interpolation_mse:
                result.selected_step = self.step
                params_numpy = params_numpy or self._params_numpy()
                result.selected_params = self.replica_params(r, params_numpy)
                result.interpolation_mse = interpolation
                result.extrapolation_mse = entry["extrapolation_mse"]
                result.snapped = result.polished = False
            for name, snapped, polished, interpolations, extrapolations, params_of in candidates:
                # Each candidate competes on interpolation error too; a stopped replica (solved,
                # diverged, or done with its group) gets no new polished candidates, so it ends
                # where it would have trained alone.
                if polished and not self.active[r]:
                    continue
                entry[f"{name}_interpolation_mse"] = float(interpolations[r])
                entry[f"{name}_extrapolation_mse"] = float(extrapolations[r])
                if math.isfinite(interpolations[r]) and interpolations[r] < result.interpolation_mse:
                    result.selected_step = self.step
                    result.selected_params = params_of(r)
                    result.interpolation_mse = float(interpolations[r])
                    result.extrapolation_mse = float(extrapolations[r])
                    result.snapped, result.polished = snapped, polished
            entry["selected_step"] = result.selected_step
            # Solved: the model training would hand out now (the selected one) meets the criterion.
            if result.solved_at_step is None and result.extrapolation_mse < self.thresholds[r]:
                result.solved_at_step = self.step
                result.solved_at_seconds = time.perf_counter() - started
            if early_stop and result.extrapolation_mse < self.thresholds[r]:
                self.active[r] = False
            if not self.active[r] and result.stopped_at_step is None:
                result.stopped_at_step = self.step
            entries.append(entry)
        return entries

    def fit(
        self,
        steps: int,
        eval_every: int,
        early_stop: bool,
        on_eval: Callable[[int, list[dict], list[ReplicaResult]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        groups: list[list[int]] | None = None,
    ) -> list[ReplicaResult]:
        """Train up to `steps`, evaluating every `eval_every`; per replica keep the lowest-interpolation checkpoint.

        With early_stop, a replica stops once its selected checkpoint meets the success criterion.
        `groups` are restarts of one model: a group's model is its member with the lowest
        interpolation MSE (`chosen`), and the whole group stops once that one succeeds.
        `should_stop` is asked between chunks (an interrupt); `self.interrupted` says if it ended the fit.
        Calling fit again, or after `load_state`, continues where the last call ended.
        """
        started = time.perf_counter()
        self.interrupted = False
        groups = groups or [[r] for r in range(len(self.replicas))]
        if self.results is None:
            self.results = [ReplicaResult() for _ in self.replicas]
            entries = self._record(np.full(len(self.replicas), np.nan), early_stop, started)
            self._stop_solved_groups(groups, early_stop)
            if on_eval:
                on_eval(self.step, entries, self.results)
        while self.step < steps and self.active.any():
            if should_stop and should_stop():
                self.interrupted = True
                return self.results
            losses = self.train(min(eval_every, steps - self.step))
            entries = self._record(losses, early_stop, started)
            self._stop_solved_groups(groups, early_stop)
            if on_eval:
                on_eval(self.step, entries, self.results)
        for result in self.results:
            if result.stopped_at_step is None:
                result.stopped_at_step = self.step
        return self.results

    def chosen(self, group: list[int]) -> int:
        """The member of a group of restarts with the lowest interpolation MSE (selection never sees extrapolation)."""
        return min(group, key=lambda r: (self.results[r].interpolation_mse, r))

    def _stop_solved_groups(self, groups: list[list[int]], early_stop: bool) -> None:
        if not early_stop:
            return
        for group in groups:
            best = self.chosen(group)
            if self.results[best].extrapolation_mse < self.thresholds[best]:
                for r in group:
                    self.active[r] = False
                    if self.results[r].stopped_at_step is None:
                        self.results[r].stopped_at_step = self.step

    # -- checkpoints ---------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything needed to continue exactly: arrays (weights, Adam moments, selections) and scalars."""
        arrays = {}
        for kind, tree in (("params", self.params), ("m", self.m), ("v", self.v), ("mc", self.mc), ("vc", self.vc)):
            for index, layer in enumerate(tree):
                for name, value in layer.items():
                    arrays[f"{kind}/{index}/{name}"] = value.numpy()
        for r, result in enumerate(self.results or []):
            for index, layer in enumerate(result.selected_params or []):
                for name, value in layer.items():
                    arrays[f"selected/{r}/{index}/{name}"] = value
        arrays["active"] = self.active.copy()
        arrays["lr_scale"] = self.lr_scale.copy()
        arrays["divergence_events"] = self.divergence_events.copy()
        scalars = {
            "step": self.step,
            "polish_seconds": self.polish_seconds,
            "results": [
                {k: v for k, v in vars(result).items() if k != "selected_params"} for result in (self.results or [])
            ],
        }
        return arrays, scalars

    def load_state(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        import tensorflow as tf

        for kind in ("params", "m", "v", "mc", "vc"):
            tree = getattr(self, kind)
            missing = [f"{kind}/{i}/{name}" for i, layer in enumerate(tree) for name in layer]
            missing = [key for key in missing if key not in arrays]
            if missing:
                raise NaluError(f"checkpoint has no {missing[0]}: it was written by another nalu version or optimizer")
            setattr(self, kind, [{name: tf.constant(arrays[f"{kind}/{i}/{name}"]) for name in layer} for i, layer in enumerate(tree)])
        self.active = arrays["active"].astype(bool)
        self.lr_scale = arrays["lr_scale"].astype(np.float32)
        self.divergence_events = arrays["divergence_events"].astype(np.int64)
        self.step = int(scalars["step"])
        self.polish_seconds = float(scalars.get("polish_seconds", 0.0))
        self.results = []
        for r, fields in enumerate(scalars["results"]):
            result = ReplicaResult(**{k: (math.inf if v is None and k.endswith("_mse") else v) for k, v in fields.items()})
            prefix = f"selected/{r}/"
            if any(key.startswith(prefix) for key in arrays):
                result.selected_params = [
                    {name: arrays[f"{prefix}{index}/{name}"] for name in layer} for index, layer in enumerate(self.params)
                ]
            self.results.append(result)


def _split_weights(params, optimizer: str) -> list[tuple[str, ...]]:
    """Per layer, the weights whose common mode split-adam moves with its own moments.

    The weight matrices ([R, in, out]) of the first layer, the one that reads the inputs,
    whose shared mean is what split-adam separates; none for plain adam. Splitting the
    second layer too, over its two hidden units, made the default model worse on a*b
    (6 of seeds 0-15 solved against 12): it drives the two units' exponents apart.
    """
    if optimizer == "adam":
        return [() for _ in params]
    first = tuple(name for name, value in params[0].items() if value.shape.rank == 3 and value.shape[1] > 1)
    return [first] + [() for _ in params[1:]]


def _adam_step(params, grads, m, v, mc, vc, step_size):
    """One Adam step (Keras form); for the weights in `mc`, split-adam.

    Split-adam: a weight matrix's gradient G is split into its mean over the input axis,
    C = mean_i G_ij, and the rest G - C; each part has its own first and second moments,
    and the step is the sum of the two Adam steps. Inputs that share a mean (U[1, 2] has
    mean 1.5 on every coordinate) put one large common term C in every input's gradient;
    plain Adam divides the informative rest by that term's size, so the differences that
    tell the inputs apart move at a tiny fraction of the learning rate. Split, each part
    moves at the learning rate.
    """
    import tensorflow as tf

    def moments(m_, v_, g):
        m_ = ADAM_BETA_1 * m_ + (1 - ADAM_BETA_1) * g
        v_ = ADAM_BETA_2 * v_ + (1 - ADAM_BETA_2) * g * g
        return m_, v_, m_ / (tf.sqrt(v_) + ADAM_EPSILON)

    new = [({}, {}, {}, {}, {}) for _ in params]
    for layer, (p_l, g_l, m_l, v_l, mc_l, vc_l) in enumerate(zip(params, grads, m, v, mc, vc)):
        out_p, out_m, out_v, out_mc, out_vc = new[layer]
        for name, p in p_l.items():
            g, direction = g_l[name], 0.0
            if name in mc_l:
                common = tf.reduce_mean(g, axis=-2, keepdims=True)
                g = g - common
                out_mc[name], out_vc[name], direction = moments(mc_l[name], vc_l[name], common)
            out_m[name], out_v[name], rest = moments(m_l[name], v_l[name], g)
            out_p[name] = p - _per_replica(step_size, p) * (rest + direction)
    return tuple([layer[k] for layer in new] for k in range(5))


def _to_numpy(params) -> list[dict]:
    return [{name: value.numpy() for name, value in layer.items()} for layer in params]


def _replica_picker(params_numpy: list[dict]):
    """r -> replica r's weights, from weights (numpy) with a leading replica axis."""
    return lambda r: [{name: value[r] for name, value in layer.items()} for layer in params_numpy]


def _can_snap(layers, params) -> bool:
    """Whether every layer has an exact discrete form (`snap` raises NotImplementedError otherwise)."""
    try:
        for layer, layer_params in zip(layers, params):
            layer.snap(**layer_params)
    except NotImplementedError:
        return False
    return True


def _per_replica(values, like):
    """A [R] vector shaped to broadcast over a [R, ...] tensor (scalars pass through)."""
    import tensorflow as tf

    if values.shape.rank == 0:
        return values
    return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))


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
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Train one model as `config` says, writing the run directory `out`; returns the summary.

    `should_stop` is asked between chunks: when it says yes, the run is checkpointed,
    its selected model saved, and the summary says stop_reason "interrupted"
    (continue it with `resume`). A failure before the run exists leaves any old
    run directory (moved aside for --overwrite) back in place.
    """
    out = Path(out)
    backup = prepare_output(out, overwrite, kind="run")
    try:
        out.mkdir(parents=True)
    except FileExistsError:  # another process created it since the check
        restore_backup(out, backup)
        raise NaluError(f"{out} already exists; pass --overwrite to replace it") from None
    try:
        with run_lock(out):
            atomic_write_text(out / CONFIG_FILE, dump_yaml(config))
            summary = _run(config, out, on_progress, should_stop)
    except BaseException:
        restore_backup(out, backup)
        raise
    discard_backup(backup)
    return summary


def resume(
    out: Path,
    steps: int | None = None,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Continue an interrupted run from its last checkpoint; ends where an uninterrupted run would."""
    out = Path(out)
    if not out.exists():
        raise NaluError(f"no such run directory: {out}")
    if not is_run_dir(out):
        raise NaluError(f"{out} is not a nalu run directory")
    if not (out / CHECKPOINT_DIR / "state.json").is_file():
        raise NaluError(f"run {out} has no checkpoint to resume from")
    config = resolve(load_yaml(out / CONFIG_FILE))
    if steps is not None:
        config = resolve(config.to_dict(), {"training": {"steps": steps}})
    with run_lock(out):
        atomic_write_text(out / CONFIG_FILE, dump_yaml(config))
        return _run(config, out, on_progress, should_stop, resume_from=out / CHECKPOINT_DIR)


def _run(config: Config, out: Path, on_progress, should_stop, resume_from: Path | None = None) -> dict:
    import tensorflow as tf

    from nalu_cli.model import set_params

    started = time.perf_counter()
    training = config.training
    replicas = Replica.with_restarts(config, config.seed)
    if len(replicas) <= ONE_THREAD_MAX_MODELS:
        use_one_thread(tf)
    replica = replicas[0]
    trainer = ReplicaTrainer(config.model, training, replicas)
    everyone = [list(range(len(replicas)))]
    previous_seconds = 0.0
    if resume_from is not None:
        arrays, scalars = read_checkpoint(resume_from)
        trainer.load_state(arrays, scalars)
        previous_seconds = float(scalars.get("train_seconds", 0.0))
        _truncate_metrics(out / METRICS_FILE, trainer.step)
    threshold = float(trainer.thresholds[0])
    writer = tf.summary.create_file_writer(str(out / TENSORBOARD_DIR))
    train_started = time.perf_counter()
    metrics = open(out / METRICS_FILE, "a")

    def seconds_so_far() -> float:
        return previous_seconds + time.perf_counter() - train_started

    def on_eval(step, entries, results):
        chosen = trainer.chosen(everyone[0])
        entry = {
            **entries[chosen],
            **({"restart": chosen} if len(replicas) > 1 else {}),
            "success_threshold": threshold,
            "elapsed_seconds": round(seconds_so_far(), 4),
            "steps_per_second": step / (seconds_so_far() - trainer.polish_seconds) if step else 0.0,
        }
        metrics.write(json.dumps(_jsonable_tree(entry)) + "\n")
        metrics.flush()
        arrays, scalars = trainer.state()
        write_checkpoint(out / CHECKPOINT_DIR, arrays, {**scalars, "train_seconds": seconds_so_far()})
        with writer.as_default(step=step):
            for key in ("loss", "interpolation_mse", "extrapolation_mse"):
                if entry[key] is not None and math.isfinite(entry[key]):
                    tf.summary.scalar(key, entry[key])
        if on_progress:
            on_progress({**entry, "total_steps": training.steps})

    try:
        results = trainer.fit(training.steps, training.eval_every, training.early_stop, on_eval, should_stop, everyone)
        chosen = trainer.chosen(everyone[0])
        result = results[chosen]
    finally:
        metrics.close()
        writer.close()
    train_seconds = seconds_so_far()
    step_seconds = train_seconds - trainer.polish_seconds

    set_params(trainer.model, result.selected_params)
    with atomic_path(out / KERAS_FILE) as tmp:
        trainer.model.save(str(tmp))
    meta = make_meta(replica.spec.to_dict(), config.to_dict()["model"], selected_step=result.selected_step)
    write_saved_model(trainer.model, meta, out / SAVED_MODEL_DIR)

    success = bool(result.extrapolation_mse < threshold)
    if trainer.interrupted:
        stop_reason = "interrupted"
    elif result.diverged_at_step is not None:
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
        "selected_snapped": result.snapped,
        "selected_polished": result.polished,
        "interpolation_mse": result.interpolation_mse,
        "extrapolation_mse": result.extrapolation_mse,
        "success_threshold": threshold,
        "success": success,
        "solved_at_step": result.solved_at_step,
        "diverged_at_step": result.diverged_at_step,
        "divergence_events": int(trainer.divergence_events.sum()),
        "restarts": len(replicas),
        "chosen_restart": chosen,
        "train_seconds": round(train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "polish_seconds": round(trainer.polish_seconds, 3),
        # Training steps per second: the polish step's time is not spent on training steps.
        "steps_per_second": round(trainer.step / step_seconds, 1) if step_seconds > 0 else None,
    }
    atomic_write_text(out / SUMMARY_FILE, json.dumps(_jsonable_tree(summary), indent=2) + "\n")
    return summary


def write_checkpoint(path: Path, arrays: dict, scalars: dict) -> None:
    """Atomically replace the checkpoint directory: a crash leaves the old one or the new one, whole."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        np.savez(tmp / "state.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps(_jsonable_tree(scalars)))


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    try:
        with np.load(path / "state.npz") as data:
            arrays = {key: data[key] for key in data.files}
        scalars = json.loads((path / "state.json").read_text())
    except (OSError, ValueError, KeyError) as error:
        raise NaluError(f"checkpoint {path} is unreadable: {error}") from None
    return arrays, scalars


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines past the checkpoint (written after it, before a hard kill)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _jsonable_tree(value):
    """JSON has no inf/NaN (written as null) and no numpy scalars."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable_tree(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
