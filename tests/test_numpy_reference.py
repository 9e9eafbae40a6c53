"""Checks for the hand-written numpy NAU -> NMU reference step (benchmarks/numpy_reference.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "numpy_reference.py"
_spec = importlib.util.spec_from_file_location("numpy_reference", _PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

SUBSETS = ref.DEFAULT_SUBSETS


# ---- an independent, deliberately plain float64 version of the loss --------------------------
def loss64(W1, W2, x, y, lam):
    """MSE of NAU(W1) -> NMU(W2) plus lam * (mean(min(|W1|, 1-|W1|)) + mean(min(|W2|, 1-|W2|)))."""
    h = x @ W1                                            # (B, 2)
    y_hat = np.prod(W2[:, 0] * h + 1.0 - W2[:, 0], axis=1)
    mse = np.mean((y_hat - y) ** 2)
    reg = sum(np.mean(np.minimum(np.abs(W), 1.0 - np.abs(W))) for W in (W1, W2))
    return mse + lam * reg


def central_diff(fun, W, eps):
    grad = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        old = W[idx]
        W[idx] = old + eps
        up = fun()
        W[idx] = old - eps
        down = fun()
        W[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


def batch(rng, size, low=1.0, high=2.0):
    x = rng.uniform(low, high, size=(size, 100))
    (a0, a1), (b0, b1) = SUBSETS
    return x, x[:, a0:a1].sum(1) * x[:, b0:b1].sum(1)


def model(dtype=np.float64, seed=0, **kwargs):
    return ref.NumpyNauNmu(rng=np.random.default_rng(seed), dtype=dtype, **kwargs)


def exact_model(dtype=np.float32, **kwargs):
    m = model(dtype=dtype, **kwargs)
    (a0, a1), (b0, b1) = SUBSETS
    m.W1[...] = 0.0
    m.W1[a0:a1, 0] = 1.0
    m.W1[b0:b1, 1] = 1.0
    m.W2[...] = 1.0
    return m


# ---- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.01, 3.0])
def test_gradients_match_finite_differences_float64(lam):
    rng = np.random.default_rng(1)
    m = model(batch_size=16)
    x, y = batch(rng, 16)
    # Move W2 away from its init so no factor is trivially simple, and away from the |W|=0.5 kink.
    m.W2[...] = np.array([[0.3], [0.8]])
    loss = m.loss_and_grad(x, y, lam)
    W1, W2 = m.W1.copy(), m.W2.copy()
    assert loss == pytest.approx(loss64(W1, W2, x, y, lam), rel=1e-12)
    g1 = central_diff(lambda: loss64(W1, W2, x, y, lam), W1, 1e-6)
    g2 = central_diff(lambda: loss64(W1, W2, x, y, lam), W2, 1e-6)
    np.testing.assert_allclose(m.gW1T.T, g1, rtol=1e-6, atol=1e-6 * np.abs(g1).max())
    np.testing.assert_allclose(m.gw2[:, None], g2, rtol=1e-6, atol=1e-6 * np.abs(g2).max())


def test_regularizer_gradient_alone():
    """The regulariser's share of the gradient (small next to the MSE's), checked on its own,
    on both sides of the |W| = 1/2 kink, for negative W1, and at W = 0 (zero, as tf.abs gives)."""
    rng = np.random.default_rng(9)
    m = model(batch_size=8)
    x, y = batch(rng, 8)
    m.W1[:6, 0] = [-0.7, -0.49, -0.2, 0.3, 0.51, 0.9]
    m.W1[:2, 1] = 0.0
    m.W2[...] = np.array([[0.45], [0.55]])
    lam = 0.25
    m.loss_and_grad(x, y, 0.0)
    g_mse = m.grad.copy()
    m.loss_and_grad(x, y, lam)
    g_reg = m.grad - g_mse
    W1, W2 = m.W1.copy(), m.W2.copy()
    reg = lambda: lam * sum(np.mean(np.minimum(np.abs(W), 1 - np.abs(W))) for W in (W1, W2))  # noqa: E731
    fd = np.concatenate([central_diff(reg, W1, 1e-7).T.ravel(), central_diff(reg, W2, 1e-7).ravel()])
    np.testing.assert_allclose(g_reg, fd, atol=1e-9)
    assert g_reg[100] == 0.0 and g_reg[101] == 0.0                    # W1 = 0 exactly
    assert g_reg[0] == pytest.approx(lam / 200 * (+1))                # W = -0.7: d(1-|W|)/dW = +1
    assert g_reg[1] == pytest.approx(lam / 200 * (-1))                # W = -0.49: d|W|/dW = -1
    assert g_reg[200:] == pytest.approx([lam / 2, -lam / 2])          # W2 = 0.45, 0.55


def test_float32_gradients_match_float64():
    rng = np.random.default_rng(2)
    x, y = batch(rng, 128)
    m64, m32 = model(np.float64), model(np.float32)
    m32.params[...] = m64.params
    lam = 0.01
    l64 = m64.loss_and_grad(x, y, lam)
    l32 = m32.loss_and_grad(x.astype(np.float32), y.astype(np.float32), lam)
    assert l32 == pytest.approx(l64, rel=1e-4)
    scale = np.abs(m64.grad).max()
    np.testing.assert_allclose(m32.grad, m64.grad, rtol=1e-3, atol=1e-4 * scale)


def test_gradients_match_tensorflow_autodiff():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    x, y = batch(rng, 32)
    m = model(batch_size=32)
    m.W2[...] = np.array([[0.2], [0.9]])
    lam = 0.5
    m.loss_and_grad(x, y, lam)
    W1, W2 = tf.Variable(m.W1.copy()), tf.Variable(m.W2.copy())
    with tf.GradientTape() as tape:
        h = tf.matmul(x, W1)
        y_hat = tf.reduce_prod(h * tf.transpose(W2) + 1.0 - tf.transpose(W2), axis=1)
        reg = sum(tf.reduce_mean(tf.minimum(tf.abs(W), 1.0 - tf.abs(W))) for W in (W1, W2))
        loss = tf.reduce_mean((y_hat - y) ** 2) + lam * reg
    g1, g2 = tape.gradient(loss, [W1, W2])
    np.testing.assert_allclose(m.gW1T.T, g1.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.gw2[:, None], g2.numpy(), rtol=1e-10, atol=1e-12)


def test_step_is_keras_adam_then_clip():
    """One full step against a plain float64 reference: FD gradient, Keras-form Adam, clipping."""
    rng = np.random.default_rng(4)
    m = model(batch_size=8, learning_rate=0.05, lambda_hat=0.5, s0=0, s1=4)
    ref_m, ref_v = np.zeros_like(m.params), np.zeros_like(m.params)
    for t in range(1, 4):
        x, y = batch(rng, 8)
        lam = 0.5 * min(max((t - 1) / 4, 0.0), 1.0)  # lambda(step) with step = t - 1 completed steps
        W1, W2 = m.W1.copy(), m.W2.copy()
        g = np.concatenate([
            central_diff(lambda: loss64(W1, W2, x, y, lam), W1, 1e-6).T.ravel(),
            central_diff(lambda: loss64(W1, W2, x, y, lam), W2, 1e-6).ravel(),
        ])
        p = np.concatenate([W1.T.ravel(), W2.ravel()])
        ref_m += (g - ref_m) * (1 - 0.9)
        ref_v += (g * g - ref_v) * (1 - 0.999)
        lr_t = 0.05 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        p = p - lr_t * ref_m / (np.sqrt(ref_v) + 1e-7)
        p[:200] = np.clip(p[:200], -1, 1)
        p[200:] = np.clip(p[200:], 0, 1)
        assert m.regularizer_lambda(m.step_count) == pytest.approx(lam)
        m.step(x, y)
        np.testing.assert_allclose(m.params, p, rtol=1e-7, atol=1e-9)


# ---- the exact solution ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_weights_give_zero_loss_and_gradient(dtype):
    rng = np.random.default_rng(5)
    x, y = batch(rng, 128)                                # targets computed in float64, then rounded
    x, y = x.astype(dtype), y.astype(dtype)
    init = model(dtype)
    init_loss = init.loss_and_grad(x, y, 0.0)
    init_grad = np.abs(init.grad).max()                   # the scale of a typical gradient (~1e4)
    m = exact_model(dtype)
    loss = m.loss_and_grad(x, y, 0.0)
    rel = 1e-5 if dtype == np.float32 else 1e-12          # float32: only the rounding of y = a*b is left
    assert loss <= rel**2 * init_loss
    assert np.abs(m.grad).max() <= rel * init_grad
    # The regulariser is zero there too (its only gradient is the kink's one-sided push at |W| = 1).
    assert m.loss_and_grad(x, y, 0.01) == pytest.approx(loss, abs=1e-12)


def test_exact_weights_on_sampled_float32_data_are_exact():
    x, y = ref.TaskSampler(np.random.default_rng(5)).sample()
    m = exact_model(np.float32)
    assert m.loss_and_grad(x, y, 0.0) <= 1e-6
    assert np.abs(m.grad).max() <= 1e-3                   # vs ~1e4 at initialisation


def test_exact_weights_are_a_fixed_point_of_training():
    m = exact_model(np.float32, lambda_hat=0.01, s0=0, s1=10)
    sampler = ref.TaskSampler(np.random.default_rng(6))
    start = m.params.copy()
    for _ in range(50):
        loss = m.step(*sampler.sample())
        assert loss < 1e-3
    np.testing.assert_allclose(m.params, start, atol=1e-4)


# ---- clipping ----------------------------------------------------------------------------------
def test_clipping_keeps_weights_in_range():
    m = model(np.float32, learning_rate=0.3, lambda_hat=1.0, s0=0, s1=20)
    sampler = ref.TaskSampler(np.random.default_rng(7))
    hit_w1 = hit_w2 = False
    for _ in range(100):
        m.step(*sampler.sample())
        assert m.W1.min() >= -1.0 and m.W1.max() <= 1.0
        assert m.W2.min() >= 0.0 and m.W2.max() <= 1.0
        hit_w1 |= bool(np.any(np.abs(m.W1) == 1.0))
        hit_w2 |= bool(np.any((m.W2 == 0.0) | (m.W2 == 1.0)))
    assert hit_w1 and hit_w2, "the run never reached a bound, so clipping was not exercised"
    assert m.W1.dtype == np.float32 and m.W2.dtype == np.float32


# ---- data and the benchmark entry point --------------------------------------------------------
@pytest.mark.parametrize("method", ref.TaskSampler.METHODS)
@pytest.mark.parametrize("low,high", [(1.0, 2.0), (2.0, 6.0)])
def test_sampler_draws_the_task(method, low, high):
    s = ref.TaskSampler(np.random.default_rng(8), batch_size=64, low=low, high=high, method=method)
    x, y = s.sample()
    x, y = x.copy(), y.copy()
    assert x.shape == (64, 100) and x.dtype == np.float32 and y.dtype == np.float32
    assert x.min() >= low and x.max() <= high
    assert abs(float(x.mean()) - (low + high) / 2) < 0.02 * (high - low)
    x64 = x.astype(np.float64)
    (a0, a1), (b0, b1) = SUBSETS
    np.testing.assert_allclose(y, x64[:, a0:a1].sum(1) * x64[:, b0:b1].sum(1), rtol=1e-5)
    x2, _ = s.sample()
    assert not np.array_equal(x, x2)  # fresh data each call


@pytest.mark.parametrize("method", ref.TaskSampler.METHODS)
def test_run_reports_throughput(method):
    out = ref.run(200, seed=0, sampler=method)
    assert out["steps"] == 200 and out["seconds"] > 0
    assert out["steps_per_second"] == pytest.approx(200 / out["seconds"])
    assert math.isfinite(out["final_loss"])
