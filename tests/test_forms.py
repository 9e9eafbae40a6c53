"""The exact forms selection tries besides each unit's snap: the sum of sums (training/forms.py)."""

import numpy as np
import pytest
import tensorflow as tf

from nalu_cli import tasks
from nalu_cli.config import ModelConfig, resolve
from nalu_cli.model import build_model, forward, get_params, static_layers, unit_layers
from nalu_cli.training.evaluate import make_evaluator
from nalu_cli.training.forms import best_form, power_forms, sum_forms

N, A, B = 12, slice(0, 5), slice(3, 8)  # slices overlapping on inputs 3 and 4


def stacked(layers_params):
    """One replica's params per layer -> a leading replica axis of 1, float32."""
    return [{k: tf.constant(np.asarray(v, np.float32)[None]) for k, v in p.items()} for p in layers_params]


def snaps(layers, params):
    return [layer.snap(**p) for layer, p in zip(layers, params)]


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
    scale_1, scale_2 = sum_forms(layers, params, snaps(layers, params))
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
    form = sum_forms(layers, params, snaps(layers, params))[0]
    assert np.allclose(exact(layers, form, x)[..., 0], x[..., A].sum(-1) - x[..., B].sum(-1), atol=1e-4)


@pytest.mark.parametrize("units", [("nau", "nmu"), ("nmu", "nau"), ("nau", "nainpu"), ("nalu", "nalu")])
def test_no_sum_of_sums_where_a_layer_has_no_sum_form(units):
    layers = layers_of(units)
    params = [{k: tf.constant(np.asarray(v)[None]) for k, v in layer.params().items()} for layer in layers]
    assert sum_forms(layers, params, params) == []  # NALU has no snap: nothing is asked of it


def test_one_hidden_unit_is_factored_at_scale_1_only():
    layers = static_layers(ModelConfig(unit="nau"))
    layers[0].build((None, N))
    layers[1].build((None, 1))
    params = [{"w": tf.constant(np.full((1, N, 1), 0.4, np.float32))}, {"w": tf.constant(np.full((1, 1, 1), 0.5, np.float32))}]
    assert len(sum_forms(layers, params, snaps(layers, params))) == 1


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
    monkeypatch.setattr(evaluation, "sum_forms", lambda *args: tried.append(1) or sum_forms(*args))
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


def samples(target, low=1.0, high=2.0, n=256, seed=4):
    x = np.random.default_rng(seed).uniform(low, high, (1, n, N)).astype(np.float32)
    a, b = x[..., A].sum(-1), x[..., B].sum(-1)
    return x, target(a, b)[..., None].astype(np.float32)


def powered(layers, params, target):
    """power_forms on interpolation-like samples; the form's output and the truth on extrapolation ones."""
    x, y = samples(target)
    forms = power_forms(layers, params, snaps(layers, params), lambda tree: (tree, tf.constant(x), tf.constant(y)))
    far, truth = samples(target, 2.0, 6.0, seed=5)
    return forms, far, truth[..., 0]


def gated_over(w, w_pow=(1.0, 1.0), mix=0.6):
    return stacked([{"w": w}, {"w_add": np.full((2, 1), 0.5), "w_pow": np.array([w_pow]).T,
                               "g_pow": np.full(2, 0.4), "mix": np.array([mix])}])


def pattern(*pieces):
    """A first layer [N, 2]: each column a scaled slice plus a little noise."""
    rng = np.random.default_rng(6)
    columns = []
    for where, scale in pieces:
        column = rng.uniform(-0.04, 0.04, N)
        column[where] += scale
        columns.append(column)
    return np.stack(columns, axis=1)


def test_a_unit_holding_a_scaled_negative_copy_of_a_gives_its_square_root():
    layers = layers_of(("nau", "gated"))
    params = gated_over(pattern((A, -0.4), (slice(8, 12), 0.2)))
    (form,), far, truth = powered(layers, params, lambda a, b: np.sqrt(a))
    assert np.allclose(exact(layers, form, far)[..., 0], truth, rtol=1e-5)
    assert float(form[1]["mix"][0, 0]) == 0.0 and np.asarray(form[1]["w_pow"])[0, :, 0].tolist() == [0.5, 0.0]


def test_two_units_holding_a_and_b_give_their_ratio_and_their_product():
    for units, target, powers in [(("nau", "gated"), lambda a, b: a / b, [1.0, -1.0]),
                                  (("nau", "nainpu"), lambda a, b: a * b, [1.0, 1.0])]:
        layers = layers_of(units)
        w = pattern((A, 0.7), (B, -0.6))
        params = gated_over(w) if units[1] == "gated" else stacked([{"w": w}, {"w_real": np.array([[0.8], [0.3]])}])
        (form,), far, truth = powered(layers, params, target)
        assert np.allclose(exact(layers, form, far)[..., 0], truth, rtol=1e-5), units
        power = form[1]["w_pow" if units[1] == "gated" else "w_real"]
        assert np.asarray(power)[0, :, 0].tolist() == powers


def test_a_repeated_pattern_gets_power_0_and_the_first_takes_the_whole_power():
    layers = layers_of(("nau", "gated"))
    params = gated_over(pattern((A, 0.5), (A, 0.45)))
    (form,), far, truth = powered(layers, params, lambda a, b: a * a)
    assert np.asarray(form[1]["w_pow"])[0, :, 0].tolist() == [2.0, 0.0]
    assert np.allclose(exact(layers, form, far)[..., 0], truth, rtol=1e-5)


def test_a_unit_not_positive_on_every_sample_gets_power_0():
    layers = layers_of(("nau", "gated"))
    w = pattern((A, 0.7), (A, 0.5))
    w[B, 1] = -0.5  # a - b: changes sign over the samples
    (form,), _, _ = powered(layers, gated_over(w), lambda a, b: a)
    assert np.asarray(form[1]["w_pow"])[0, :, 0].tolist() == [1.0, 0.0]


def test_an_nmu_takes_the_product_of_its_units_at_power_1_and_drops_any_other_power():
    layers = layers_of(("nau", "nmu"))
    params = stacked([{"w": pattern((A, 0.7), (B, -0.6))}, {"w": np.array([[0.8], [0.3]])}])
    (form,), far, truth = powered(layers, params, lambda a, b: a * b)
    assert np.asarray(form[1]["w"])[0, :, 0].tolist() == [1.0, 1.0]
    assert np.allclose(exact(layers, form, far)[..., 0], truth, rtol=1e-5)
    (form,), _, _ = powered(layers, params, lambda a, b: a * a)  # a power of 2: not an NMU's
    assert np.asarray(form[1]["w"])[0, :, 0].tolist() == [0.0, 0.0]


def test_no_product_of_powers_under_a_unit_without_one():
    layers = layers_of(("nau", "nau"))
    params = stacked([{"w": pattern((A, 0.7), (B, 0.6))}, {"w": np.array([[0.8], [0.3]])}])
    assert powered(layers, params, lambda a, b: a * b)[0] == []
