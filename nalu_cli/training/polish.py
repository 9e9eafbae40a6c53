"""The polish step: Levenberg-Marquardt on the plain MSE over fixed interpolation samples.

Adam's noisy steps stop short of an ill-conditioned minimum: on a/b over U[1, 2] the
output depends on the shared inputs' weights and the powers only at second order
(a/b = 1 + (a - b)/b + ...), so those directions have curvature ~1e-4 of the others.
A damped Gauss-Newton step solves (J^T J + lambda diag(J^T J)) d = -J^T r, which
rescales every direction by its own curvature. It runs in float64 on all parameters
flattened per replica ([R, P], P is a few hundred; with more than the samples, the step
comes from the equivalent N x N system, `lm_step`), one trial step per iteration,
clipped like a training step; lambda shrinks 3x after an accepted step and grows 4x
after a rejected one (Marquardt's rule), per replica. The regulariser is left out:
this is a fit of the data, and `snap` still rounds afterwards.

Held weights (training.polish_hold): the polish first puts each unit's structure where the
unit's `structure` says (NaiNPU: every power at +-1 by its sign) and the layer before with its
outputs' largest weights at +-1 (`unit_scaled`), then holds that structure, and what training
never moves (a cell's h_{t-1} rows at recurrent_step_scale 0), refitting the rest. A held
weight's Jacobian column is zeroed, so its step is 0. Without polish_hold every weight is
fitted, the recurrence too: holding it in the recurrent NMU member's polish let that member's
plateau models (y = u^2 for one mixture u, interpolation MSE 2-22) pass the criterion at
T = 1,000 and stop training at step 1,000 on 3 of a*b's seeds 0-9, where fitting it keeps
them failing until the exact model is found (README, "The recurrent task").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nalu_cli import tasks

# Fixed interpolation samples the polish step fits (training.polish_every); more than the
# parameters of the models here (about 200), and the exact solution has zero residual.
SAMPLES = 256


def make_polish(forward, layers, like: list, specs: list, iterations: int, hold: bool = False,
                row_scales: list | None = None, reuse=None):
    """polish(params) -> params: `iterations` LM iterations for every replica at once (pure).

    `forward(params, x)` is the model's pure forward pass, `like` params of the right
    structure and shapes ([R, ...] per weight), `specs` the replicas' tasks, whose polish
    sets (tasks.polish_set: training data, not the validation set) are fitted. `hold`: hold
    each unit's structure (training.polish_hold). `row_scales` (per layer, {weight name: the
    factor on its rows after the layer's `split_rows`}, training/step.py): rows at 0 are held.
    `reuse(key, make)`: returns a graph `make()` made before for the same architecture, if any
    (`Architecture`); the graph takes the polish sets as an argument.
    """
    pairs = [tasks.polish_set(spec, SAMPLES) for spec in specs]
    x = tf.constant(np.stack([x for x, _ in pairs]), tf.float64)  # [R, N, in]
    y = tf.constant(np.stack([y[:, 0] for _, y in pairs]), tf.float64)  # [R, N]
    make = lambda: polish_graph(forward, layers, like, iterations, hold, row_scales)  # noqa: E731
    graph = make() if reuse is None else reuse(("polish", iterations, hold), make)
    return lambda params: graph(params, x, y)


def polish_graph(forward, layers, like: list, iterations: int, hold: bool = False, row_scales: list | None = None):
    """The graph of `make_polish`: polish(params, x, y) for replicas of `like`'s structure and shapes
    and their polish sets x [R, N, ...], y [R, N]."""
    replicas = int(tf.nest.flatten(like)[0].shape[0])
    names = [(index, name) for index, layer in enumerate(like) for name in layer]
    shapes = [like[index][name].shape[1:] for index, name in names]
    sizes = [int(np.prod(shape)) for shape in shapes]
    structure = [set(layer.structure(**p)) if hold else set() for layer, p in zip(layers, like)]
    row_scales = row_scales or [{}] * len(like)
    movable = tf.constant(np.concatenate([
        _movable(shape, name in structure[index], row_scales[index].get(name), getattr(layers[index], "split_rows", None))
        for (index, name), shape in zip(names, shapes)]), tf.float64)  # [P]: 0 where held

    def unflatten(theta):
        """[R, P] -> params [R, ...]; or [R, N, P] -> one copy of the params per sample, [R, N, ...]."""
        leading = theta.shape[:-1]
        params = [{} for _ in like]
        for (index, name), shape, piece in zip(names, shapes, tf.split(theta, sizes, axis=-1)):
            params[index][name] = tf.reshape(piece, [*leading, *shape])
        return params

    def flatten(params):
        return tf.concat([tf.reshape(params[index][name], [replicas, -1]) for index, name in names], axis=1)

    def residuals(theta, x, y):
        return tf.reshape(forward(unflatten(theta), x), [replicas, -1]) - y

    def residuals_and_jacobian(theta, x, y):
        """r [R, N] and dr/dtheta [R, N, P] from one backward pass: every sample gets its own
        copy of the weights (units are vectorised over leading axes), so the gradient of the
        summed outputs with respect to sample n's copy is row n of the Jacobian."""
        copies = tf.broadcast_to(theta[:, None, :], [replicas, SAMPLES, theta.shape[-1]])
        with tf.GradientTape() as tape:
            tape.watch(copies)
            out = tf.reshape(forward(unflatten(copies), x[:, :, None, :]), [replicas, SAMPLES])
        return out - y, tape.gradient(out, copies) * movable

    def mse(theta, x, y):
        loss = tf.reduce_mean(tf.square(residuals(theta, x, y)), axis=1)
        return tf.where(tf.math.is_finite(loss), loss, tf.constant(np.inf, tf.float64))

    @tf.function(autograph=False)
    def polish(params, x, y):
        start = tf.nest.map_structure(lambda t: tf.cast(t, tf.float64), params)
        if hold:  # each held unit's structure; the layer feeding it with its outputs' weights at +-1
            start = [{**p, **layer.structure(**p)} for layer, p in zip(layers, start)]
            start = [layer.unit_scaled(**p) if following else p
                     for layer, p, following in zip(layers, start, [*structure[1:], set()])]
        theta = flatten(start)

        def body(i, theta, damping, loss):
            r, jacobian = residuals_and_jacobian(theta, x, y)
            step = lm_step(jacobian, r, damping)
            trial = flatten([layer.clip(**p) for layer, p in zip(layers, unflatten(theta + step))])
            trial_loss = mse(trial, x, y)
            better = tf.math.is_finite(trial_loss) & (trial_loss < loss) & tf.reduce_all(tf.math.is_finite(trial), axis=1)
            theta = tf.where(better[:, None], trial, theta)
            loss = tf.where(better, trial_loss, loss)
            damping = tf.clip_by_value(tf.where(better, damping / 3.0, damping * 4.0), 1e-12, 1e12)
            return i + 1, theta, damping, loss

        initial = (tf.constant(0), theta, tf.fill([replicas], tf.constant(1e-3, tf.float64)), mse(theta, x, y))
        _, theta, _, _ = tf.while_loop(lambda i, *_: i < iterations, body, initial, parallel_iterations=1)
        return tf.nest.map_structure(lambda t, old: tf.cast(t, old.dtype), unflatten(theta), params)

    return polish


def lm_step(jacobian, r, damping, dual: bool | None = None):
    """Levenberg-Marquardt's step d [R, P] for Jacobians J [R, N, P], residuals r [R, N] and
    damping lambda [R]: (J^T J + M) d = -J^T r, M = diag(lambda diag(J^T J) + floor) (Marquardt's
    scaling, plus a floor so that a parameter with no gradient keeps the system solvable).

    With more parameters than samples (P > N: the first layer at 1,000 inputs has 2,000 weights
    a restart, the polish fits 256 samples) the same step comes from an N x N system, by the
    push-through identity (J^T J + M)^-1 J^T = M^-1 J^T (J M^-1 J^T + I)^-1: O(N^2 P) instead of
    O(N P^2 + P^3). `dual`: which system (None: the smaller)."""
    samples, parameters = jacobian.shape[-2], jacobian.shape[-1]
    if dual is None:
        dual = parameters > samples
    if dual:
        scaled = jacobian / _marquardt(tf.reduce_sum(tf.square(jacobian), axis=1), damping)[:, None, :]  # J M^-1
        kernel = tf.linalg.matmul(scaled, jacobian, transpose_b=True) + tf.eye(samples, dtype=jacobian.dtype)
        return -tf.linalg.matvec(scaled, tf.linalg.solve(kernel, r[..., None])[..., 0], adjoint_a=True)
    jtj = tf.linalg.matmul(jacobian, jacobian, transpose_a=True)
    system = jtj + tf.linalg.diag(_marquardt(tf.linalg.diag_part(jtj), damping))
    return tf.linalg.solve(system, -tf.linalg.matvec(jacobian, r, adjoint_a=True)[..., None])[..., 0]


def _marquardt(diagonal, damping):
    """M's diagonal [R, P] from diag(J^T J) [R, P] and lambda [R]."""
    floor = 1e-12 * tf.reduce_max(diagonal, axis=1, keepdims=True) + 1e-300
    return damping[:, None] * diagonal + floor


def _movable(shape, held: bool, row_scale: float | None, split_rows: int | None) -> np.ndarray:
    """One weight's flattened mask: 1 where the polish may move it, 0 where it is held (the whole
    weight when `held`; its rows from `split_rows` on when their training step is scaled by 0)."""
    mask = np.zeros(shape) if held else np.ones(shape)
    if row_scale == 0 and split_rows is not None:
        mask[split_rows:] = 0.0
    return mask.ravel()
