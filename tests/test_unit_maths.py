"""What each unit computes: its output against a numpy transcription of its paper's equations,
with and without a leading replica axis, and the behaviours that set each unit apart."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from nalu_cli.units import INALU, NALU, NAU, NMRU, NMU, Gated, NaiNPU, RealNPU
from tests.unit_cases import BATCH, CASE_IDS, CASES, IN, OUT, REPLICAS, as64, assign, built, random_params

# -- every unit against its equations --------------------------------------------------------


@pytest.mark.parametrize("name", CASE_IDS)
def test_forward_matches_numpy_equations(name):
    rng = np.random.default_rng(0)
    case, layer = CASES[name], built(name)
    params = random_params(name, layer, rng)
    assign(layer, params)
    x = case.inputs(rng, (BATCH, IN)).astype(np.float32)
    expected = case.reference(x.astype(np.float64), **as64(params))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("name", CASE_IDS)
def test_replica_axis_gives_each_replica_its_own_unbatched_result(name):
    rng = np.random.default_rng(1)
    case, layer = CASES[name], built(name)
    params = random_params(name, layer, rng, leading=(REPLICAS,))
    x = case.inputs(rng, (REPLICAS, BATCH, IN)).astype(np.float32)
    batched = np.asarray(layer.forward(x, **params))
    assert batched.shape == (REPLICAS, BATCH, OUT)
    for r in range(REPLICAS):
        replica = {key: value[r] for key, value in params.items()}
        alone = np.asarray(layer.forward(x[r], **replica))
        np.testing.assert_allclose(batched[r], alone, rtol=1e-6, atol=case.replica_atol)
        expected = case.reference(x[r].astype(np.float64), **as64(replica))
        np.testing.assert_allclose(batched[r], expected, rtol=case.rtol, atol=case.atol)


# -- NALU -------------------------------------------------------------------------------------


def test_nalu_shares_one_weight_between_paths():
    layer = NALU(2)
    layer.build((None, 4))
    assert sorted(layer.params()) == ["g", "m_hat", "w_hat"]


def test_nalu_gate_selects_paths():
    """With the gate saturated at 1 the output is the NAC's; at 0 it is the multiplicative path."""
    x = np.array([[2.0, 3.0]], dtype=np.float32)
    layer = NALU(1)
    layer.build((None, 2))
    layer.w_hat.assign(np.full((2, 1), 20.0, np.float32))  # tanh -> 1
    layer.m_hat.assign(np.full((2, 1), 20.0, np.float32))  # sigmoid -> 1
    layer.g.assign(np.full((2, 1), 50.0, np.float32))
    assert float(layer(x)[0, 0]) == pytest.approx(5.0, rel=1e-5)  # 2 + 3
    layer.g.assign(np.full((2, 1), -50.0, np.float32))
    assert float(layer(x)[0, 0]) == pytest.approx(6.0, rel=1e-5)  # 2 * 3


# -- iNALU ------------------------------------------------------------------------------------


def test_inalu_recovers_the_sign_of_a_product_of_negative_inputs():
    """Gate at 0, W_m selecting x0 and x1: y = x0 * x1, with its sign, for inputs of any sign."""
    x = np.array([[-2.0, 3.0, 7.0], [-2.0, -3.0, -7.0], [0.5, -4.0, 1.0]], np.float32)
    w_hat_mul = np.array([[30.0], [30.0], [0.0]], np.float32)
    m_hat_mul = np.array([[200.0], [200.0], [-200.0]], np.float32)
    zeros = np.zeros((3, 1), np.float32)
    y = INALU(1).forward(x, zeros, zeros, w_hat_mul, m_hat_mul, np.array([-200.0], np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], [-6.0, 6.0, -2.0], rtol=1e-6)


def test_inalu_exponent_is_clipped_at_omega():
    x = np.full((1, 2), 1e6, np.float32)  # log-sum 27.6 > omega = 20
    ones = np.full((2, 1), 30.0, np.float32)
    y = INALU(1).forward(x, ones, ones, ones, ones, np.array([-200.0], np.float32))
    assert float(y[0, 0]) == pytest.approx(math.exp(20.0), rel=1e-5)


# -- division with signs: RealNPU, NaiNPU, NMRU -----------------------------------------------

SIGN_PAIRS = np.array([[6.0, 2.0], [-6.0, 2.0], [6.0, -2.0], [-6.0, -2.0]], np.float32)
SIGNED_QUOTIENTS = [3.0, -3.0, -3.0, 3.0]


def test_realnpu_divides_with_signs():
    """W_r = [1, -1], gates at 1: y = x0 / x1 over all four sign combinations."""
    y = RealNPU(1).forward(SIGN_PAIRS, np.array([[1.0], [-1.0]], np.float32), np.ones(2, np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], SIGNED_QUOTIENTS, rtol=1e-5)


def test_realnpu_closed_gate_makes_an_input_irrelevant():
    x = np.array([[3.0, -1e-3], [3.0, 5.0]], np.float32)
    y = RealNPU(1).forward(x, np.array([[2.0], [-1.0]], np.float32), np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], [9.0, 9.0], rtol=1e-5)


def test_nainpu_divides_with_signs():
    """W_r = [1, -1]: y = x0 / x1 over all four sign combinations."""
    y = NaiNPU(1).forward(SIGN_PAIRS, np.array([[1.0], [-1.0]], np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], SIGNED_QUOTIENTS, rtol=1e-5)


def test_nainpu_has_no_constant_term():
    """Every input is a factor: the only way to make an input irrelevant is the power 0 (x1 ** 0 = 1)."""
    y = NaiNPU(1).forward(SIGN_PAIRS, np.array([[2.0], [0.0]], np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], [36.0, 36.0, 36.0, 36.0], rtol=1e-5)


@pytest.mark.parametrize("sign_retrieval", [True, False], ids=["sign_retrieval", "no_sign_retrieval"])
def test_nmru_divides_with_signs(sign_retrieval):
    """W selects x0 and 1/x1: y = x0 / x1 with the sign recovered."""
    w = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)  # rows: x0, x1, 1/x0, 1/x1
    y = NMRU(1, sign_retrieval=sign_retrieval).forward(SIGN_PAIRS, w)
    np.testing.assert_allclose(np.asarray(y)[:, 0], SIGNED_QUOTIENTS, rtol=1e-6)


def test_nmru_reciprocal_guard_keeps_the_sign_of_tiny_inputs():
    x = np.array([[-1e-12, 1e-12, 0.0]], np.float32)
    w = np.concatenate([np.zeros((3, 3)), np.eye(3)]).astype(np.float32)  # select each 1/x_i
    y = np.asarray(NMRU(3, sign_retrieval=False).forward(x, w))[0]
    assert y[0] < 0 and y[1] > 0 and y[2] > 0 and np.all(np.isfinite(y))


# -- exact solutions --------------------------------------------------------------------------


def nau_nmu_product_model():
    """x[0:4] -> a, x[2:7] -> b (overlapping slices), then a * b: the project's exact solution."""
    model = keras.Sequential([keras.Input(shape=(10,)), NAU(2), NMU(1)])
    select = np.zeros((10, 2), np.float32)
    select[0:4, 0] = 1.0
    select[2:7, 1] = 1.0
    model.layers[0].w.assign(select)
    model.layers[1].w.assign(np.ones((2, 1), np.float32))
    return model


@pytest.mark.parametrize("low, high", [(1.0, 2.0), (2.0, 6.0)], ids=["interpolation", "extrapolation"])
def test_nau_then_nmu_with_exact_weights_computes_the_product(low, high):
    x = np.random.default_rng(8).uniform(low, high, (10_000, 10)).astype(np.float32)
    model = nau_nmu_product_model()
    a = x[:, 0:4].sum(axis=1, dtype=np.float64)
    b = x[:, 2:7].sum(axis=1, dtype=np.float64)
    y = np.asarray(model(x))[:, 0]
    # Only the float32 sums round; the NMU adds nothing: W x + (1 - W) is exactly x at W = 1, 1 at W = 0.
    np.testing.assert_allclose(y, a * b, rtol=1e-6)
    a32 = np.asarray(ops.matmul(x, model.layers[0].w))
    np.testing.assert_array_equal(y, a32[:, 0] * a32[:, 1])
    for layer in model.layers:
        assert float(layer.sparsity_error(**layer.params())) == 0.0


@pytest.mark.parametrize(
    "exponents, mix, formula",
    [
        ([1.0, 1.0], 0.0, lambda a, b: a * b),
        ([1.0, -1.0], 0.0, lambda a, b: a / b),
        ([0.5, 0.0], 0.0, lambda a, b: np.sqrt(a)),
        ([2.0, 0.0], 0.0, lambda a, b: a * a),
        ([1.0, -1.0], 1.0, lambda a, b: a - b),  # mix = 1: the sum path, W_a = (1, -1)
    ],
    ids=["mul", "div", "sqrt", "square", "sub"],
)
def test_gated_snapped_weights_compute_the_op_exactly(exponents, mix, formula):
    """Weights a little off the exact values snap to them, and then the unit is the formula."""
    layer = Gated(1)
    layer.build((None, 2))
    params = {
        "w_add": np.array([[1.0], [-1.0]], np.float32) + 0.02,
        "w_pow": np.array([[exponents[0]], [exponents[1]]], np.float32) - 0.03,
        "g_pow": np.array([0.97, 0.96], np.float32),
        "mix": np.array([mix], np.float32) + (0.04 if mix == 0 else -0.04),
    }
    snapped = {k: np.asarray(v) for k, v in layer.snap(**params).items()}
    h = np.random.default_rng(3).uniform(20, 60, (100, 2)).astype(np.float32)
    expected = formula(h[:, 0].astype(np.float64), h[:, 1].astype(np.float64))
    np.testing.assert_allclose(np.asarray(layer.forward(h, **snapped))[:, 0], expected, rtol=1e-5)
