"""The replica trainer: R independent models in one process, one compiled graph per architecture.

A model's Keras layers hold the weights for saving and export; training runs their pure
functions (`forward`, `regularizer`, `clip`, `snap`) on parameter tensors with a leading
replica axis. Replica r is exactly the model `nalu train --seed s_r` trains alone: its own
initialisation, task slices and data stream. A single model is R = 1, so there is one
training path. A trainer has one `Architecture` per member of the model (a named unit one,
a portfolio several, see architecture.py); selection is over all of them at once. The
trainer composes the pieces, each in its own module: `step` (the compiled chunk),
`evaluate`, `polish`, `selection`, `checkpoint`; callbacks (`callbacks.RunWriter`) see
every evaluation.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import tensorflow as tf

from nalu_cli import thresholds
from nalu_cli._tf import release_freed_memory
from nalu_cli.config import ModelConfig, TrainingConfig
from nalu_cli.training import optimizer, selection
from nalu_cli.training.architecture import Architecture, Graphs, Member
from nalu_cli.training.checkpoint import Checkpoint
from nalu_cli.training.evaluate import to_numpy
from nalu_cli.training.replicas import Replica
from nalu_cli.training.step import TrainState


class ReplicaTrainer:
    """Trains R replicas at once, of one architecture or several; replica r matches training it alone."""

    def __init__(self, model_config: ModelConfig, training: TrainingConfig, replicas: list[Replica]):
        """R replicas of one architecture; `ReplicaTrainer.of(members)` for several."""
        self._build([Member(model_config, training, list(replicas))])

    @classmethod
    def of(cls, members: list[Member], graphs: Graphs | None = None) -> "ReplicaTrainer":
        """The members' replicas, in order (member 0's first), each member with its own architecture and
        settings. `graphs`: a process's graphs, kept for later trainers (see architecture.Graphs)."""
        trainer = cls.__new__(cls)
        trainer._build(members, graphs)
        return trainer

    def _build(self, members: list[Member], graphs: Graphs | None = None) -> None:
        if not members or not all(member.replicas for member in members):
            raise ValueError("need at least one replica per member")
        self.architectures, start, sets = [], 0, {}
        for member in members:
            self.architectures.append(Architecture(member, slice(start, start + len(member.replicas)), sets, graphs))
            start += len(member.replicas)
        self.replicas = [replica for member in members for replica in member.replicas]
        self.status = selection.ReplicaStatus.start(len(self.replicas))
        self.results = [selection.ReplicaResult() for _ in self.replicas]
        self.step, self.polish_seconds, self.interrupted = 0, 0.0, False
        self.thresholds = np.array([thresholds.success_threshold(r.spec) for r in self.replicas])
        self._evaluated = False  # whether step 0 has been evaluated (fit does it once)

    def architecture(self, index: int) -> Architecture:
        """The architecture replica `index` belongs to."""
        return next(a for a in self.architectures if a.indices.start <= index < a.indices.stop)

    # -- the four things a trainer does: step, evaluate, polish, and (in selection) select ------
    def train(self, n: int, should_stop: Callable[[], bool] | None = None) -> np.ndarray | None:
        """n steps for every active replica; returns each replica's mean loss over them (NaN for
        an architecture none of whose replicas is active: it is not run).

        A replica whose loss or weights go non-finite never keeps that state: it is restored to
        where the chunk began and learns at half the rate from the next chunk; after
        selection.MAX_DIVERGENCE_EVENTS such chunks it is frozen at its last good state.
        `should_stop` is asked about every step.CALL_SECONDS: when it says yes, the n steps are
        abandoned, the trainer is left as it was, and train returns None.
        """
        jobs = [arch for arch in self.architectures if self.status.active[arch.indices].any()]

        def run(arch):
            ix = arch.indices
            return arch.chunk(self.step, n, arch.state, self.status.active[ix], self.status.lr_scale[ix], should_stop)

        if len(jobs) > 1:  # each architecture is its own graph: stepped side by side, one Python thread each
            # but compiled one at a time: two XLA compilations at once raised a recurrent run's peak
            # memory by about 90 MiB (README, "Speed and memory").
            if not all(arch.chunk.compiled for arch in jobs):
                for arch in jobs:
                    arch.chunk.compile(arch.state, self.status.lr_scale[arch.indices])
                release_freed_memory()
            with ThreadPoolExecutor(len(jobs), thread_name_prefix="architecture") as pool:
                outcomes = list(pool.map(run, jobs))
        else:
            outcomes = [run(arch) for arch in jobs]
        if any(outcome is None for outcome in outcomes):
            return None
        losses, finite = np.full(len(self.replicas), np.nan, np.float32), np.ones(len(self.replicas), bool)
        for arch, outcome in zip(jobs, outcomes):
            arch.state, losses[arch.indices], finite[arch.indices] = outcome
        self.step += n
        selection.record_divergence(self.status, finite, self.results, self.step)
        return losses

    def evaluate_and_select(self, losses: np.ndarray) -> list[dict]:
        """Every architecture's candidates (the weights, snapped, and polished when due) scored and
        selected from; returns one metrics entry per replica."""
        rows = []
        for arch in self.architectures:
            candidates = arch.evaluate(arch.state.params)
            # Stopped replicas take no polished candidates (selection.eligible): none active, no polish.
            if arch.polish_due(self.step) and self.status.active[arch.indices].any():
                started = time.perf_counter()
                polished = arch.polish(arch.state.params)  # eager call: returns once computed
                self.polish_seconds += time.perf_counter() - started
                candidates += arch.evaluate(polished, polished=True)
            ix = arch.indices
            results = self.results[ix]  # the same ReplicaResult objects; the status arrays' views
            status = selection.ReplicaStatus(self.status.active[ix], self.status.lr_scale[ix], self.status.divergence_events[ix])
            selection.select(results, candidates, status.active, self.step)
            rows += selection.entries(results, candidates, status, losses[ix], self.step)
        return rows

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
            entries = self.evaluate_and_select(losses)
            if not self._evaluated:  # the evaluators have just compiled
                release_freed_memory()
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
        arch = self.architecture(index)
        return [{name: value[index - arch.indices.start] for name, value in layer.items()}
                for layer in to_numpy(arch.state.params)]

    def sparsity_error(self, index: int, params: list[dict]) -> float:
        """max over weights of min(|W|, |1 - |W||) for replica `index`'s parameters `params`."""
        return self.architecture(index).sparsity_error(params)

    # -- checkpoints ---------------------------------------------------------------------------
    def _trees(self) -> dict:
        """params and every moment, each one list of layers: the architectures' layers one after another."""
        states = [arch.state for arch in self.architectures]
        trees = {"params": [layer for state in states for layer in state.params]}
        for kind in optimizer.AdamState._fields:
            trees[kind] = [layer for state in states for layer in getattr(state.optimizer, kind)]
        return trees

    def checkpoint(self) -> Checkpoint:
        """Everything needed to continue exactly (see checkpoint.py)."""
        trees = {kind: to_numpy(tree) for kind, tree in self._trees().items()}
        return Checkpoint(trees, self.status, self.results, self.step, self.polish_seconds)

    def restore(self, arrays: dict, scalars: dict) -> None:
        """Continue from `checkpoint().arrays_and_scalars()` as written by an earlier run of the same config."""
        like = self._trees()
        selected_like = [self.architecture(r).state.params for r in range(len(self.replicas))]
        saved = Checkpoint.from_arrays_and_scalars(arrays, scalars, like, selected_like)
        trees = {kind: tf.nest.map_structure(tf.constant, tree) for kind, tree in saved.trees.items()}
        start = 0
        for arch in self.architectures:
            layers = slice(start, start + len(arch.layers))
            moments = optimizer.AdamState(**{kind: trees[kind][layers] for kind in optimizer.AdamState._fields})
            arch.state = TrainState(trees["params"][layers], moments)
            start = layers.stop
        self.status, self.results, self.step = saved.status, saved.results, saved.step
        self.polish_seconds = saved.polish_seconds
        self._evaluated = True
