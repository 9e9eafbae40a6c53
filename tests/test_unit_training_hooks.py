"""What the trainer uses from a unit besides its output: the regulariser and its schedule,
the sparsity error, `clip`, the initial weights, and gradients in a compiled replica step."""

import math

import numpy as np
import pytest

from nalu_cli.units import INALU, NAU, NMRU, NMU, Gated, Linear, NaiNPU, RealNPU, ReLUMLP
from tests.unit_cases import BATCH, CASE_IDS, CASES, IN, OUT, REPLICAS, built, random_params

# -- regulariser and sparsity error -----------------------------------------------------------


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


@pytest.mark.parametrize(
    "layer_cls, magnitude_only", [(NAU, False), (NMU, True), (NMRU, True)], ids=["nau", "nmu", "nmru"]
)
def test_regularizer_is_mean_distance_to_discrete_values(layer_cls, magnitude_only):
    """mean(min(|W|, 1 - |W|)) (Madsen & Johansen 2020); NMU and NMRU weights live in [0, 1]."""
    w = np.array([[0.2, -0.9], [0.5, 1.0]], np.float32)
    expected = np.mean([0.2, 0.1, 0.5, 0.0])
    assert float(layer_cls(2).regularizer(w=np.abs(w) if magnitude_only else w)) == pytest.approx(expected, rel=1e-6)


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


def test_relu_mlp_has_no_discrete_weights():
    layer = built("relu")
    assert layer.discrete_weights(**random_params("relu", layer, np.random.default_rng(7))) == []


@pytest.mark.parametrize(
    "layer_cls, schedule",
    [
        (NAU, (0.01, 5_000, 50_000)),
        (NMU, (10.0, 1_000_000, 2_000_000)),
        (NMRU, (10.0, 50_000, 75_000)),
        (RealNPU, (1.0, 50_000, 75_000)),
        (NaiNPU, (1.0, 50_000, 75_000)),
        (INALU, (1.0, 10_000, 10_001)),
    ],
)
def test_published_regularizer_schedules(layer_cls, schedule):
    assert layer_cls.regularizer_schedule == schedule


# Exact solutions: discrete weights at {-1, 0, 1} (gates at {0, 1}).
# Saturated raw parameters: tanh(+-30) and sigmoid(+-200) round to exactly +-1 and 0/1 in float32,
# and every |v| >= t = 20, so iNALU's hinge penalty is 0 too.
SIGNS = np.array([[1, -1, 1], [1, 1, -1], [-1, 1, 1], [1, 1, 1], [-1, -1, 1]])
ON_OFF = np.array([[1, 1, -1], [-1, 1, -1], [1, -1, 1], [-1, -1, -1], [1, 1, 1]])
EXACT = {
    "nac": {"w_hat": 30 * SIGNS, "m_hat": 200 * ON_OFF},
    # NALU's gate G is not a discrete weight: any value.
    "nalu": {"w_hat": 30 * SIGNS, "m_hat": 200 * ON_OFF, "g": np.linspace(-2, 2, IN * OUT).reshape(IN, OUT)},
    "nau": {"w": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]])},
    "nmu": {"w": np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0]])},
    "nmru": {"w": np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0]] * 2)},
    "realnpu": {
        "w_real": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]]),
        "g": np.array([1, 0, 1, 1, 0]),
    },
    "nainpu": {"w_real": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]])},
    "linear": {"kernel": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]])},
    "inalu": {
        "w_hat_add": 30 * SIGNS,
        "m_hat_add": 200 * ON_OFF,
        "w_hat_mul": 30 * np.array([[1, 1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1], [1, 1, 1]]),
        "m_hat_mul": 200 * np.array([[1, -1, -1], [1, 1, -1], [-1, -1, 1], [-1, -1, 1], [-1, 1, 1]]),
        "g": np.array([200, -200, 200]),
    },
    # The power path's W_p and g are not discrete weights: any value.
    "gated": {
        "w_add": np.array([[1, -1, 0], [0, 1, 0], [-1, 0, 1], [0, 0, 0], [1, 1, -1]]),
        "w_pow": np.linspace(-1.5, 2, IN * OUT).reshape(IN, OUT),
        "g_pow": np.linspace(0, 1, IN),
        "mix": np.array([1, 0, 1]),
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


# -- clip -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, intervals",
    [
        ("nau", {"w": (-1.0, 1.0)}),
        ("nmu", {"w": (0.0, 1.0)}),
        ("nmru", {"w": (0.0, 1.0)}),
        ("realnpu", {"g": (0.0, 1.0)}),
        # The gate stays MIX_MARGIN inside [0, 1] while training, so both paths keep a gradient.
        ("gated", {"w_add": (-1.0, 1.0), "g_pow": (0.0, 1.0), "mix": (Gated.MIX_MARGIN, 1 - Gated.MIX_MARGIN)}),
    ],
)
def test_clip_puts_weights_in_the_published_interval(name, intervals):
    layer = built(name)
    rng = np.random.default_rng(4)
    params = {k: rng.uniform(-3, 3, (REPLICAS, *v.shape)).astype(np.float32) for k, v in layer.params().items()}
    clipped = {k: np.asarray(v) for k, v in layer.clip(**params).items()}
    assert set(clipped) == set(params)
    for key, (low, high) in intervals.items():
        low, high = np.float32(low), np.float32(high)
        assert clipped[key].shape == params[key].shape
        assert clipped[key].min() == low and clipped[key].max() == high, key
        inside = (params[key] >= low) & (params[key] <= high)
        np.testing.assert_array_equal(clipped[key][inside], params[key][inside])
    for other in set(params) - set(intervals):  # e.g. RealNPU's W_r is real-valued and left alone
        np.testing.assert_array_equal(clipped[other], params[other])


@pytest.mark.parametrize("name", ["nac", "nalu", "inalu", "nainpu", "linear", "relu"])
def test_units_without_published_clipping_leave_parameters_alone(name):
    layer = built(name)
    params = random_params(name, layer, np.random.default_rng(5))
    params = {k: 10 * v for k, v in params.items()}
    for key, value in layer.clip(**params).items():
        np.testing.assert_array_equal(np.asarray(value), params[key])


# -- initial weights --------------------------------------------------------------------------


def test_nau_starts_in_the_published_uniform_range():
    """U[-r, r], r = min(0.5, sqrt(3) * sqrt(2 / (in + out))) (Madsen & Johansen 2020)."""
    nau = NAU(OUT)
    nau.build((None, 100))
    r = min(0.5, math.sqrt(3) * math.sqrt(2 / (100 + OUT)))
    w = nau.w.numpy()
    assert np.abs(w).max() <= r and np.abs(w).max() > 0.8 * r


def test_nmu_starts_in_the_published_uniform_range():
    nmu = NMU(OUT)
    nmu.build((None, 100))
    assert 0.25 <= nmu.w.numpy().min() and nmu.w.numpy().max() <= 0.75


def test_nmru_starts_in_the_published_uniform_range_over_inputs_and_reciprocals():
    nmru = NMRU(OUT)
    nmru.build((None, 100))
    assert nmru.w.shape == (200, OUT)
    assert 0.25 <= nmru.w.numpy().min() and nmru.w.numpy().max() <= 0.75


def test_realnpu_gates_start_half_open():
    npu = RealNPU(OUT)
    npu.build((None, 100))
    np.testing.assert_array_equal(npu.g.numpy(), np.full(100, 0.5, np.float32))


def test_inalu_starts_at_its_published_means_with_one_gate_per_output():
    inalu = INALU(OUT)
    inalu.build((None, 100))
    assert inalu.g.shape == (OUT,)  # one gate per output, independent of x
    assert abs(inalu.w_hat_mul.numpy().mean() - 1) < 0.05 and abs(inalu.m_hat_add.numpy().mean() + 1) < 0.05


# -- what the replica trainer runs ------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_IDS)
def test_gradients_are_finite_in_a_compiled_replica_step(name):
    """The replica trainer's use: variables [R, ...], forward + regulariser inside tf.function, then clip."""
    import tensorflow as tf

    rng = np.random.default_rng(9)
    layer = built(name)
    params = {k: tf.Variable(v) for k, v in random_params(name, layer, rng, leading=(REPLICAS,)).items()}
    x = tf.constant(CASES[name].inputs(rng, (REPLICAS, BATCH, IN)).astype(np.float32))

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


def test_gated_product_path_still_trains_when_the_gate_is_pushed_to_the_sum():
    """Training clips the gate inside [0, 1]: at "all sum" the product path keeps a gradient,
    so a restart whose gate reached the sum path first can still move to products."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    layer = Gated(1)
    layer.build((None, 2))
    params = {k: tf.constant(v) for k, v in random_params("gated", layer, rng).items()}
    params = layer.clip(**{**params, "mix": tf.constant([5.0])})
    x = tf.constant(rng.uniform(1, 2, (16, 2)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(params["w_pow"])
        total = tf.reduce_sum(layer.forward(x, **params))
    assert float(tf.reduce_max(tf.abs(tape.gradient(total, params["w_pow"])))) > 0
