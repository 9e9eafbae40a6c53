"""The maths of each unit, once, as pure functions over tensors (keras.ops).

Layers wrap these; the trainer, reference tests and exporters call them with
their own parameters. Shapes: x [..., batch, in], weights [..., in, out], so a
leading replica axis vectorises everything.
"""

import math

from keras import ops


def nac_weight(w_hat, m_hat):
    """W = tanh(W_hat) * sigmoid(M_hat): biased towards {-1, 0, 1} (Trask et al. 2018, eq. 1)."""
    return ops.tanh(w_hat) * ops.sigmoid(m_hat)


# tanh(40) and sigmoid(40) round to exactly 1 in float32 (and float64); sigmoid(-120) underflows
# to exactly 0 in float32; tanh(0) is exactly 0. Snapped NAC-style weights use these values.
SATURATED = 40.0
SATURATED_OFF = -120.0


def snapped_nac_params(weight):
    """(W_hat, M_hat) with tanh(W_hat) * sigmoid(M_hat) exactly clip(round(weight), -1, 1) in float32."""
    target = ops.clip(ops.round(weight), -1.0, 1.0)
    return SATURATED * target, ops.full_like(target, SATURATED)


def snapped_gate_logit(gate):
    """A logit g with sigmoid(g) exactly round(gate) in {0, 1} in float32."""
    return ops.where(ops.greater(ops.round(gate), 0.0), SATURATED, SATURATED_OFF)


def nac(x, w_hat, m_hat):
    """Neural accumulator: a = x W."""
    return ops.matmul(x, nac_weight(w_hat, m_hat))


def nalu(x, w_hat, m_hat, g, epsilon=1e-7):
    """Neural arithmetic logic unit (Trask et al. 2018, eq. 2).

    a = x W;  m = exp(log(|x| + eps) W);  gate = sigmoid(x G);  y = gate * a + (1 - gate) * m
    with W = tanh(W_hat) * sigmoid(M_hat) shared by the additive and multiplicative paths.
    """
    weight = nac_weight(w_hat, m_hat)
    additive = ops.matmul(x, weight)
    multiplicative = ops.exp(ops.matmul(ops.log(ops.abs(x) + epsilon), weight))
    gate = ops.sigmoid(ops.matmul(x, g))
    return gate * additive + (1.0 - gate) * multiplicative


def linear(x, kernel):
    """A dense layer without bias: y = x W."""
    return ops.matmul(x, kernel)


def nau(x, w):
    """Neural addition unit (Madsen & Johansen 2020, eq. 1): y = x W, with W kept in [-1, 1] by clipping."""
    return ops.matmul(x, w)


def nmu(x, w):
    """Neural multiplication unit (Madsen & Johansen 2020, eq. 2): y_j = prod_i (W_ij x_i + 1 - W_ij).

    x [..., batch, in], W [..., in, out] -> [..., batch, out]. `(1 - W)` is added as one term so
    that W = 1 gives exactly x_i and W = 0 exactly 1: a solved unit is exact in floating point.
    """
    x_in = ops.expand_dims(x, -1)  # [..., batch, in, 1]
    w_in = ops.expand_dims(w, -3)  # [..., 1, in, out]
    return ops.prod(x_in * w_in + (1.0 - w_in), axis=-2)


def inalu(x, w_hat_add, m_hat_add, w_hat_mul, m_hat_mul, g, epsilon=1e-7, omega=20.0):
    """Improved NALU (Schlör, Ring & Hotho 2020, arXiv 2003.07629), as in their `nalui2_layer`.

    W_a = tanh(W_hat_a) * sigmoid(M_hat_a);  W_m = tanh(W_hat_m) * sigmoid(M_hat_m)   (separate paths)
    a = x W_a
    m = exp(min(log(max(|x|, eps)) W_m, omega))                      (clipped log and exponent)
    s_j = clip(prod_i (sign(x_i) |W_m,ij| + 1 - |W_m,ij|), -1, 1)    (sign of the product)
    gate = sigmoid(g), one value per output, independent of x
    y = gate * a + (1 - gate) * m * s
    """
    w_add = nac_weight(w_hat_add, m_hat_add)
    w_mul = nac_weight(w_hat_mul, m_hat_mul)
    additive = ops.matmul(x, w_add)
    log_x = ops.log(ops.maximum(ops.abs(x), epsilon))
    magnitude = ops.exp(ops.minimum(ops.matmul(log_x, w_mul), omega))
    sign = ops.clip(nmu(ops.sign(x), ops.abs(w_mul)), -1.0, 1.0)
    gate = ops.expand_dims(ops.sigmoid(g), -2)  # [..., 1, out]: broadcast over the batch
    return gate * additive + (1.0 - gate) * magnitude * sign


def real_npu(x, w_real, g, epsilon=1.1920929e-07):
    """Real neural power unit (Heim, van Gerven & Andersson 2020, arXiv 2006.01681, RealNPU).

    g_hat = clip(g, 0, 1)                    relevance gate, one value per input
    r = g_hat * (|x| + eps) + (1 - g_hat)     an irrelevant input (g_hat = 0) becomes 1
    k = g_hat * pi * [x < 0]
    y = exp(log(r) W_r) * cos(k W_r)
    eps is float32 machine epsilon, as in the authors' Julia code (NeuralArithmetic.jl).
    """
    gate = ops.expand_dims(ops.clip(g, 0.0, 1.0), -2)  # [..., 1, in]: broadcast over the batch
    r = gate * (ops.abs(x) + epsilon) + (1.0 - gate)
    k = gate * math.pi * ops.cast(ops.less(x, 0.0), x.dtype)
    return _real_power(r, k, w_real)


def naive_real_npu(x, w_real, epsilon=1.1920929e-07):
    """RealNPU with every relevance gate at 1: y = exp(log(|x| + eps) W_r) * cos(pi [x < 0] W_r).

    Heim et al.'s naive NPU (NaiNPU), in RealNPU's real form. Every input is a factor
    |x_i| ** W_ij (times its sign term); without the gate an input cannot be blended
    towards the constant 1, so the unit cannot hold an affine function of its inputs.
    """
    return _real_power(ops.abs(x) + epsilon, math.pi * ops.cast(ops.less(x, 0.0), x.dtype), w_real)


def _real_power(magnitude, angle, w_real):
    """prod_i magnitude_i ** W_ij * cos(sum_i angle_i W_ij): a product of real powers with their signs."""
    return ops.exp(ops.matmul(ops.log(magnitude), w_real)) * ops.cos(ops.matmul(angle, w_real))


def signed_reciprocal(x, epsilon):
    """1 / (x + eps * sign(x)), with sign(0) taken as +1: the guard never flips the sign of x."""
    return 1.0 / ops.where(ops.greater_equal(x, 0.0), x + epsilon, x - epsilon)


def nmru(x, w, epsilon=1.1920929e-07, sign_retrieval=True):
    """Neural multiplicative reciprocal unit (Mistry, Farrahi & Hare 2021, "A Primer for Neural
    Arithmetic Logic Modules"; code: bmistry4/nalu-stable-exp).

    z = [x, 1/x]  (concatenated on the input axis, so W is [..., 2 in, out])
    without sign retrieval:  y_j = prod_i (W_ij z_i + 1 - W_ij)
    with sign retrieval:     y_j = prod_i (W_ij |z_i| + 1 - W_ij) * cos(pi [z < 0] W)_j
    The sign term is RealNPU's: each selected negative input adds pi to the cosine's argument.
    """
    z = ops.concatenate([x, signed_reciprocal(x, epsilon)], axis=-1)
    if not sign_retrieval:
        return nmu(z, w)
    k = math.pi * ops.cast(ops.less(z, 0.0), z.dtype)
    return nmu(ops.abs(z), w) * ops.cos(ops.matmul(k, w))


def relu_mlp(x, hidden_kernel, hidden_bias, output_kernel, output_bias):
    """A one-hidden-layer ReLU network: y = relu(x W1 + b1) W2 + b2 (biases [..., units])."""
    hidden = ops.relu(ops.matmul(x, hidden_kernel) + ops.expand_dims(hidden_bias, -2))
    return ops.matmul(hidden, output_kernel) + ops.expand_dims(output_bias, -2)


def gated(x, w_add, w_pow, g_pow, mix, epsilon=1.1920929e-07):
    """nalu's gated unit: y = c * (x W_a) + (1 - c) * RealNPU(x; W_p, g), c = clip(mix, 0, 1) per output.

    Separate weights per path, an NAU sum path, a RealNPU power path (real exponents, signs
    kept), and a gate that is a parameter, not a function of x, so it can be exactly 0 or 1.
    """
    mix = ops.expand_dims(ops.clip(mix, 0.0, 1.0), -2)  # [..., 1, out]: broadcast over the batch
    return mix * nau(x, w_add) + (1.0 - mix) * real_npu(x, w_pow, g_pow, epsilon=epsilon)


# -- recurrent cells ------------------------------------------------------------------------------
# A step maps (x_t [..., batch, in], states) to new states; the cell's output is its first state.


def broadcast_like(x, like):
    """`x` broadcast to `like`'s leading axes (replica axes of the weights, say), keeping its last axis."""
    return x + ops.zeros_like(like[..., :1])


def initial_state(value, x):
    """A learned initial state `value` [..., units] for every sequence of x [..., batch, T, in]: [..., batch, units]."""
    return ops.expand_dims(value, -2) + ops.zeros_like(x[..., 0, :1])


def recurrence(step, states: list, x, unroll_max: int = 64):
    """Run `step(x_t, states) -> states` over the time axis of x [..., batch, T, in]; the last first state.

    Short sequences of a static length are unrolled (the training graph: XLA fuses the steps);
    longer or unknown ones run in a loop.
    """
    length = x.shape[-2]
    if length is not None and length <= unroll_max:
        for t in range(length):
            states = step(x[..., t, :], states)
        return states[0]
    states = ops.fori_loop(0, ops.shape(x)[-2], lambda t, s: step(ops.take(x, t, axis=-2), s), states)
    return states[0]


def lstm_step(x_t, h, c, kernel, recurrent_kernel, bias):
    """keras.layers.LSTMCell's step (tanh, sigmoid gates i, f, c, o), with leading replica axes: (h, c)."""
    z = ops.matmul(x_t, kernel) + ops.matmul(h, recurrent_kernel) + ops.expand_dims(bias, -2)
    z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
    c = ops.sigmoid(z_f) * c + ops.sigmoid(z_i) * ops.tanh(z_c)
    return ops.sigmoid(z_o) * ops.tanh(c), c


def gru_step(x_t, h, kernel, recurrent_kernel, bias):
    """keras.layers.GRUCell's step (reset_after=True, the Keras default), with leading replica axes: h.

    bias [..., 2, 3 units]: the input bias, then the recurrent bias.
    """
    matrix_x = ops.matmul(x_t, kernel) + ops.expand_dims(bias[..., 0, :], -2)
    matrix_h = ops.matmul(h, recurrent_kernel) + ops.expand_dims(bias[..., 1, :], -2)
    x_z, x_r, x_h = ops.split(matrix_x, 3, axis=-1)
    h_z, h_r, h_h = ops.split(matrix_h, 3, axis=-1)
    z = ops.sigmoid(x_z + h_z)
    r = ops.sigmoid(x_r + h_r)
    return z * h + (1.0 - z) * ops.tanh(x_h + r * h_h)
