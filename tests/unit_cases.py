"""Shared by the unit tests: numpy transcriptions of each unit's equations and one case per unit.

Not a test module. The numpy references are float64 and unbatched: x [B, in], weights
[in, out], as written in the papers. `CASES` gives, per unit, how to make the layer, its
reference, how to sample each weight and the inputs, and the tolerance of the float32
layer against the float64 reference.
"""

from typing import Callable, NamedTuple

import numpy as np

from nalu_cli.units import INALU, NAC, NALU, NAU, NMRU, NMU, Gated, Linear, NaiNPU, RealNPU, ReLUMLP

IN, OUT, BATCH, REPLICAS = 5, 3, 32, 3


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_nac(x, w_hat, m_hat):
    return x @ (np.tanh(w_hat) * sigmoid(m_hat))


def numpy_nalu(x, w_hat, m_hat, g, eps=1e-7):
    w = np.tanh(w_hat) * sigmoid(m_hat)
    a = x @ w
    m = np.exp(np.log(np.abs(x) + eps) @ w)
    gate = sigmoid(x @ g)
    return gate * a + (1 - gate) * m


def numpy_nau(x, w):
    return x @ w


def numpy_nmu(x, w):
    # y_j = prod_i (W_ij x_i + 1 - W_ij)
    return np.prod(x[:, :, None] * w[None] + 1 - w[None], axis=1)


def numpy_inalu(x, w_hat_add, m_hat_add, w_hat_mul, m_hat_mul, g, eps=1e-7, omega=20.0):
    w_add = np.tanh(w_hat_add) * sigmoid(m_hat_add)
    w_mul = np.tanh(w_hat_mul) * sigmoid(m_hat_mul)
    a = x @ w_add
    m = np.exp(np.minimum(np.log(np.maximum(np.abs(x), eps)) @ w_mul, omega))
    factors = np.sign(x)[:, :, None] * np.abs(w_mul)[None] + 1 - np.abs(w_mul)[None]
    s = np.clip(np.prod(factors, axis=1), -1, 1)
    gate = sigmoid(g)
    return gate * a + (1 - gate) * m * s


def numpy_realnpu(x, w_real, g, eps=1.1920929e-07):
    g = np.clip(g, 0, 1)
    r = g * (np.abs(x) + eps) + (1 - g)
    k = g * np.pi * (x < 0)
    return np.exp(np.log(r) @ w_real) * np.cos(k @ w_real)


def numpy_nainpu(x, w_real, eps=1.1920929e-07):
    return np.exp(np.log(np.abs(x) + eps) @ w_real) * np.cos((np.pi * (x < 0)) @ w_real)


def numpy_nmru(x, w, eps=1.1920929e-07, sign_retrieval=True):
    z = np.concatenate([x, 1 / np.where(x >= 0, x + eps, x - eps)], axis=1)
    if not sign_retrieval:
        return numpy_nmu(z, w)
    return numpy_nmu(np.abs(z), w) * np.cos(np.pi * (z < 0) @ w)


def numpy_linear(x, kernel):
    return x @ kernel


def numpy_relu(x, hidden_kernel, hidden_bias, output_kernel, output_bias):
    return np.maximum(x @ hidden_kernel + hidden_bias, 0) @ output_kernel + output_bias


def numpy_gated(x, w_add, w_pow, g_pow, mix, eps=1.1920929e-07):
    power = numpy_realnpu(x, w_pow, g_pow, eps)
    c = np.clip(mix, 0, 1)
    return c * (x @ w_add) + (1 - c) * power


def mixed_signs(rng, shape, low=0.5, high=2.0):
    """Magnitudes in [low, high] with random signs: away from 0 where 1/x or log|x| would blow up."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


def uniform_signs(rng, shape):
    """Mixed signs and magnitudes, 0 included: log paths must use |x| and keep the sign apart."""
    return rng.uniform(-3, 3, shape)


def standard_normal(rng, shape):
    return rng.normal(0, 1, shape)


class Case(NamedTuple):
    make: Callable  # () -> an unbuilt layer with OUT outputs
    reference: Callable  # numpy (x, **weights) -> y
    weights: dict  # weight name -> (rng, shape) -> sample
    inputs: Callable  # (rng, shape) -> x
    rtol: float = 1e-4  # float32 layer against the float64 reference
    atol: float = 1e-5
    # A replica against the same weights alone, both float32: relative 1e-6, plus this floor for
    # outputs near 0, where batched and unbatched matmuls round sums that cancel differently.
    replica_atol: float = 1e-7


CASES = {
    "nac": Case(lambda: NAC(OUT), numpy_nac, dict.fromkeys(NAC.weight_names, standard_normal), uniform_signs, 2e-5),
    "nalu": Case(
        lambda: NALU(OUT), numpy_nalu, dict.fromkeys(NALU.weight_names, standard_normal), uniform_signs, 2e-5
    ),
    "nau": Case(lambda: NAU(OUT), numpy_nau, {"w": lambda r, s: r.uniform(-1, 1, s)}, uniform_signs),
    "nmu": Case(lambda: NMU(OUT), numpy_nmu, {"w": lambda r, s: r.uniform(0, 1, s)}, lambda r, s: r.uniform(-2, 2, s)),
    "inalu": Case(
        lambda: INALU(OUT),
        numpy_inalu,
        dict.fromkeys(INALU.weight_names, lambda r, s: r.normal(0, 1.5, s)),
        uniform_signs,
    ),
    "realnpu": Case(
        lambda: RealNPU(OUT),
        numpy_realnpu,
        # g partly outside [0, 1]: the forward pass clamps it, as published.
        {"w_real": standard_normal, "g": lambda r, s: r.uniform(-0.3, 1.3, s)},
        mixed_signs,
    ),
    "nainpu": Case(lambda: NaiNPU(OUT), numpy_nainpu, {"w_real": standard_normal}, mixed_signs),
    "nmru": Case(lambda: NMRU(OUT), numpy_nmru, {"w": lambda r, s: r.uniform(0, 1, s)}, mixed_signs),
    "nmru_no_sign": Case(
        lambda: NMRU(OUT, sign_retrieval=False),
        lambda x, w: numpy_nmru(x, w, sign_retrieval=False),
        {"w": lambda r, s: r.uniform(0, 1, s)},
        mixed_signs,
    ),
    "linear": Case(lambda: Linear(OUT), numpy_linear, {"kernel": standard_normal}, uniform_signs),
    "relu": Case(
        lambda: ReLUMLP(OUT, hidden_units=8),
        numpy_relu,
        dict.fromkeys(ReLUMLP.weight_names, standard_normal),
        uniform_signs,
    ),
    "gated": Case(
        lambda: Gated(OUT),
        numpy_gated,
        {
            "w_add": lambda r, s: r.uniform(-1, 1, s),
            "w_pow": lambda r, s: r.normal(0, 0.7, s),
            "g_pow": lambda r, s: r.uniform(0, 1, s),
            "mix": lambda r, s: r.uniform(0, 1, s),
        },
        uniform_signs,
        replica_atol=0.0,
    ),
}
CASE_IDS = list(CASES)


def built(name):
    layer = CASES[name].make()
    layer.build((None, IN))
    return layer


def random_params(name, layer, rng, leading=()):
    """The layer's parameters sampled as its case says, float32, with `leading` replica axes."""
    samplers = CASES[name].weights
    return {
        key: samplers[key](rng, (*leading, *var.shape)).astype(np.float32) for key, var in layer.params().items()
    }


def assign(layer, params):
    for key, var in layer.params().items():
        var.assign(params[key])


def as64(params):
    return {key: value.astype(np.float64) for key, value in params.items()}
