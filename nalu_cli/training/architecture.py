"""One architecture's replicas inside the trainer: their weights, optimiser state and compiled pieces.

A trainer holds one `Architecture` per member of its model (a named unit has one, a portfolio
several). Each has the template Keras model whose layers' pure functions run its replicas, the
replicas' state with a leading replica axis, and its own compiled chunk, evaluator and polish:
architectures differ in their weights' shapes, so each compiles its own graph.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from nalu_cli.model import build_model, forward, get_params, initial_params, unit_layers
from nalu_cli.training import optimizer
from nalu_cli.training.evaluate import can_snap, make_evaluator
from nalu_cli.training.polish import make_polish
from nalu_cli.training.replicas import Member
from nalu_cli.training.step import ChunkRunner, TrainState, make_chunk, recurrent_row_scales, streams


class Architecture:
    """A member's replicas in a trainer, at `indices` among the trainer's replicas."""

    def __init__(self, member: Member, indices: slice, shared_sets: dict | None = None, graphs: dict | None = None):
        """`shared_sets`: see evaluate.make_evaluator (one dict for a trainer's architectures).
        `graphs`: graphs made by earlier architectures in the process (see `graph_reuse`), or None."""
        replicas, training = member.replicas, member.training
        shapes = {(r.spec.kind, r.spec.input_size) for r in replicas}
        if len(shapes) != 1:
            raise ValueError(f"replicas must share one task kind and input size, got {sorted(shapes)}")
        (kind, input_size), = shapes
        self.model_config, self.training, self.replicas, self.indices = member.model, training, replicas, indices
        # The template whose layers' pure functions run every replica; the other replicas' initial
        # weights are those their own models would have, drawn without building them.
        self.model = build_model(member.model, input_size, seed=replicas[0].init_seed, kind=kind)
        self.layers = unit_layers(self.model)
        initial = [get_params(self.model)] + [initial_params(member.model, input_size, r.init_seed, kind)
                                              for r in replicas[1:]]
        params = tf.nest.map_structure(lambda *leaves: tf.constant(np.stack(leaves)), *initial)
        split = optimizer.split_weights(params, training.optimizer)
        self.state = TrainState(params, optimizer.init(params, split, hidden=training.hidden_split_start is not None))
        specs = [r.spec for r in replicas]
        # The graphs below close over the template model, not over this architecture and its sets.
        pure_forward = functools.partial(forward, self.model)
        reuse = graph_reuse(graphs, member)
        make = lambda: make_chunk(pure_forward, self.layers, replicas, training)  # noqa: E731
        # One replica's chunk draws its stream from constants (step.make_chunk): its own.
        self.chunk = ChunkRunner(make() if len(replicas) == 1 else reuse(("chunk",), make), streams=streams(replicas))
        self.snap_selection = training.snap_selection and can_snap(self.layers, params)
        self.evaluate = make_evaluator(pure_forward, self.layers, specs, self.snap_selection, shared=shared_sets,
                                       reuse=reuse)
        self.polish = None  # params -> params, when this member polishes
        if training.polish_every:
            # The held polish also holds what training holds (a recurrence at recurrent_step_scale 0).
            held_rows = recurrent_row_scales(self.layers, training, replicas) if training.polish_hold else None
            self.polish = make_polish(pure_forward, self.layers, params, specs, training.polish_iterations,
                                      hold=training.polish_hold, row_scales=held_rows,
                                      reuse=reuse)

    def forward(self, params, x):
        """The template model's pure forward pass with `params`."""
        return forward(self.model, params, x)

    def polish_due(self, step: int) -> bool:
        """Whether this member polishes at `step`: every polish_every steps, the first polish_limit times."""
        every, limit = self.training.polish_every, self.training.polish_limit
        return (self.polish is not None and step > 0 and step % every == 0
                and (limit is None or step // every <= limit))

    def sparsity_error(self, params: list[dict]) -> float:
        """max over weights of min(|W|, |1 - |W||) for one replica's parameters (0 if the units have none)."""
        errors = [float(np.asarray(layer.sparsity_error(**p))) for layer, p in zip(self.layers, params)]
        return max(errors, default=0.0)


class Graphs(dict):
    """Traced and compiled graphs kept for later trainers of the same architectures in a process
    (a benchmark worker trains group after group of seeds of one cell).

    A trainer's chunk, evaluation and polish take what differs between seeds as arguments (the
    streams' keys and slices; the evaluation and polish sets), so a later group of seeds of the
    same architecture, settings and task (op, input shape, range) runs on the same graphs and
    skips their tracing and XLA compilation (about 1.5 s for the default model). Whoever keeps
    a `Graphs` decides how long: each graph holds its XLA executables and its template model."""

    def get_or_make(self, key, make):
        if key not in self:
            self[key] = make()
        return self[key]


def graph_reuse(graphs: Graphs | None, member: Member):
    """reuse(key, make) -> `make()`, or the graph `key` (a tuple: what it is) made before for
    `member`'s architecture, settings and task (op, input shape, range) at this replica count (none is kept without `graphs`)."""
    spec = member.replicas[0].spec
    signature = (repr(member.model), repr(member.training), spec.op, spec.kind, spec.shape(), spec.interpolation_range,
                 len(member.replicas))

    def reuse(key, make):
        return make() if graphs is None else graphs.get_or_make((*key, *signature), make)

    return reuse
