"""The maths of each unit, once, as pure functions over tensors (keras.ops).

Layers wrap these; the trainer, reference tests and exporters call them with
their own parameters. Shapes: x [..., batch, in], weights [..., in, out], so a
leading replica axis vectorises everything.
"""

from keras import ops


def nac_weight(w_hat, m_hat):
    """W = tanh(W_hat) * sigmoid(M_hat): biased towards {-1, 0, 1} (Trask et al. 2018, eq. 1)."""
    return ops.tanh(w_hat) * ops.sigmoid(m_hat)


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
