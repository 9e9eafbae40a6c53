"""Exact forms selection tries besides each unit's own `snap`, derived from the model's weights.

Both apply to the static task's two-layer models whose first layer is an NAU (a sum of its
inputs per hidden unit). Training often reaches the right function long before the right
factors, and rounding each weight then finds nothing exact.

The sum of sums (`sum_forms`). On a layer's sum path the two layers compute one linear map,
x (W1 w2). On a+b both hidden units settle on (a + b) / 2 (1 on the shared inputs, 1/2 on the
others), which rounds to nothing exact; and while the gate still mixes in the product path,
the sum path carries only part of the output, so the composite W1 w2 is the right pattern at
the wrong scale. It is scaled so that its largest entry is k (the largest integer of an exact
composite: 2 for a sum of two overlapping slices, 1 for a single slice or a difference),
rounded, and factorised onto the lattice: hidden unit j takes sign(c_i) where |c_i| >= j, and
the next layer sums the hidden units with weight 1. On a+b's seed 1, two of the six gated
restarts held it at step 1,000; each unit's rounding first found an exact model at step 7,000.

The product of powers (`power_forms`). Each hidden unit's pattern is its weights with the
largest at +-1, rounded (`unit_scaled`), signed so that it is positive on the samples; the
powers of y = prod_j h_j ** p_j are fitted by least squares of log|y| on log h over
interpolation samples and rounded to multiples of 1/2. A unit not positive on every sample,
or repeating an earlier unit's pattern gets power 0. On sqrt(a) the gated unit first fits
sqrt(a) on its sum path (nearly linear over the narrow training range), a hidden unit holding a
scaled copy of a: of seeds 0-19 of the default table, rounding each weight solved 14 at steps
7,000-10,000, and with this form 16 are solved at step 1,000 (the others at 2,000-4,000).

Selection scores every form on interpolation samples only (the evaluator's choice, per model).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

# The scales k tried: a composite's largest entry for one slice or a difference of two (1) and
# a sum of two overlapping slices (2), when the layer has that many hidden units to factor into.
SCALES = (1, 2)
# Forms are compared on the first this many validation samples (and powers fitted on them): an
# exact form's MSE is ~1e-11, a wrong one's above 1e-2, and all 10,000 would cost each evaluation
# a forward pass more.
FORM_SAMPLES = 1_000
# Ridge on the powers' normal equations: keeps a unit given power 0 at exactly 0.
RIDGE = 1e-9


def _sum_layers(layers, params):
    """(first layer's [..., in, H] matrix, second layer's sum-path [..., H, out] matrix or None when
    it has none); None unless the model is two layers, the first an NAU-like sum."""
    if len(layers) != 2:
        return None
    first_paths, second_paths = layers[0].paths(**params[0]), layers[1].paths(**params[1])
    if [kind for kind, _ in first_paths] != ["sum"] or not second_paths:
        return None
    return first_paths[0][1], dict(second_paths).get("sum")


def sum_forms(layers, params: list, snapped: list) -> list[list[dict]]:
    """The exact sum-of-sums forms of a static model of two layers (each a params list like
    `params`, leading replica axes kept; weights not set are `snapped`'s, each unit's `snap`), one
    per scale in SCALES; [] when the model is not an NAU-like sum under a unit with a sum path
    (`as_sum`), or has more than one output."""
    found = _sum_layers(layers, params)
    if found is None or found[1] is None or found[1].shape[-1] != 1:
        return []
    (first, second), (inner, outer) = layers, found  # [..., in, H], [..., H, 1]
    hidden = inner.shape[-1]
    composite = ops.matmul(inner, outer)  # [..., in, 1]
    largest = ops.max(ops.abs(composite), axis=-2, keepdims=True)
    unit_scale = composite / ops.where(largest > 0, largest, ops.ones_like(largest))
    forms = []
    for scale in SCALES:
        if scale > hidden:
            break
        target = ops.round(unit_scale * scale)
        units = ops.concatenate([ops.sign(target) * ops.cast(ops.abs(target) >= j, target.dtype)
                                 for j in range(1, hidden + 1)], axis=-1)  # [..., in, H]
        first_form = first.as_sum(units, **snapped[0])
        second_form = second.as_sum(ops.ones_like(outer), **snapped[1])
        if first_form is None or second_form is None:
            return []
        forms.append([first_form, second_form])
    return forms


def power_forms(layers, params: list, snapped: list, laid_out) -> list[list[dict]]:
    """The exact product-of-powers form of a static model of two layers, [] or one form: the hidden
    units' rounded patterns, their powers fitted on the samples `laid_out(tree)` returns with `tree`
    (tree, x, y in the forward pass's layout), for a second layer with `as_power` and one output;
    weights not set are `snapped`'s."""
    found = _sum_layers(layers, params)
    if found is None or layers[1].units != 1:
        return []
    first, second = layers
    hidden = found[0].shape[-1]
    patterns = first.paths(**first.snap(**first.unit_scaled(**params[0])))[0][1]  # [R, in, H] on {-1, 0, 1}
    laid, x, y = laid_out(patterns)
    h = tf.cast(tf.matmul(x, laid), tf.float64)  # [..., N, H]
    sign = tf.where(tf.reduce_mean(h, axis=-2, keepdims=True) < 0, -1.0, 1.0)  # [..., 1, H]
    h = h * tf.cast(sign, h.dtype)
    # a repeat of an earlier unit's pattern adds nothing the earlier one cannot hold
    signed = laid * tf.cast(sign, laid.dtype)  # [..., in, H]
    same = tf.reduce_all(tf.equal(signed[..., :, :, None], signed[..., :, None, :]), axis=-3)  # [..., H, H]
    repeat = tf.reduce_any(same & tf.constant(np.tril(np.ones((hidden, hidden), bool), -1)), axis=-1)
    usable = tf.reduce_all(h > 0, axis=-2) & ~repeat  # [..., H]
    mask = tf.cast(usable, h.dtype)[..., None, :]
    logs = tf.math.log(tf.where(h > 0, h, tf.ones_like(h))) * mask  # [..., N, H]; 0 where unusable
    target = tf.math.log(tf.maximum(tf.abs(tf.cast(y, tf.float64)), 1e-300))  # [..., N, 1]
    gram = tf.matmul(logs, logs, transpose_a=True) + RIDGE * tf.eye(hidden, dtype=h.dtype)
    powers = tf.linalg.solve(gram, tf.matmul(logs, target, transpose_a=True))[..., 0]  # [..., H]
    powers = tf.round(2.0 * powers) / 2.0 * tf.cast(usable, h.dtype)
    replicas = tf.shape(patterns)[0]
    powers = tf.cast(tf.reshape(powers, [replicas, hidden]), patterns.dtype)
    sign = tf.cast(tf.reshape(sign, [replicas, 1, hidden]), patterns.dtype)
    first_form = first.as_sum(patterns * sign, **snapped[0])
    second_form = second.as_power(powers[..., None], **snapped[1])
    return [] if first_form is None or second_form is None else [[first_form, second_form]]


def best_form(forms: list, interpolation: list):
    """Per replica, the form (one params list per entry of `forms`) with the lowest interpolation
    MSE (`interpolation`, one [R] tensor per form): the first on ties, and a finite MSE before
    any non-finite one."""
    best, lowest = forms[0], _finite_or_inf(interpolation[0])
    for form, mse in zip(forms[1:], interpolation[1:]):
        mse = _finite_or_inf(mse)
        better = mse < lowest

        def pick(new, old):
            return tf.where(tf.reshape(better, [-1] + [1] * (len(old.shape) - 1)), new, old)

        best = [{name: pick(layer[name], old) for name, old in kept.items()} for layer, kept in zip(form, best)]
        lowest = tf.where(better, mse, lowest)
    return best


def _finite_or_inf(mse):
    return tf.where(tf.math.is_finite(mse), mse, tf.constant(float("inf"), mse.dtype))
