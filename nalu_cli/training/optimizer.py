"""Adam and split-adam as pure functions over a named state, one algorithm in one place.

The shape of optax's `scale_by_adam` (`ScaleByAdamState`, `init`, `update`) with the
arithmetic of keras.optimizers.Adam. Every tensor may carry a leading replica axis:
R replicas update at once, each by its own step size.

Split-adam splits a matrix's gradient between its inputs' common mode and the rest (`update`);
with the hidden split (training.hidden_split_start) it also splits the rest between its
hidden units' common mode and their differences (`_hidden_split`).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7
# The hidden split's running second moment of the hidden units' gradients (their H x H matrix),
# whose principal direction is their common mode: an average over about 100 steps.
HIDDEN_DECAY = 0.99


# AdamState's fields that only weights with a hidden split have entries in.
HIDDEN_FIELDS = ("mh", "vh", "s", "u")


class AdamState(NamedTuple):
    """Moments per weight, as the params: one {name: tensor} dict per layer.

    m, v:   first and second moments of the gradient (of its rest, for split weights; once the
            hidden split has begun, of the rest's differences between hidden units);
    mc, vc: moments of the common mode of the split weights ([..., 1, out] each; see `update`);
    mh, vh: moments of the rest's hidden common mode ([..., in, 1]), for the weights with a hidden
            split (`init`'s `hidden`): only they have entries here and in s and u;
    s:      the running second moment of the rest's hidden units, R^T R / in ([..., out, out]);
    u:      its principal direction, the hidden units' common mode ([..., 1, out], unit length).
    """

    m: list
    v: list
    mc: list
    vc: list
    mh: list
    vh: list
    s: list
    u: list


def split_weights(params, optimizer: str) -> list[tuple[str, ...]]:
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


def init(params, split: list[tuple[str, ...]], hidden: bool = False) -> AdamState:
    """Zero moments for `params`; `split` names each layer's split weights (`split_weights`).
    `hidden`: whether split weights of more than one output (hidden unit) get the hidden split."""
    zeros = lambda tree: tf.nest.map_structure(tf.zeros_like, tree)  # noqa: E731
    common = [{name: tf.zeros_like(layer[name][..., :1, :]) for name in names} for layer, names in zip(params, split)]
    hidden_weights = [{name: layer[name] for name in names if hidden and layer[name].shape[-1] > 1}
                      for layer, names in zip(params, split)]
    along = [{name: tf.zeros_like(w[..., :1]) for name, w in layer.items()} for layer in hidden_weights]
    second = [{name: tf.zeros([*w.shape[:-2], w.shape[-1], w.shape[-1]], w.dtype) for name, w in layer.items()}
              for layer in hidden_weights]
    direction = [{name: tf.ones_like(w[..., :1, :]) / w.shape[-1] ** 0.5 for name, w in layer.items()}
                 for layer in hidden_weights]
    return AdamState(m=zeros(params), v=zeros(params), mc=common, vc=zeros(common), mh=along, vh=zeros(along),
                     s=second, u=direction)


def step_size(learning_rate, step):
    """Adam's bias-corrected step size before update number `step` + 1 (0-based `step`)."""
    t = tf.cast(step + 1, tf.float32)
    return learning_rate * tf.sqrt(1.0 - BETA_2**t) / (1.0 - BETA_1**t)


def update(grads, state: AdamState, params, step_size, rows: list | None = None,
           row_scales: list | None = None, hidden: tuple | None = None,
           common_scale: float = 1.0) -> tuple[list, AdamState]:
    """One Adam step (Keras form); for the weights in `state.mc`, split-adam. Returns (params, state).

    Split-adam: a weight matrix's gradient G is split into its mean over the input axis,
    C = mean_i G_ij, and the rest G - C; each part has its own first and second moments,
    and the step is the sum of the two Adam steps. Inputs that share a mean (U[1, 2] has
    mean 1.5 on every coordinate) put one large common term C in every input's gradient;
    plain Adam divides the informative rest by that term's size, so the differences that
    tell the inputs apart move at a tiny fraction of the learning rate. Split, each part
    moves at the learning rate. `step_size` is a scalar or one value per replica.

    `rows` (one int or None per layer) limits the split to a layer's first rows: a recurrent
    cell's weights read [x_t, h_{t-1}], and only the x_t rows share the inputs' mean.
    `row_scales` (one {weight name: factor} per layer) multiplies the step of those weights'
    rows after `rows[layer]`, a cell's h_{t-1} rows (see `recurrent_step_scale`).
    `hidden`: (start, step), the step the hidden split begins at and this update's 0-based step,
    for the weights in `state.u` (see `_hidden_split`); None when the state has none.
    `common_scale` multiplies the common mode's step (training.common_step_scale). That step moves
    every split row of a column at once, so a hidden unit moves by about step * sum_i x_i, n times
    what one row's step moves it by (n inputs): 1.5 a step at 100 inputs on U[1, 2] and lr 0.01. An
    NMU multiplies its hidden units' factors, and with many of them such steps throw its output
    by orders of magnitude (README, "Hidden size and input size").
    """
    new = [tuple({} for _ in AdamState._fields) + ({},) for _ in params]
    for layer, (p_l, g_l, m_l, v_l, mc_l, vc_l, mh_l, vh_l, s_l, u_l) in enumerate(zip(params, grads, *state)):
        out_m, out_v, out_mc, out_vc, out_mh, out_vh, out_s, out_u, out_p = new[layer]
        for name, p in p_l.items():
            g, direction = g_l[name], 0.0
            if name in mc_l:
                split = rows[layer] if rows and rows[layer] is not None else g.shape[-2]
                # 1 on the split rows, 0 on the rest: they keep their own gradient and take no common step
                mask = tf.constant([[1.0]] * split + [[0.0]] * (g.shape[-2] - split), g.dtype)
                common = tf.reduce_mean(g[..., :split, :], axis=-2, keepdims=True)
                g = g - mask * common
                out_mc[name], out_vc[name], direction = _moments(mc_l[name], vc_l[name], common)
                direction = mask * direction * common_scale  # x * 1.0 is x: split-adam as before, bit for bit
            if name in u_l:  # a split weight (in mc_l): `mask` is its split rows
                (out_m[name], out_v[name], out_mh[name], out_vh[name], out_s[name], out_u[name],
                 rest) = _hidden_split(g, mask, m_l[name], v_l[name], mh_l[name], vh_l[name], s_l[name], u_l[name],
                                       *hidden)
            else:
                out_m[name], out_v[name], rest = _moments(m_l[name], v_l[name], g)
            delta = rest + direction
            factor = row_scales[layer].get(name, 1.0) if row_scales else 1.0
            if factor != 1.0:
                split = rows[layer]
                delta = delta * tf.constant([[1.0]] * split + [[factor]] * (g.shape[-2] - split), delta.dtype)
            out_p[name] = p - per_replica(tf.cast(step_size, p.dtype), p) * delta
    params = [layer[-1] for layer in new]
    return params, AdamState(*([layer[k] for layer in new] for k in range(len(AdamState._fields))))


def _moments(m, v, g):
    """Adam's moments after gradient g, and its direction m / (sqrt(v) + epsilon)."""
    m = BETA_1 * m + (1 - BETA_1) * g
    v = BETA_2 * v + (1 - BETA_2) * g * g
    return m, v, m / (tf.sqrt(v) + EPSILON)


def _hidden_split(rest, mask, m, v, mh, vh, s, u, start, step):
    """The hidden split of a split matrix's rest R ([..., in, out]; `mask` [in, 1] its split rows):
    (m, v, mh, vh, s, u, direction) after this step.

    Split-adam's rest still mixes what the hidden units share with what tells them apart. On
    a*b's plateau both hidden units hold (a + b) / 2 (weight 1/2 on either slice's own inputs):
    which inputs go to which unit is the small difference between their gradients, while the
    part they share carries the batch's noise, and Adam divides each weight's step by that
    noise. The units parted at about 1/2,000 of the learning rate (README, "Split-adam").
    Split, each part moves at the learning rate: from step `start` R is split into its
    component along the hidden units' common mode u, p = R u^T ([..., in, 1], moments mh, vh;
    its step is spread over the units as u / max|u|), and the differences R - p u (moments m,
    v, begun afresh at `start`). u is the principal direction of R's running second moment
    over the hidden units (one power iteration a step, from step 0), not their plain mean: a
    unit the next layer does not read (an NMU gate at 0) has no gradient, and the mean would
    drag it along with the others. Before `start` the units have yet to find what they share:
    split from step 0 (in both static members), the default model solved a*b by a median step
    of 6,500, from 1,000 by 3,000 (seeds 0-9; 3,000 too with the gated member's alone, 0.16.0).
    The steps that begin at `start` have their own bias correction."""
    dtype = rest.dtype
    split_rest = rest * mask
    rows = tf.reduce_sum(mask)
    s = HIDDEN_DECAY * s + (1 - HIDDEN_DECAY) * tf.matmul(split_rest, split_rest, transpose_a=True) / rows
    turned = tf.matmul(u, s)
    length = tf.norm(turned, axis=-1, keepdims=True)
    turned = turned / tf.where(length > 0, length, tf.ones_like(length))
    turned = turned * tf.where(tf.reduce_sum(turned, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    u = tf.where(length > 0, turned, u)  # no second moment yet: the starting direction
    began, begins = step >= start, tf.equal(step, start)
    m, v = tf.where(begins, tf.zeros_like(m), m), tf.where(begins, tf.zeros_like(v), v)
    along = tf.matmul(split_rest, u, transpose_b=True)  # [..., in, 1]; 0 on rows not split
    new_mh, new_vh, common = _moments(mh, vh, along)
    m, v, differences = _moments(m, v, tf.where(began, rest - along * u, rest))
    mh, vh = tf.where(began, new_mh, mh), tf.where(began, new_vh, vh)
    # Keras's bias correction counts from step 0 (step_size); these moments began at `start`.
    n, t = (tf.cast(k, dtype) for k in (tf.maximum(step - start, 0) + 1, step + 1))
    restarted = (tf.sqrt(1 - BETA_2**n) / (1 - BETA_1**n)) / (tf.sqrt(1 - BETA_2**t) / (1 - BETA_1**t))
    spread = u / tf.reduce_max(tf.abs(u), axis=-1, keepdims=True)
    direction = tf.where(began, restarted * (common * spread + differences), differences)
    return m, v, mh, vh, s, u, direction


def recurrent_step_scale(setting: float | None, optimizer: str, length: int) -> float:
    """The factor on the step of a recurrent cell's h_{t-1} rows (training.recurrent_step_scale).

    null: 1/T under split-adam (T the training sequence length), 1 under adam (as published).
    Adam moves every weight by about the learning rate per step whatever its gradient's size,
    but the recurrence acts at every step of a sequence: with h_T = sum_t W_h^(T-t) W_x x_t near
    W_h = I, a step d of W_h moves h_T by about d T(T-1)/2 mean(W_x x_t), a step d of W_x by
    d T mean(x_t), so the recurrence moves the output (T-1)/2 times as fast per unit it adds up.
    Scaled by 1/T, the two change the output at comparable rates. Measured with the default model
    (seeds 0-7, T = 10): a+b solved 8 of 8 either way, by a median step of 4,500 against 6,500;
    a*b 3 of 8 (by step 26,000; none more by 50,000), against 0 of seeds 0-3 in 30,000 unscaled.
    """
    if setting is not None:
        return setting
    return 1.0 / length if optimizer == "split-adam" else 1.0


def per_replica(values, like):
    """A [R] vector shaped to broadcast over a [R, ...] tensor (scalars pass through)."""
    if values.shape.rank == 0:
        return values
    return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))
