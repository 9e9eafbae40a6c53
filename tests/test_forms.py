"""The exact forms selection tries besides each unit's snap: the sum of sums (training/forms.py)."""

import numpy as np
import pytest
import tensorflow as tf

from nalu_cli import tasks
from nalu_cli.config import ModelConfig, resolve
from nalu_cli.model import build_model, forward, get_params, static_layers, unit_layers
from nalu_cli.training.evaluate import make_evaluator
from nalu_cli.training.forms import best_form, composite_forms

N, A, B = 12, slice(0, 5), slice(3, 8)  # slices overlapping on inputs 3 and 4


def stacked(layers_params):
    """One replica's params per layer -> a leading replica axis of 1, float32."""
    return [{k: tf.constant(np.asarray(v, np.float32)[None]) for k, v in p.items()} for p in layers_params]


def trapped_half_sums(mix=0.45):
    """NAU -> gated as training leaves a+b: both hidden units on (a + b) / 2 (1 on the shared inputs,
    1/2 elsewhere in the slices, a little noise), the output summing them at 0.9 while the gate
    still mixes in the product path."""
    rng = np.random.default_rng(0)
    half = np.zeros(N)
    half[A] += 0.5
    half[B] += 0.5
    w = np.stack([half, half], axis=1) * 0.8 + rng.uniform(-0.03, 0.03, (N, 2))
    gated = {"w_add": np.full((2, 1), 0.9), "w_pow": np.ones((2, 1)), "g_pow": np.full(2, 0.5), "mix": np.array([mix])}
    return [{"w": w}, gated]


def layers_of(units):
    layers = static_layers(ModelConfig(unit=units[0], layers=list(units)))
    for layer, size in zip(layers, [N, 2]):
        layer.build((None, size))
    return layers


def exact(layers, params, x):
    return np.asarray(forward_of(layers, params, x))


def forward_of(layers, params, x):
    for layer, p in zip(layers, params):
        x = layer.forward(x, **p)
    return x


def test_the_trapped_half_sums_factor_into_the_exact_sum_at_scale_2():
    layers = layers_of(("nau", "gated"))
    params = stacked(trapped_half_sums())
    x = np.random.default_rng(1).uniform(2, 6, (1, 64, N)).astype(np.float32)
    truth = x[..., A].sum(-1) + x[..., B].sum(-1)
    snapped = [layer.snap(**p) for layer, p in zip(layers, params)]
    assert not np.allclose(exact(layers, snapped, x)[..., 0], truth, rtol=1e-5)  # what each unit's snap makes of it
    scale_1, scale_2 = composite_forms(layers, params)
    assert np.allclose(exact(layers, scale_2, x)[..., 0], truth, rtol=1e-6)  # a+b exactly, far outside [1, 2]
    assert not np.allclose(exact(layers, scale_1, x)[..., 0], truth, rtol=1e-3)  # the union's sum
    first, second = scale_2
    assert set(np.unique(first["w"])) <= {-1.0, 0.0, 1.0} and float(second["mix"][0, 0]) == 1.0
    assert np.all(np.asarray(second["w_add"]) == 1.0)


def test_a_difference_factors_at_scale_1():
    layers = layers_of(("nau", "gated"))
    one = np.zeros(N)
    one[0:3], one[5:8] = 0.6, -0.6  # a - b: the shared inputs cancel
    params = stacked([{"w": np.stack([one, one * 0.5], axis=1)},
                      {"w_add": np.array([[0.7], [0.6]]), "w_pow": np.ones((2, 1)), "g_pow": np.full(2, 0.5),
                       "mix": np.array([0.5])}])
    x = np.random.default_rng(2).uniform(-6, 6, (1, 64, N)).astype(np.float32)
    form = composite_forms(layers, params)[0]
    assert np.allclose(exact(layers, form, x)[..., 0], x[..., A].sum(-1) - x[..., B].sum(-1), atol=1e-4)


@pytest.mark.parametrize("units", [("nau", "nmu"), ("nmu", "nau"), ("nau", "nainpu"), ("nalu", "nalu")])
def test_no_sum_of_sums_where_a_layer_has_no_sum_form(units):
    layers = layers_of(units)
    params = [{k: tf.constant(np.asarray(v)[None]) for k, v in layer.params().items()} for layer in layers]
    assert composite_forms(layers, params) == []


def test_one_hidden_unit_is_factored_at_scale_1_only():
    layers = static_layers(ModelConfig(unit="nau"))
    layers[0].build((None, N))
    layers[1].build((None, 1))
    params = [{"w": tf.constant(np.full((1, N, 1), 0.4, np.float32))}, {"w": tf.constant(np.full((1, 1, 1), 0.5, np.float32))}]
    assert len(composite_forms(layers, params)) == 1


def test_the_best_form_is_chosen_per_replica_first_on_ties_and_never_a_non_finite_one():
    forms = [[{"w": tf.constant(np.full((4, 2), float(k), np.float32))}] for k in range(3)]
    interpolation = [tf.constant([1.0, np.nan, 2.0, 5.0]), tf.constant([1.0, 3.0, 1.0, np.inf]),
                     tf.constant([0.5, np.nan, 1.0, np.nan])]
    best = best_form(forms, interpolation)
    assert np.asarray(best[0]["w"])[:, 0].tolist() == [2.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("kind", ["static", "recurrent"])
def test_the_evaluator_tries_the_sum_of_sums_on_the_static_task_only(kind, monkeypatch):
    """Static: the snapped candidate of the trapped half sums is the exact a+b (it wins on the
    validation samples); a recurrent cell is not a sum of its inputs, so it is never tried there."""
    from nalu_cli.training import evaluate as evaluation

    tried = []
    monkeypatch.setattr(evaluation, "forms_of", lambda *args: tried.append(1) or composite_forms(*args))
    task = {"op": "add", "input_size": N, "subsets": [[0, 5], [3, 8]], "kind": kind, "validation_size": 2000,
            "test_size": 200, **({"extrapolation_length": 20} if kind == "recurrent" else {})}
    spec = tasks.TaskSpec.from_config(resolve({"task": task}).task, seed=0)
    if kind == "static":
        layers = layers_of(("nau", "gated"))
        params = stacked(trapped_half_sums())
        evaluate = make_evaluator(lambda p, x: forward_of(layers, p, x), layers, [spec], snap=True)
    else:
        model = build_model(ModelConfig(unit="nau", layers=["nau", "gated"]), N, seed=0, kind="recurrent")
        layers = unit_layers(model)
        params = [{k: tf.constant(v[None]) for k, v in p.items()} for p in get_params(model)]
        evaluate = make_evaluator(lambda p, x: forward(model, p, x), layers, [spec], snap=True)
    plain, snapped = evaluate(params)
    assert bool(tried) == (kind == "static")
    if kind == "static":
        assert snapped.interpolation[0] < 1e-8 and snapped.extrapolation[0] < 1e-6
        assert float(snapped.params[1]["mix"][0, 0]) == 1.0
