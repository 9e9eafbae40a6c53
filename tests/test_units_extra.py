"""The units beyond NAC/NALU against numpy transcriptions of their papers' equations.

Each unit is checked unbatched and with a leading replica axis (the replica trainer's
layout), for clipping, config and `.keras` round trips, and for a zero sparsity error
at hand-set exact weights.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from nalu_cli.config import UNITS
from nalu_cli.unit_names import UNIT_CLASSES
from nalu_cli.units import INALU, NAU, NMRU, NMU, UNIT_LAYERS, ArithmeticUnit, Linear, NaiNPU, RealNPU, ReLUMLP

IN, OUT, BATCH, REPLICAS = 5, 3, 32, 3


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# numpy transcriptions, unbatched: x [B, in], weights [in, out]


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


def mixed_signs(rng, shape, low=0.5, high=2.0):
    """Magnitudes in [low, high] with random signs: away from 0 where 1/x or log|x| would blow up."""
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


# name -> (layer factory, numpy reference, weight sampler by name, input sampler)
CASES = {
    "nau": (lambda: NAU(OUT), numpy_nau, {"w": lambda r, s: r.uniform(-1, 1, s)}, lambda r, s: r.uniform(-3, 3, s)),
    "nmu": (lambda: NMU(OUT), numpy_nmu, {"w": lambda r, s: r.uniform(0, 1, s)}, lambda r, s: r.uniform(-2, 2, s)),
    "inalu": (
        lambda: INALU(OUT),
        numpy_inalu,
        {name: lambda r, s: r.normal(0, 1.5, s) for name in INALU.weight_names},
        lambda r, s: r.uniform(-3, 3, s),
    ),
    "realnpu": (
        lambda: RealNPU(OUT),
        numpy_realnpu,
        # g partly outside [0, 1]: the forward pass clamps it, as published.
        {"w_real": lambda r, s: r.normal(0, 1, s), "g": lambda r, s: r.uniform(-0.3, 1.3, s)},
        mixed_signs,
    ),
    "nainpu": (lambda: NaiNPU(OUT), numpy_nainpu, {"w_real": lambda r, s: r.normal(0, 1, s)}, mixed_signs),
    "nmru": (lambda: NMRU(OUT), numpy_nmru, {"w": lambda r, s: r.uniform(0, 1, s)}, mixed_signs),
    "nmru_no_sign": (
        lambda: NMRU(OUT, sign_retrieval=False),
        lambda x, w: numpy_nmru(x, w, sign_retrieval=False),
        {"w": lambda r, s: r.uniform(0, 1, s)},
        mixed_signs,
    ),
    "linear": (
        lambda: Linear(OUT),
        numpy_linear,
        {"kernel": lambda r, s: r.normal(0, 1, s)},
        lambda r, s: r.uniform(-3, 3, s),
    ),
    "relu": (
        lambda: ReLUMLP(OUT, hidden_units=8),
        numpy_relu,
        {name: lambda r, s: r.normal(0, 1, s) for name in ReLUMLP.weight_names},
        lambda r, s: r.uniform(-3, 3, s),
    ),
}
CASE_IDS = list(CASES)


def built(name):
    layer = CASES[name][0]()
    layer.build((None, IN))
    return layer


def random_params(name, layer, rng, leading=()):
    samplers = CASES[name][2]
    return {
        key: samplers[key](rng, (*leading, *var.shape)).astype(np.float32)
        for key, var in layer.params().items()
    }


def as64(params):
    return {key: value.astype(np.float64) for key, value in params.items()}


@pytest.mark.parametrize("name", CASE_IDS)
def test_forward_matches_numpy_equations(name):
    rng = np.random.default_rng(0)
    layer, reference, _, sample_x = built(name), *CASES[name][1:]
    params = random_params(name, layer, rng)
    for key, var in layer.params().items():
        var.assign(params[key])
    x = sample_x(rng, (BATCH, IN)).astype(np.float32)
    expected = reference(x.astype(np.float64), **as64(params))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CASE_IDS)
def test_replica_axis_gives_each_replica_its_own_unbatched_result(name):
    rng = np.random.default_rng(1)
    layer, reference, _, sample_x = built(name), *CASES[name][1:]
    params = random_params(name, layer, rng, leading=(REPLICAS,))
    x = sample_x(rng, (REPLICAS, BATCH, IN)).astype(np.float32)
    batched = np.asarray(layer.forward(x, **params))
    assert batched.shape == (REPLICAS, BATCH, OUT)
    for r in range(REPLICAS):
        replica = {key: value[r] for key, value in params.items()}
        np.testing.assert_allclose(batched[r], np.asarray(layer.forward(x[r], **replica)), rtol=1e-5, atol=1e-6)
        expected = reference(x[r].astype(np.float64), **as64(replica))
        np.testing.assert_allclose(batched[r], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CASE_IDS)
def test_regularizer_and_sparsity_error_keep_the_replica_axis(name):
    rng = np.random.default_rng(2)
    layer = built(name)
    params = random_params(name, layer, rng, leading=(REPLICAS,))
    penalty = np.asarray(layer.regularizer(**params))
    error = np.asarray(layer.sparsity_error(**params))
    assert penalty.shape == (REPLICAS,)
    assert error.shape in {(REPLICAS,), ()}  # () only for units with no discrete weights
    for r in range(REPLICAS):
        replica = {key: value[r] for key, value in params.items()}
        assert float(layer.regularizer(**replica)) == pytest.approx(float(penalty[r]), rel=1e-6, abs=1e-7)


def test_nau_and_nmu_regularizer_is_mean_distance_to_discrete_values():
    w = np.array([[0.2, -0.9], [0.5, 1.0]], np.float32)
    expected = np.mean([0.2, 0.1, 0.5, 0.0])
    assert float(NAU(2).regularizer(w=w)) == pytest.approx(expected, rel=1e-6)
    assert float(NMRU(2).regularizer(w=np.abs(w))) == pytest.approx(expected, rel=1e-6)


def test_inalu_regularizer_is_theirs_hinge_at_t():
    """(1/t) * sum over parameter tensors of mean(max(t - |v|, 0)), t = 20 (Schlör et al. 2020)."""
    layer = built("inalu")
    params = random_params("inalu", layer, np.random.default_rng(3))
    params["w_hat_add"][0, 0] = 25.0  # beyond t: contributes nothing
    expected = sum(np.mean(np.maximum(20 - np.abs(v.astype(np.float64)), 0)) for v in params.values()) / 20
    assert float(layer.regularizer(**params)) == pytest.approx(expected, rel=1e-6)


def test_linear_and_relu_have_no_regularizer():
    assert np.all(np.asarray(built("linear").regularizer(kernel=np.ones((REPLICAS, IN, OUT), np.float32))) == 0)
    assert Linear.regularizer_schedule[0] == 0.0 and ReLUMLP.regularizer_schedule[0] == 0.0


@pytest.mark.parametrize(
    "layer_cls, schedule",
    [
        (NAU, (0.01, 5_000, 50_000)),
        (NMU, (10.0, 1_000_000, 2_000_000)),
        (NMRU, (10.0, 50_000, 75_000)),
        (RealNPU, (1.0, 50_000, 75_000)),
        (INALU, (1.0, 10_000, 10_001)),
    ],
)
def test_published_regularizer_schedules(layer_cls, schedule):
    assert layer_cls.regularizer_schedule == schedule


@pytest.mark.parametrize(
    "name, key, low, high",
    [("nau", "w", -1.0, 1.0), ("nmu", "w", 0.0, 1.0), ("nmru", "w", 0.0, 1.0), ("realnpu", "g", 0.0, 1.0)],
)
def test_clip_puts_weights_in_the_published_interval(name, key, low, high):
    layer = built(name)
    rng = np.random.default_rng(4)
    params = {k: rng.uniform(-3, 3, (REPLICAS, *v.shape)).astype(np.float32) for k, v in layer.params().items()}
    clipped = {k: np.asarray(v) for k, v in layer.clip(**params).items()}
    assert set(clipped) == set(params)
    assert clipped[key].shape == params[key].shape
    assert clipped[key].min() == low and clipped[key].max() == high
    inside = (params[key] >= low) & (params[key] <= high)
    np.testing.assert_array_equal(clipped[key][inside], params[key][inside])
    for other in set(params) - {key}:  # e.g. RealNPU's W_r is real-valued and left alone
        np.testing.assert_array_equal(clipped[other], params[other])


@pytest.mark.parametrize("name", ["inalu", "linear", "relu"])
def test_units_without_published_clipping_leave_parameters_alone(name):
    layer = built(name)
    params = random_params(name, layer, np.random.default_rng(5))
    params = {k: 10 * v for k, v in params.items()}
    for key, value in layer.clip(**params).items():
        np.testing.assert_array_equal(np.asarray(value), params[key])


def test_published_initialisers():
    nau = NAU(OUT)
    nau.build((None, 100))
    r = min(0.5, math.sqrt(3) * math.sqrt(2 / (100 + OUT)))
    w = nau.w.numpy()
    assert np.abs(w).max() <= r and np.abs(w).max() > 0.8 * r
    nmu = NMU(OUT)
    nmu.build((None, 100))
    assert 0.25 <= nmu.w.numpy().min() and nmu.w.numpy().max() <= 0.75
    nmru = NMRU(OUT)
    nmru.build((None, 100))
    assert nmru.w.shape == (200, OUT)
    assert 0.25 <= nmru.w.numpy().min() and nmru.w.numpy().max() <= 0.75
    npu = RealNPU(OUT)
    npu.build((None, 100))
    np.testing.assert_array_equal(npu.g.numpy(), np.full(100, 0.5, np.float32))
    inalu = INALU(OUT)
    inalu.build((None, 100))
    assert inalu.g.shape == (OUT,)  # one gate per output, independent of x
    assert abs(inalu.w_hat_mul.numpy().mean() - 1) < 0.05 and abs(inalu.m_hat_add.numpy().mean() + 1) < 0.05


@pytest.mark.parametrize("name", CASE_IDS)
def test_config_round_trip(name):
    layer = CASES[name][0]()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("name", CASE_IDS)
def test_keras_file_round_trip_gives_equal_predictions(name, tmp_path):
    rng = np.random.default_rng(6)
    model = keras.Sequential([keras.Input(shape=(IN,)), CASES[name][0]()])
    layer = model.layers[0]
    params = random_params(name, layer, rng)
    for key, var in layer.params().items():
        var.assign(params[key])
    x = CASES[name][3](rng, (BATCH, IN)).astype(np.float32)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is type(layer)
    assert loaded.layers[0].get_config() == layer.get_config()
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


EXACT = {
    "nau": {"w": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]])},
    "nmu": {"w": np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0]])},
    "nmru": {"w": np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0]] * 2)},
    "realnpu": {
        "w_real": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]]),
        "g": np.array([1, 0, 1, 1, 0]),
    },
    "nainpu": {"w_real": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]])},
    "linear": {"kernel": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]])},
    # Saturated raw parameters: tanh(+-30) and sigmoid(+-200) round to exactly +-1 and 0/1 in float32,
    # and every |v| >= t = 20, so iNALU's hinge penalty is 0 too.
    "inalu": {
        "w_hat_add": 30 * np.array([[1, -1, 1], [1, 1, -1], [-1, 1, 1], [1, 1, 1], [-1, -1, 1]]),
        "m_hat_add": 200 * np.array([[1, 1, -1], [-1, 1, -1], [1, -1, 1], [-1, -1, -1], [1, 1, 1]]),
        "w_hat_mul": 30 * np.array([[1, 1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1], [1, 1, 1]]),
        "m_hat_mul": 200 * np.array([[1, -1, -1], [1, 1, -1], [-1, -1, 1], [-1, -1, 1], [-1, 1, 1]]),
        "g": np.array([200, -200, 200]),
    },
}


@pytest.mark.parametrize("name", list(EXACT))
def test_exact_weights_have_zero_sparsity_error_and_penalty(name):
    layer = built(name)
    params = {key: value.astype(np.float32) for key, value in EXACT[name].items()}
    assert float(layer.sparsity_error(**params)) == 0.0
    assert float(layer.regularizer(**params)) == 0.0
    stacked = {key: np.stack([value] * REPLICAS) for key, value in params.items()}
    np.testing.assert_array_equal(np.asarray(layer.sparsity_error(**stacked)), np.zeros(REPLICAS))


def test_near_exact_weights_report_their_distance():
    assert float(NMU(1).sparsity_error(w=np.array([[0.999], [0.0]], np.float32))) == pytest.approx(1e-3, rel=1e-3)


def test_relu_mlp_has_no_discrete_weights():
    layer = built("relu")
    assert layer.discrete_weights(**random_params("relu", layer, np.random.default_rng(7))) == []


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


def test_realnpu_divides_with_signs():
    """W_r = [1, -1], gates at 1: y = x0 / x1 over all four sign combinations."""
    x = np.array([[6.0, 2.0], [-6.0, 2.0], [6.0, -2.0], [-6.0, -2.0]], np.float32)
    y = RealNPU(1).forward(x, np.array([[1.0], [-1.0]], np.float32), np.ones(2, np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], [3.0, -3.0, -3.0, 3.0], rtol=1e-5)


def test_realnpu_closed_gate_makes_an_input_irrelevant():
    x = np.array([[3.0, -1e-3], [3.0, 5.0]], np.float32)
    y = RealNPU(1).forward(x, np.array([[2.0], [-1.0]], np.float32), np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], [9.0, 9.0], rtol=1e-5)


def test_nainpu_divides_with_signs_and_has_no_constant_term():
    """W_r = [1, -1]: y = x0 / x1 over all four sign combinations; W_r = 0 gives exactly 1."""
    x = np.array([[6.0, 2.0], [-6.0, 2.0], [6.0, -2.0], [-6.0, -2.0]], np.float32)
    y = NaiNPU(1).forward(x, np.array([[1.0], [-1.0]], np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], [3.0, -3.0, -3.0, 3.0], rtol=1e-5)
    # Every input is a factor: the only way to make an input irrelevant is the power 0.
    y = NaiNPU(1).forward(x, np.array([[2.0], [0.0]], np.float32))
    np.testing.assert_allclose(np.asarray(y)[:, 0], [36.0, 36.0, 36.0, 36.0], rtol=1e-5)


def test_nmru_divides_with_signs():
    """W selects x0 and 1/x1: y = x0 / x1 with the sign recovered."""
    x = np.array([[6.0, 2.0], [-6.0, 2.0], [6.0, -2.0], [-6.0, -2.0]], np.float32)
    w = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)  # rows: x0, x1, 1/x0, 1/x1
    np.testing.assert_allclose(np.asarray(NMRU(1).forward(x, w))[:, 0], [3.0, -3.0, -3.0, 3.0], rtol=1e-6)
    without_sign = NMRU(1, sign_retrieval=False).forward(x, w)
    np.testing.assert_allclose(np.asarray(without_sign)[:, 0], [3.0, -3.0, -3.0, 3.0], rtol=1e-6)


def test_nmru_reciprocal_guard_keeps_the_sign_of_tiny_inputs():
    x = np.array([[-1e-12, 1e-12, 0.0]], np.float32)
    w = np.concatenate([np.zeros((3, 3)), np.eye(3)]).astype(np.float32)  # select each 1/x_i
    y = np.asarray(NMRU(3, sign_retrieval=False).forward(x, w))[0]
    assert y[0] < 0 and y[1] > 0 and y[2] > 0 and np.all(np.isfinite(y))


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


@pytest.mark.parametrize("units", [0, -2, 2.5, True])
@pytest.mark.parametrize("layer_cls", [NAU, NMU, INALU, RealNPU, NaiNPU, NMRU, Linear, ReLUMLP])
def test_invalid_units_are_rejected_quoting_the_value(layer_cls, units):
    with pytest.raises(ValueError, match=f"Received: units={units}"):
        layer_cls(units)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: INALU(1, epsilon=0), "Received: epsilon=0"),
        (lambda: INALU(1, omega=-1.0), "Received: omega=-1.0"),
        (lambda: INALU(1, regularizer_threshold="20"), "Received: regularizer_threshold=20"),
        (lambda: RealNPU(1, epsilon=-1e-7), "Received: epsilon=-1e-07"),
        (lambda: NaiNPU(1, epsilon=0.0), "Received: epsilon=0.0"),
        (lambda: NMRU(1, epsilon=-1.0), "Received: epsilon=-1.0"),
        (lambda: NMRU(1, sign_retrieval="yes"), "Received: sign_retrieval=yes"),
        (lambda: ReLUMLP(1, hidden_units=0), "Received: hidden_units=0"),
        (lambda: ReLUMLP(1, hidden_units=3.0), "Received: hidden_units=3.0"),
    ],
)
def test_invalid_arguments_are_rejected_quoting_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_every_configurable_unit_has_a_layer_in_the_same_order():
    assert tuple(UNIT_LAYERS) == UNITS
    assert UNITS == ("nac", "nalu", "nau", "nmu", "inalu", "realnpu", "nainpu", "nmru", "linear", "relu", "gated")


def test_every_registered_name_resolves_to_the_arithmetic_unit_class_the_table_names():
    for name, layer_cls in UNIT_LAYERS.items():
        assert isinstance(layer_cls, type) and issubclass(layer_cls, ArithmeticUnit), name
        assert layer_cls.__name__ == UNIT_CLASSES[name]


@pytest.mark.parametrize("layer_cls", [NAU, NMU, INALU, RealNPU, NaiNPU, NMRU, Linear, ReLUMLP])
def test_layers_are_registered_under_the_nalu_package(layer_cls):
    assert keras.saving.get_registered_name(layer_cls) == f"nalu>{layer_cls.__name__}"


@pytest.mark.parametrize("name", CASE_IDS)
def test_gradients_are_finite_in_a_compiled_replica_step(name):
    """The replica trainer's use: variables [R, ...], forward + regulariser inside tf.function, then clip."""
    import tensorflow as tf

    rng = np.random.default_rng(9)
    layer = built(name)
    params = {k: tf.Variable(v) for k, v in random_params(name, layer, rng, leading=(REPLICAS,)).items()}
    x = tf.constant(CASES[name][3](rng, (REPLICAS, BATCH, IN)).astype(np.float32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.reduce_mean(layer.forward(x, **params) ** 2, axis=(-2, -1)))
            loss += tf.reduce_sum(layer.regularizer(**params))
        return tape.gradient(loss, params), layer.clip(**params)

    grads, clipped = step()
    for key, grad in grads.items():
        assert grad is not None and grad.shape == params[key].shape
        assert np.all(np.isfinite(grad.numpy())), key
    assert set(clipped) == set(params)
