"""Each unit's output against a numpy transcription of the paper's equations."""

import keras
import numpy as np
import pytest

from nalu_cli.units import NAC, NALU


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


def layer_weights(layer):
    return {name: var.numpy().astype(np.float64) for name, var in layer.params().items()}


@pytest.mark.parametrize(
    "layer_cls, reference", [(NAC, numpy_nac), (NALU, numpy_nalu)], ids=["nac", "nalu"]
)
def test_layer_matches_numpy_equations(layer_cls, reference):
    rng = np.random.default_rng(0)
    # Mixed signs and magnitudes: the log path must use |x|, and exp must not be clipped.
    x = rng.uniform(-3, 3, size=(64, 7)).astype(np.float32)
    layer = layer_cls(3)
    layer.build((None, 7))
    for var in layer.params().values():
        var.assign(rng.normal(0, 1, size=var.shape).astype(np.float32))
    expected = reference(x.astype(np.float64), **layer_weights(layer))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=2e-5, atol=1e-5)


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


@pytest.mark.parametrize("units", [0, -1, 1.5, True])
def test_invalid_units_are_rejected_quoting_the_value(units):
    with pytest.raises(ValueError, match=f"Received: units={units}"):
        NAC(units)


def test_config_round_trip_keeps_hyperparameters():
    layer = NALU(3, epsilon=1e-5, name="unit")
    clone = NALU.from_config(layer.get_config())
    assert (clone.units, clone.epsilon, clone.name) == (3, 1e-5, "unit")


def test_layers_are_registered_under_the_nalu_package():
    assert keras.saving.get_registered_name(NALU) == "nalu>NALU"
    assert keras.saving.get_registered_name(NAC) == "nalu>NAC"
