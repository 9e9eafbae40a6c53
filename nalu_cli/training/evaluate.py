"""Evaluation during training: every replica's MSE on its validation and test sets, in one graph call.

The validation (interpolation) set selects; the test (extrapolation) set is only recorded.
With snapping, the same call also scores each replica's weights rounded to their exact
values (each unit's `snap`, or on the static task an exact form derived from the weights where its
interpolation MSE is lower: training/forms.py), a second selection candidate.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nalu_cli import tasks
from nalu_cli.training.forms import FORM_SAMPLES, best_form, power_forms, sum_forms
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


def make_evaluator(forward, layers, specs: list, snap: bool, jit_compile: bool | None = None,
                   shared: dict | None = None, reuse=None):
    """evaluate(params, polished=False) -> [Candidate for the weights, and for them snapped if `snap`].

    `forward(params, x)` is the model's pure forward pass; `specs` the replicas' tasks.
    `jit_compile`: whether XLA compiles the evaluation; None: for recurrent tasks only (below).
    `shared`: a dict the evaluators of one trainer pass in, so that architectures with the same
    replicas' tasks hold one copy of the sets (a recurrent test set is 40 MB).
    `reuse(key, make)`: returns a graph `make()` made before for the same architecture, if any
    (`Architecture`); the graph takes the sets as an argument.
    """
    _, per_group = shared_layout(specs)
    shared = {} if shared is None else shared
    key = (tuple(specs[::per_group]), per_group)
    if key not in shared:
        shared[key] = evaluation_sets(specs[::per_group], per_group)
    sets = shared[key]
    # A recurrent test set runs a loop of extrapolation_length steps, op by op without XLA: an
    # evaluation of the default model's 6 replicas (T = 1,000, with snapping) took 0.95 s, compiled
    # 0.36 s (benchmarks/evaluation.py, idle machine). A static evaluation takes 25 ms (11 compiled):
    # it stays uncompiled, so its numbers stay bit for bit those recorded in tests/data/golden_runs.json.
    if jit_compile is None:
        jit_compile = any(spec.recurrent for spec in specs)
    # A recurrent cell is not a sum of its inputs: the forms derived from the weights are the static task's.
    derived = not any(spec.recurrent for spec in specs)
    make = lambda: make_scores(forward, layers, snap, len(specs) == 1, per_group, jit_compile, derived)  # noqa: E731
    scores = make() if reuse is None else reuse(("scores", per_group, jit_compile, derived), make)

    def evaluate(params, polished: bool = False) -> list[Candidate]:
        return [
            Candidate(
                interpolation=errors["interpolation"].numpy().astype(np.float64),
                extrapolation=errors["extrapolation"].numpy().astype(np.float64),
                params=to_numpy(weights),
                snapped=bool(index),
                polished=polished,
            )
            for index, (weights, errors) in enumerate(scores(params, sets))
        ]

    evaluate.sets = sets
    return evaluate


def make_scores(forward, layers, snap: bool, single: bool, per_group: int, jit_compile: bool, derived: bool = False):
    """scores(params, sets) -> [(params, {split: MSE [R]})], and the snapped params' if `snap`:
    the graph an evaluator runs, for any sets of the layout (`shared_layout`) `single`, `per_group`.
    The snapped params are each unit's `snap`, or with `derived` an exact form derived from the
    model's weights (training/forms.py) where that has the lower interpolation MSE."""

    def laid_out(tree, x, y, leading: int = 0):
        """`tree` ([R, ...] tensors, after `leading` axes of their own) and a set's x, y in the
        layout the forward pass takes."""
        if single:
            return tf.nest.map_structure(lambda t: t[(slice(None),) * leading + (0,)], tree), x[0], y[0]
        if per_group > 1:
            def grouped(t):
                return tf.reshape(t, [*t.shape[:leading], -1, per_group, *t.shape[leading + 1:]])

            return tf.nest.map_structure(grouped, tree), x, y
        return tree, x, y

    def errors_of(params, sets, leading: int = 0):
        """{split: MSE [R]} of params [R, ...]; with leading=1, [F, R] of F stacked params [F, R, ...]."""
        errors = {}
        for name, (x, y) in sets.items():
            params_, x, y = laid_out(params, x, y, leading)
            mse = tf.reduce_mean(tf.square(forward(params_, x) - y), axis=(-2, -1))
            errors[name] = tf.reshape(mse, [*mse.shape[:leading], -1])
        return errors

    def best_derived(params, snapped, interpolation):
        """Per model, `snapped` or an exact form derived from `params` (training/forms.py), whichever
        has the lower MSE on the first FORM_SAMPLES interpolation samples: the test set is never
        compared. The forms are scored in one forward pass, stacked on a leading axis."""
        choosing = tuple(t[..., :FORM_SAMPLES, :] for t in interpolation)
        forms = [snapped, *sum_forms(layers, params, snapped),
                 *power_forms(layers, params, snapped, lambda tree: laid_out(tree, *choosing))]
        if len(forms) == 1:
            return snapped
        stacked = tf.nest.map_structure(lambda *weights: tf.stack(weights), *forms)
        return best_form(forms, tf.unstack(errors_of(stacked, {"interpolation": choosing}, leading=1)["interpolation"]))

    @tf.function(autograph=False, jit_compile=jit_compile)
    def scores(params, sets):
        scored = [(params, errors_of(params, sets))]
        if snap:
            snapped = [layer.snap(**p) for layer, p in zip(layers, params)]
            if derived:
                snapped = best_derived(params, snapped, sets["interpolation"])
            scored.append((snapped, errors_of(snapped, sets)))
        return scored

    return scores


def evaluation_sets(specs: list, per_group: int) -> dict:
    """{split: (x, y)} constants over the distinct tasks `specs`, [U, 1, N, ...] if `per_group` > 1."""
    sets = {}
    for name, make in SPLITS:
        pairs = [make(spec) for spec in specs]  # one copy per distinct task
        # One task: a view, not np.stack's copy (a static set of 10,000 inputs is 400 MB).
        stack = (lambda arrays: arrays[0][None]) if len(pairs) == 1 else np.stack
        x, y = stack([x for x, _ in pairs]), stack([y for _, y in pairs])
        del pairs
        if per_group > 1:  # [U, 1, N, ...]: broadcast over the K replicas that share it
            x, y = x[:, None], y[:, None]
        sets[name] = tuple(settled(tf.constant(array)) for array in (x, y))
    return sets


def settled(tensor: tf.Tensor) -> tf.Tensor:
    """`tensor`, after a kernel has read it once. TensorFlow 2.21 holds a tensor made from a numpy
    array twice (a 400 MB set, input size 10,000: 783 MB) until the first kernel runs on it; the
    sets are made one after another, so each would hold its second copy until training began."""
    tensor[:0]
    return tensor


def shared_layout(specs: list) -> tuple[int, int]:
    """(U, K) when the specs are U runs of K equal specs (a seed's restarts side by side), else (R, 1).

    Replicas of one task share its validation and test sets: stored once, broadcast over the
    K replicas (a recurrent test set is 40 MB; 8 seeds x 6 restarts would hold 48 copies).
    """
    first = next((k for k in range(1, len(specs)) if specs[k] != specs[0]), len(specs))
    runs = [specs[i : i + first] for i in range(0, len(specs), first)]
    if len(specs) % first == 0 and all(run[0] == s for run in runs for s in run):
        return len(runs), first
    return len(specs), 1


def to_numpy(params) -> list[dict]:
    return [{name: value.numpy() for name, value in layer.items()} for layer in params]
