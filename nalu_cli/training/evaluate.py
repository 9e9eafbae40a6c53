"""Evaluation during training: every replica's MSE on its validation and test sets, in one graph call.

The validation (interpolation) set selects; the test (extrapolation) set is only recorded.
With snapping, the same call also scores each replica's weights rounded to their exact
values (each unit's `snap`), a second selection candidate.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nalu_cli import tasks
from nalu_cli.training.selection import Candidate

SPLITS = (("interpolation", tasks.validation_set), ("extrapolation", tasks.test_set))


def can_snap(layers, params) -> bool:
    """Whether every layer has an exact discrete form (`snap` raises NotImplementedError otherwise)."""
    try:
        for layer, layer_params in zip(layers, params):
            layer.snap(**layer_params)
    except NotImplementedError:
        return False
    return True


def make_evaluator(forward, layers, specs: list, snap: bool):
    """evaluate(params, polished=False) -> [Candidate for the weights, and for them snapped if `snap`].

    `forward(params, x)` is the model's pure forward pass; `specs` the replicas' tasks.
    """
    single = len(specs) == 1
    sets = {}
    for name, make in SPLITS:
        pairs = [make(spec) for spec in specs]
        sets[name] = (tf.constant(np.stack([x for x, _ in pairs])), tf.constant(np.stack([y for _, y in pairs])))

    def errors_of(params):
        errors = {}
        for name, (x, y) in sets.items():
            if single:
                params_, x, y = tf.nest.map_structure(lambda t: t[0], params), x[0], y[0]
            else:
                params_ = params
            mse = tf.reduce_mean(tf.square(forward(params_, x) - y), axis=(-2, -1))
            errors[name] = tf.reshape(mse, [-1])
        return errors

    @tf.function(autograph=False)
    def scores(params):
        scored = [(params, errors_of(params))]
        if snap:
            snapped = [layer.snap(**p) for layer, p in zip(layers, params)]
            scored.append((snapped, errors_of(snapped)))
        return scored

    def evaluate(params, polished: bool = False) -> list[Candidate]:
        return [
            Candidate(
                interpolation=errors["interpolation"].numpy().astype(np.float64),
                extrapolation=errors["extrapolation"].numpy().astype(np.float64),
                params=to_numpy(weights),
                snapped=bool(index),
                polished=polished,
            )
            for index, (weights, errors) in enumerate(scores(params))
        ]

    return evaluate


def to_numpy(params) -> list[dict]:
    return [{name: value.numpy() for name, value in layer.items()} for layer in params]
