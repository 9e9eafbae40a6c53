"""Exact forms a selection tries besides each unit's own `snap`: the exact sum of sums.

An NAU under a layer with a sum path computes, on that path, the linear map x (W1 w2): one
weight per input, the composite c = W1 w2. Training often reaches the right composite long
before the right factors. On a+b with two hidden units, both units settle on (a + b) / 2 (1 on
the shared inputs, 1/2 on the others), which rounds to nothing exact; and while the gate
still mixes in the product path, the sum path carries only part of the output, so c is the
right pattern at the wrong scale. Here c is scaled so that its largest entry is k (the
largest integer of an exact composite: 2 for a sum of two overlapping slices, 1 for a single
slice or a difference), rounded, and factorised onto the lattice: hidden unit j takes
sign(c_i) where |c_i| >= j, and the next layer sums the hidden units with weight 1.
Selection scores every form on interpolation samples only. Seed 1 of a+b: at step 1,000, two
of its six gated restarts already held the composite of a + b at scale 2, rounding to the
exact weights; each unit's `snap` found an exact model at step 7,000.
"""

from __future__ import annotations

import tensorflow as tf
from keras import ops

# The scales k tried: a composite's largest entry for one slice or a difference of two (1) and
# a sum of two overlapping slices (2), when the layer has that many hidden units to factor into.
SCALES = (1, 2)
# Forms are compared on the first this many validation samples: an exact form's MSE is ~1e-11,
# a wrong one's above 1e-2, and scoring on all 10,000 would cost each evaluation a forward pass more.
FORM_SAMPLES = 1_000


def composite_forms(layers, params: list) -> list[list[dict]]:
    """The exact sum-of-sums forms of a static model of two layers (each a params list like
    `params`, leading replica axes kept), one per scale in SCALES; [] when the model is not an
    NAU-like sum under a unit with a sum path (`as_sum`), or has more than one output."""
    if len(layers) != 2:
        return []
    (first, second), (first_params, second_params) = layers, params
    first_paths, second_paths = first.paths(**first_params), second.paths(**second_params)
    if [kind for kind, _ in first_paths] != ["sum"] or not second_paths or second_paths[0][0] != "sum":
        return []
    inner, outer = first_paths[0][1], second_paths[0][1]  # [..., in, H], [..., H, out]
    hidden = inner.shape[-1]
    if outer.shape[-1] != 1:
        return []
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
        first_form = first.as_sum(units, **first_params)
        second_form = second.as_sum(ops.ones_like(outer), **second_params)
        if first_form is None or second_form is None:
            return []
        forms.append([first_form, second_form])
    return forms


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
