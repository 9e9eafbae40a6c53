"""One architecture's replicas inside the trainer: their weights, optimiser state and compiled pieces.

A trainer holds one `Architecture` per member of its model (a named unit has one, a portfolio
several). Each has the template Keras model whose layers' pure functions run its replicas, the
replicas' state with a leading replica axis, and its own compiled chunk, evaluator and polish:
architectures differ in their weights' shapes, so each compiles its own graph.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nalu_cli.model import build_model, forward, get_params, unit_layers
from nalu_cli.training import optimizer
from nalu_cli.training.evaluate import can_snap, make_evaluator
from nalu_cli.training.polish import make_polish
from nalu_cli.training.replicas import Member
from nalu_cli.training.step import ChunkRunner, TrainState, make_chunk, recurrent_row_scales


class Architecture:
    """A member's replicas in a trainer, at `indices` among the trainer's replicas."""

    def __init__(self, member: Member, indices: slice, shared_sets: dict | None = None):
        """`shared_sets`: see evaluate.make_evaluator (one dict for a trainer's architectures)."""
        replicas, training = member.replicas, member.training
        shapes = {(r.spec.kind, r.spec.input_size) for r in replicas}
        if len(shapes) != 1:
            raise ValueError(f"replicas must share one task kind and input size, got {sorted(shapes)}")
        (kind, input_size), = shapes
        self.model_config, self.training, self.replicas, self.indices = member.model, training, replicas, indices
        models = [build_model(member.model, input_size, seed=r.init_seed, kind=kind) for r in replicas]
        self.model = models[0]  # the template whose layers' pure functions run every replica
        self.layers = unit_layers(self.model)
        params = tf.nest.map_structure(lambda *leaves: tf.constant(np.stack(leaves)), *[get_params(m) for m in models])
        self.state = TrainState(params, optimizer.init(params, optimizer.split_weights(params, training.optimizer)))
        specs = [r.spec for r in replicas]
        self.chunk = ChunkRunner(make_chunk(self.forward, self.layers, replicas, training))
        self.snap_selection = training.snap_selection and can_snap(self.layers, params)
        self.evaluate = make_evaluator(self.forward, self.layers, specs, self.snap_selection, shared=shared_sets)
        self.polish = None  # params -> params, when this member polishes
        if training.polish_every:
            # The held polish also holds what training holds (a recurrence at recurrent_step_scale 0).
            held_rows = recurrent_row_scales(self.layers, training, replicas) if training.polish_hold else None
            self.polish = make_polish(self.forward, self.layers, params, specs, training.polish_iterations,
                                      hold=training.polish_hold, row_scales=held_rows)

    def forward(self, params, x):
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
