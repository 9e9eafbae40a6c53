"""The gated NAU/RealNPU unit: maths vs numpy, clipping, snapping, serialisation, exact arithmetic."""

import keras
import numpy as np
import pytest

from nalu_cli.units import Gated


def numpy_gated(x, w_add, w_pow, g_pow, mix, eps=1.1920929e-07):
    g = np.clip(g_pow, 0, 1)
    r = g * (np.abs(x) + eps) + (1 - g)
    k = g * np.pi * (x < 0)
    power = np.exp(np.log(r) @ w_pow) * np.cos(k @ w_pow)
    c = np.clip(mix, 0, 1)
    return c * (x @ w_add) + (1 - c) * power


def random_layer(rng, fan_in=5, units=3):
    layer = Gated(units)
    layer.build((None, fan_in))
    layer.w_add.assign(rng.uniform(-1, 1, (fan_in, units)).astype(np.float32))
    layer.w_pow.assign(rng.normal(0, 0.7, (fan_in, units)).astype(np.float32))
    layer.g_pow.assign(rng.uniform(0, 1, (fan_in,)).astype(np.float32))
    layer.mix.assign(rng.uniform(0, 1, (units,)).astype(np.float32))
    return layer


def test_matches_numpy_on_mixed_signs():
    rng = np.random.default_rng(0)
    layer = random_layer(rng)
    x = rng.uniform(-3, 3, (32, 5)).astype(np.float32)
    weights = {k: v.numpy().astype(np.float64) for k, v in layer.params().items()}
    np.testing.assert_allclose(np.asarray(layer(x)), numpy_gated(x.astype(np.float64), **weights), rtol=1e-4, atol=1e-4)


def test_replica_axis_matches_single_calls():
    rng = np.random.default_rng(1)
    layers = [random_layer(rng) for _ in range(3)]
    x = rng.uniform(0.5, 2, (3, 16, 5)).astype(np.float32)
    stacked = {name: np.stack([layer.params()[name].numpy() for layer in layers]) for name in layers[0].weight_names}
    together = np.asarray(layers[0].forward(x, **stacked))
    for r, layer in enumerate(layers):
        np.testing.assert_allclose(together[r], np.asarray(layer(x[r])), rtol=1e-6)


def test_clip_keeps_weights_and_gates_in_range():
    rng = np.random.default_rng(2)
    layer = random_layer(rng)
    params = {name: value * 5 for name, value in layer.params().items()}
    clipped = layer.clip(**params)
    assert np.all(np.abs(clipped["w_add"]) <= 1)
    assert np.all((clipped["g_pow"] >= 0) & (clipped["g_pow"] <= 1))
    margin = Gated.MIX_MARGIN
    assert np.all((clipped["mix"] >= margin) & (clipped["mix"] <= 1 - margin))
    np.testing.assert_array_equal(clipped["w_pow"], params["w_pow"])


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
def test_snapped_weights_compute_the_op_exactly(exponents, mix, formula):
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


def test_keras_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    model = keras.Sequential([keras.Input((5,)), random_layer(rng)])
    x = rng.uniform(1, 2, (8, 5)).astype(np.float32)
    model.save(tmp_path / "gated.keras")
    reloaded = keras.saving.load_model(tmp_path / "gated.keras")
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(model(x)))


def test_a_gate_pushed_to_sum_still_trains_the_product_path():
    """Training clips the gate inside [0, 1]: at "all sum" the product path keeps a gradient,
    so a restart whose gate reached the sum path first can still move to products."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    layer = random_layer(rng, fan_in=2, units=1)
    params = layer.clip(**{**{k: tf.constant(v) for k, v in layer.params().items()}, "mix": tf.constant([5.0])})
    x = tf.constant(rng.uniform(1, 2, (16, 2)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(params["w_pow"])
        total = tf.reduce_sum(layer.forward(x, **params))
    assert float(tf.reduce_max(tf.abs(tape.gradient(total, params["w_pow"])))) > 0
