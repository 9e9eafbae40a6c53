"""The replica trainer: R independent models of one architecture in one compiled graph.

The model's Keras layers hold the weights for saving and export; training runs their
pure functions (`forward`, `regularizer`, `clip`, `snap`) on parameter tensors with a
leading replica axis. Replica r is exactly the model `nalu train --seed s_r` trains
alone: its own initialisation, task slices and data stream. A single model is R = 1, so
there is one training path. The trainer composes the pieces, each in its own module:
`step` (the compiled chunk), `evaluate`, `polish`, `selection`, `checkpoint`; callbacks
(`callbacks.RunWriter`) see every evaluation.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import tensorflow as tf

from nalu_cli import tasks
from nalu_cli.config import ModelConfig, TrainingConfig
from nalu_cli.model import build_model, forward, get_params, unit_layers
from nalu_cli.training import optimizer, selection
from nalu_cli.training.checkpoint import Checkpoint
from nalu_cli.training.evaluate import can_snap, make_evaluator, to_numpy
from nalu_cli.training.polish import make_polish
from nalu_cli.training.replicas import Replica
from nalu_cli.training.step import ChunkRunner, TrainState, make_chunk


class ReplicaTrainer:
    """Trains R replicas of one architecture at once; replica r matches training it alone."""

    def __init__(self, model_config: ModelConfig, training: TrainingConfig, replicas: list[Replica]):
        if not replicas:
            raise ValueError("need at least one replica")
        shapes = {(r.spec.kind, r.spec.input_size) for r in replicas}
        if len(shapes) != 1:
            raise ValueError(f"replicas must share one task kind and input size, got {sorted(shapes)}")
        (kind, self.input_size), = shapes
        self.replicas, self.training = list(replicas), training
        models = [build_model(model_config, self.input_size, seed=r.init_seed, kind=kind) for r in replicas]
        self.model = models[0]  # the template whose layers' pure functions run every replica
        self.layers = unit_layers(self.model)
        params = tf.nest.map_structure(lambda *leaves: tf.constant(np.stack(leaves)), *[get_params(m) for m in models])
        self.state = TrainState(params, optimizer.init(params, optimizer.split_weights(params, training.optimizer)))
        self.status = selection.ReplicaStatus.start(len(replicas))
        self.results = [selection.ReplicaResult() for _ in replicas]
        self.step, self.polish_seconds, self.interrupted = 0, 0.0, False
        self.thresholds = np.array([tasks.success_threshold(r.spec) for r in replicas])
        specs = [r.spec for r in replicas]
        self._chunk = ChunkRunner(make_chunk(self.forward, self.layers, self.replicas, training))
        self.snap_selection = training.snap_selection and can_snap(self.layers, params)
        self._evaluate = make_evaluator(self.forward, self.layers, specs, self.snap_selection)
        self._polish = None
        if training.polish_every:
            self._polish = make_polish(self.forward, self.layers, params, specs, training.polish_iterations)
        self._evaluated = False  # whether step 0 has been evaluated (fit does it once)

    def forward(self, params, x):
        return forward(self.model, params, x)

    # -- the four things a trainer does: step, evaluate, polish, and (in selection) select ------
    def train(self, n: int, should_stop: Callable[[], bool] | None = None) -> np.ndarray | None:
        """n steps for every active replica; returns each replica's mean loss over them.

        A replica whose loss or weights go non-finite never keeps that state: it is restored to
        where the chunk began and learns at half the rate from the next chunk; after
        selection.MAX_DIVERGENCE_EVENTS such chunks it is frozen at its last good state.
        `should_stop` is asked about every step.CALL_SECONDS: when it says yes, the n steps are
        abandoned, the trainer is left as it was, and train returns None.
        """
        ran = self._chunk(self.step, n, self.state, self.status.active, self.status.lr_scale, should_stop)
        if ran is None:
            return None
        self.state, losses, finite = ran
        self.step += n
        selection.record_divergence(self.status, finite, self.results, self.step)
        return losses

    def evaluate(self, params=None, polished: bool = False) -> list[selection.Candidate]:
        """The weights (default: the current ones) scored on every replica's validation and test
        sets, and their snapped form with snap_selection: the selection candidates they make."""
        return self._evaluate(self.state.params if params is None else params, polished)

    def polish(self) -> list:
        """Every replica's current weights after the polish step (see polish.py); the state is unchanged."""
        started = time.perf_counter()
        polished = self._polish(self.state.params)  # eager call: returns once computed
        self.polish_seconds += time.perf_counter() - started
        return polished

    def polish_due(self) -> bool:
        return self._polish is not None and self.step > 0 and self.step % self.training.polish_every == 0

    # -- composing them ------------------------------------------------------------------------
    def fit(
        self,
        steps: int,
        eval_every: int,
        early_stop: bool,
        callbacks: tuple = (),
        should_stop: Callable[[], bool] | None = None,
        groups: list[list[int]] | None = None,
    ) -> list[selection.ReplicaResult]:
        """Train up to `steps`, evaluating every `eval_every`; per replica keep the lowest-interpolation checkpoint.

        With early_stop, a replica stops once its selected checkpoint meets the success criterion.
        `groups` are restarts of one model: a group's model is its member with the lowest
        interpolation MSE (`chosen`), and the whole group stops once that one succeeds.
        `should_stop` is asked about every step.CALL_SECONDS (an interrupt): the steps since the
        last evaluation are abandoned and `self.interrupted` says so; the trainer is as that
        evaluation left it (the run's last checkpoint). Each callback's
        `on_evaluation(trainer, entries)` sees every evaluation.
        Calling fit again, or after `restore`, continues where the last call ended.
        """
        started = time.perf_counter()
        self.interrupted = False
        groups = groups or [[r] for r in range(len(self.replicas))]
        # Losses of the chunk awaiting evaluation; the starting weights are evaluated once, before any chunk.
        losses = None if self._evaluated else np.full(len(self.replicas), np.nan)
        while losses is not None or (self.step < steps and self.status.active.any()):
            if losses is None:
                if should_stop and should_stop():
                    self.interrupted = True
                    return self.results
                losses = self.train(min(eval_every, steps - self.step), should_stop)
                if losses is None:
                    self.interrupted = True
                    return self.results
            candidates = self.evaluate()
            if self.polish_due():
                candidates += self.evaluate(self.polish(), polished=True)
            selection.select(self.results, candidates, self.status.active, self.step)
            entries = selection.entries(self.results, candidates, self.status, losses, self.step)
            selection.mark_solved(self.results, self.thresholds, self.step, time.perf_counter() - started)
            selection.stop(self.results, self.status, self.thresholds, groups, early_stop, self.step)
            self._evaluated, losses = True, None
            for callback in callbacks:
                callback.on_evaluation(self, entries)
        selection.mark_stopped(self.results, np.zeros(len(self.results), bool), self.step)
        return self.results

    def chosen(self, group: list[int]) -> int:
        """The member of a group of restarts with the lowest interpolation MSE."""
        return selection.chosen(self.results, group)

    # -- reading the weights -------------------------------------------------------------------
    def replica_params(self, index: int) -> list[dict]:
        """One replica's current weights, as numpy."""
        return [{name: value[index] for name, value in layer.items()} for layer in to_numpy(self.state.params)]

    def sparsity_error(self, params: list[dict]) -> float:
        """max over weights of min(|W|, |1 - |W||) for one replica's parameters (0 if the units have none)."""
        errors = [float(np.asarray(layer.sparsity_error(**p))) for layer, p in zip(self.layers, params)]
        return max(errors, default=0.0)

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        """Everything needed to continue exactly (see checkpoint.py)."""
        params, moments = self.state
        trees = {"params": params, **moments._asdict()}
        return Checkpoint({kind: to_numpy(tree) for kind, tree in trees.items()}, self.status, self.results,
                          self.step, self.polish_seconds)

    def restore(self, arrays: dict, scalars: dict) -> None:
        """Continue from `checkpoint().arrays_and_scalars()` as written by an earlier run of the same config."""
        params, moments = self.state
        saved = Checkpoint.from_arrays_and_scalars(arrays, scalars, like={"params": params, **moments._asdict()})
        trees = {kind: tf.nest.map_structure(tf.constant, tree) for kind, tree in saved.trees.items()}
        self.state = TrainState(trees.pop("params"), optimizer.AdamState(**trees))
        self.status, self.results, self.step = saved.status, saved.results, saved.step
        self.polish_seconds = saved.polish_seconds
        self._evaluated = True
