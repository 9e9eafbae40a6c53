"""The polish step: Levenberg-Marquardt on interpolation samples, one more selection candidate."""

import numpy as np
import pytest
import tensorflow as tf

from nalu_cli import portfolio
from nalu_cli.config import resolve
from nalu_cli.errors import NaluError
from nalu_cli.training import Replica, ReplicaTrainer


def div_config(**training):
    training = {"polish_every": 1000, "polish_iterations": 300, **training}
    return resolve({"task": {"op": "div"}, "model": {"layers": ["nau", "nainpu"]}, "training": training})


def right_structure(spec, shared=0.5, power=0.8):
    """Where Adam leaves a/b (measured): hidden units on a's and b's unshared inputs, the 12
    shared inputs half-weighted in both, powers +-0.8 -- an interpolation MSE near 1e-6,
    because a/b depends on the shared weights and the powers only at second order."""
    (a0, a1), (b0, b1) = spec.subsets
    w = np.zeros((spec.input_size, 2), np.float32)
    w[a0:a1, 0] = 1.0
    w[b0:b1, 1] = 1.0
    w[b0:a1, :] = shared
    return [{"w": w}, {"w_real": np.array([[power], [-power]], np.float32)}]


def trainer_at(config, seeds, params_of=right_structure):
    trainer = ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, s) for s in seeds])
    stacked = [params_of(r.spec) for r in trainer.replicas]
    params = [
        {name: tf.constant(np.stack([p[index][name] for p in stacked])) for name in layer}
        for index, layer in enumerate(stacked[0])
    ]
    arch = trainer.architectures[0]
    arch.state = arch.state._replace(params=params)
    return trainer


def scored(trainer, polish: bool = False):
    """The trainer's only architecture's current weights, or them polished, as a selection candidate."""
    arch = trainer.architectures[0]
    if polish:
        return arch.evaluate(arch.polish(arch.state.params), polished=True)[0]
    return arch.evaluate(arch.state.params)[0]


def test_polish_carries_a_near_solution_of_a_over_b_to_the_exact_one():
    trainer = trainer_at(div_config(), [0])
    before, polished = scored(trainer), scored(trainer, polish=True)
    assert before.interpolation[0] > 1e-7
    assert before.extrapolation[0] > trainer.thresholds[0]
    # Below the success threshold (MSE of weights 1e-5 off the exact ones) on the extrapolation range.
    assert polished.interpolation[0] < 1e-12
    assert polished.extrapolation[0] < trainer.thresholds[0]


def test_a_held_polish_carries_it_there_with_the_powers_at_one():
    """The static default model's polish (training.polish_hold): the powers at +-1 by their sign,
    the first layer refitted from its largest weights at 1, in the default model's 50 iterations."""
    held = div_config(polish_hold=True, polish_iterations=portfolio.POLISH_ITERATIONS["static"])
    trainer = trainer_at(held, [0], lambda spec: right_structure(spec, power=0.4))
    polished = scored(trainer, polish=True)
    np.testing.assert_array_equal(polished.params[1]["w_real"][0, :, 0], [1.0, -1.0])
    assert polished.interpolation[0] < 1e-12
    assert polished.extrapolation[0] < trainer.thresholds[0]


@pytest.mark.parametrize("samples, parameters", [(40, 100), (100, 40)])
def test_the_step_from_the_samples_system_is_the_step_from_the_parameters_system(samples, parameters):
    """Levenberg-Marquardt's step solved as P x P or as N x N (the push-through identity), with
    held (zero) columns and a damping per replica: the same step, to float64 round-off."""
    from nalu_cli.training.polish import lm_step

    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(2, samples, parameters)) * rng.uniform(0.01, 10, size=(2, 1, parameters))
    jacobian[:, :, :3] = 0.0  # held weights
    r = tf.constant(rng.normal(size=(2, samples)))
    damping = tf.constant([1e-6, 10.0], tf.float64)
    jacobian = tf.constant(jacobian)
    primal, dual = (lm_step(jacobian, r, damping, dual=flag).numpy() for flag in (False, True))
    np.testing.assert_allclose(dual, primal, rtol=1e-7, atol=1e-9 * np.abs(primal).max())  # P > N at lambda 1e-6: the P x P system is near singular
    assert np.all(primal[:, :3] == 0) and np.all(dual[:, :3] == 0)


def test_polish_leaves_the_training_state_alone():
    trainer = trainer_at(div_config(), [0])
    state = trainer.architectures[0].state
    before = [{k: v.numpy() for k, v in layer.items()} for layer in state.params]
    scored(trainer, polish=True)
    for layer_before, layer_after in zip(before, trainer.architectures[0].state.params):
        for name, value in layer_before.items():
            np.testing.assert_array_equal(layer_after[name].numpy(), value)


def test_polishing_three_replicas_together_equals_polishing_each_alone():
    config = div_config(polish_iterations=50)
    starts = {0: 0.3, 1: 0.5, 2: 0.7}
    params_of = lambda spec: right_structure(spec, shared=starts[spec.seed])  # noqa: E731
    trainer = trainer_at(config, [0, 1, 2], params_of)
    together = scored(trainer, polish=True)
    for index, seed in enumerate((0, 1, 2)):
        alone = trainer_at(config, [seed], params_of)
        alone_params = scored(alone, polish=True).params
        for layer_together, layer_alone in zip(together.params, alone_params):
            for name, value in layer_alone.items():
                np.testing.assert_allclose(layer_together[name][index], value[0], rtol=1e-5, atol=1e-6)


def test_fit_selects_the_polished_weights_on_interpolation_error():
    # Adam barely moves, and the shared weights at 0.3 snap to 0 (wrong): the polish must do the work.
    trainer = trainer_at(div_config(learning_rate=1e-6), [0], lambda spec: right_structure(spec, shared=0.3))
    (result,) = trainer.fit(steps=1000, eval_every=1000, early_stop=False)
    assert result.polished and result.selected_step == 1000
    assert result.interpolation_mse < 1e-12
    assert result.extrapolation_mse < trainer.thresholds[0]


def test_without_polish_every_there_is_no_polish_step():
    trainer = trainer_at(div_config(polish_every=0, learning_rate=1e-6), [0], lambda spec: right_structure(spec, shared=0.3))
    (result,) = trainer.fit(steps=1000, eval_every=1000, early_stop=False)
    assert trainer.architectures[0].polish is None and not result.polished
    assert result.extrapolation_mse > trainer.thresholds[0]  # the same start the polish solves (above)


def test_polish_limit_polishes_only_the_first_times():
    """polish_limit 2 with polish_every 100: polished at steps 100 and 200, never after."""
    config = div_config(polish_every=100, eval_every=100, polish_iterations=2, polish_limit=2, learning_rate=1e-6)
    trainer = trainer_at(config, [0])
    arch, polished_at = trainer.architectures[0], []
    polish = arch.polish
    arch.polish = lambda params: polished_at.append(trainer.step) or polish(params)
    trainer.fit(steps=500, eval_every=100, early_stop=False)
    assert polished_at == [100, 200]


@pytest.mark.parametrize("value", [0, -1])
def test_polish_limit_must_be_positive_or_null(value):
    with pytest.raises(NaluError, match="training.polish_limit"):
        div_config(polish_limit=value)


@pytest.mark.parametrize("value", [-1000, 1500])
def test_polish_every_must_be_a_multiple_of_eval_every(value):
    with pytest.raises(NaluError, match="training.polish_every"):
        div_config(polish_every=value)


def test_a_stopped_replica_gets_no_polished_candidate():
    """In a group, a replica that has stopped must end where it would have alone: no new candidates."""
    config = div_config(learning_rate=1e-6)
    trainer = trainer_at(config, [0, 1], lambda spec: right_structure(spec, shared=0.3))
    trainer.fit(steps=0, eval_every=1000, early_stop=False)  # records step 0 only
    trainer.status.active[0] = False
    results = trainer.fit(steps=1000, eval_every=1000, early_stop=False)
    assert not results[0].polished and results[0].selected_step == 0
    assert results[1].polished and results[1].selected_step == 1000


def test_a_run_reports_its_polish_time_apart_from_its_training_speed(tmp_path):
    from nalu_cli.training import train

    config = resolve({
        "task": {"op": "div", "input_size": 20},
        "model": {"layers": ["nau", "nainpu"]},
        "training": {"steps": 2000, "polish_every": 1000, "polish_iterations": 20, "early_stop": False},
    })
    summary = train(config, tmp_path / "run")
    assert summary["polish_seconds"] > 0
    step_seconds = summary["train_seconds"] - summary["polish_seconds"]
    assert summary["steps_per_second"] == pytest.approx(2000 / step_seconds, rel=0.01)


def test_the_polish_step_is_a_pure_function_of_the_weights():
    """make_polish alone, no trainer: params in, params out; the same weights give the same
    polished weights, the input is left as it was, and the fit moves it towards a/b."""
    from nalu_cli.model import build_model, forward, unit_layers
    from nalu_cli.training.polish import make_polish

    config = div_config()
    spec = Replica.for_seed(config, 0).spec
    model = build_model(config.model, spec.input_size, seed=0)
    start = [{name: tf.constant(value[None]) for name, value in layer.items()} for layer in right_structure(spec)]
    polish = make_polish(lambda params, x: forward(model, params, x), unit_layers(model), start, [spec], iterations=50)
    first, second = polish(start), polish(start)
    for layer_start, layer_first, layer_second, layer_given in zip(start, first, second, right_structure(spec)):
        for name, value in layer_first.items():
            np.testing.assert_array_equal(value.numpy(), layer_second[name].numpy())
            np.testing.assert_array_equal(layer_start[name].numpy()[0], layer_given[name])
    moved = np.abs(first[0]["w"].numpy() - start[0]["w"].numpy()).max()
    assert moved > 0.1  # the shared inputs' weights go from 0.5 to about 0.76 (measured)


def recurrent_div_config(**training):
    training = {"polish_every": 1000, "polish_iterations": portfolio.POLISH_ITERATIONS["recurrent"], "polish_hold": True,
                "recurrent_step_scale": 0.0, **training}
    return resolve({"task": {"kind": "recurrent", "op": "div", "validation_size": 1000, "test_size": 100},
                    "model": {"layers": ["nau", "nainpu"], "learn_initial_state": False}, "training": training})


def mixed_ratio(spec, powers=(0.5, -0.4), mix=0.15):
    """Where Adam leaves recurrent a/b: a NAU cell accumulating mixtures of the inputs (each hidden
    unit a slice plus `mix` of every input), the recurrence at the identity, powers of 0.3-0.8."""
    (a0, a1), (b0, b1) = spec.subsets
    w = np.full((spec.input_size + 2, 2), mix, np.float32)
    w[a0:a1, 0] += 0.7
    w[b0:b1, 1] += 0.7
    w[spec.input_size:] = np.eye(2)
    return [{"w": w, "initial_state": np.zeros(2, np.float32)},
            {"w_real": np.array([[powers[0]], [powers[1]]], np.float32)}]


def test_a_held_polish_refits_the_cell_under_powers_at_their_sign_and_reaches_a_over_b():
    """Recurrent a/b: the powers held at +-1 by their sign and the cell refitted reach a/b itself,
    which extrapolates to T = 1,000; the recurrence the trainer holds stays the identity."""
    trainer = trainer_at(recurrent_div_config(), [0], mixed_ratio)
    arch = trainer.architectures[0]
    polished, snapped = arch.evaluate(arch.polish(arch.state.params), polished=True)
    cell, output = polished.params
    np.testing.assert_array_equal(output["w_real"][0, :, 0], [1.0, -1.0])
    np.testing.assert_array_equal(cell["w"][0, 10:], np.eye(2))
    np.testing.assert_array_equal(cell["initial_state"][0], [0.0, 0.0])
    # Near a/b, close enough to pass, and exact snapped: the cell's slice weights near 1, not a
    # common factor of them that the ratio cannot see (unit_scaled starts them at a largest of 1).
    assert polished.extrapolation[0] < trainer.thresholds[0] < scored(trainer).extrapolation[0]
    assert snapped.interpolation[0] < 1e-12
    (a0, a1), (b0, b1) = trainer.replicas[0].spec.subsets
    np.testing.assert_allclose(cell["w"][0, a0:a1 - 1, 0], 1.0, atol=0.01)
    np.testing.assert_allclose(cell["w"][0, b0 + 1:b1, 1], 1.0, atol=0.01)
    np.testing.assert_array_equal(snapped.params[0]["w"][0, :10, 0], (np.arange(10) >= a0) & (np.arange(10) < a1))


def test_polishing_every_weight_from_there_fits_t_10_and_fails_t_1000():
    """The same start polished without holding: a closer fit at T = 10 that does not extrapolate,
    the recurrence fitted too (only the held polish holds it)."""
    trainer = trainer_at(recurrent_div_config(polish_hold=False), [0], mixed_ratio)
    before, polished = scored(trainer), scored(trainer, polish=True)
    assert polished.interpolation[0] < before.interpolation[0]
    assert polished.extrapolation[0] > trainer.thresholds[0]
    assert not np.array_equal(polished.params[0]["w"][0, 10:], np.eye(2))


def test_unit_scaled_puts_each_sum_outputs_largest_input_weight_at_one():
    from nalu_cli.units.nau import NAU
    from nalu_cli.units.recurrent import ArithmeticCell

    w = np.array([[0.4, -0.1], [-0.2, 0.05], [0.3, 0.0]], np.float32)
    np.testing.assert_allclose(NAU(2).unit_scaled(w=w)["w"], [[1.0, -1.0], [-0.5, 0.5], [0.75, 0.0]])
    cell = ArithmeticCell("nau", 2)
    cell.build((None, 3))
    rows = np.concatenate([w, np.eye(2, dtype=np.float32)])  # [x_t rows; h_{t-1} rows]
    scaled = cell.unit_scaled(w=rows, initial_state=np.zeros(2, np.float32))["w"]
    np.testing.assert_allclose(scaled[:3], [[1.0, -1.0], [-0.5, 0.5], [0.75, 0.0]])
    np.testing.assert_array_equal(scaled[3:], np.eye(2))  # the recurrence as it was
