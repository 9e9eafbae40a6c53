"""The replica trainer: R models in one graph equal R models trained one by one."""

import numpy as np
import pytest

from nalu_cli.config import resolve
from nalu_cli.training import Replica, ReplicaTrainer


def config_for(unit, op="mul", **training):
    training = {"learning_rate": 1e-3, **training}  # the step counts below were measured at 1e-3
    return resolve({"task": {"op": op, "input_size": 20}, "model": {"unit": unit}, "training": training})


# Batched and single matmuls sum in different orders, so replicas match single runs to float
# rounding, not bit for bit. Where a gradient is near zero, Adam's m / sqrt(v) turns a 1-ulp
# difference into a full learning-rate step, and NALU then amplifies it (measured, mul, seed 0:
# 3e-8 after 10 steps, 6e-8 after 30, 3e-2 after 100), so NALU is compared over 30 steps.
@pytest.mark.parametrize("unit, steps", [("nac", 500), ("nau", 500), ("nalu", 30), ("nmu", 300)])
def test_three_replicas_match_three_single_runs(unit, steps):
    config = config_for(unit)
    replicas = [Replica.for_seed(config, seed) for seed in (0, 1, 2)]
    together = ReplicaTrainer(config.model, config.training, replicas)
    together.train(steps)
    for index, replica in enumerate(replicas):
        alone = ReplicaTrainer(config.model, config.training, [replica])
        alone.train(steps)
        for layer_together, layer_alone in zip(together.replica_params(index), alone.replica_params(0)):
            for name in layer_alone:
                np.testing.assert_allclose(layer_together[name], layer_alone[name], rtol=1e-4, atol=1e-5)


def test_replicas_differ_in_slices_init_and_data():
    config = config_for("nac")
    first, second = Replica.for_seed(config, 0), Replica.for_seed(config, 1)
    assert first.spec.subsets != second.spec.subsets or first.data_seed != second.data_seed
    assert first.init_seed != second.init_seed


def test_training_in_chunks_equals_one_long_chunk():
    config = config_for("nalu")
    replica = Replica.for_seed(config, 3)
    chunked = ReplicaTrainer(config.model, config.training, [replica])
    for _ in range(4):
        chunked.train(100)
    whole = ReplicaTrainer(config.model, config.training, [replica])
    whole.train(400)
    for a, b in zip(chunked.replica_params(0), whole.replica_params(0)):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_selection_ignores_the_extrapolation_set():
    """The selected checkpoint is the lowest interpolation MSE even when extrapolation says otherwise."""
    config = config_for("nalu", steps=3000, eval_every=500, early_stop=False)
    trainer = ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, 0)])
    history = []
    (result,) = trainer.fit(3000, 500, False, on_eval=lambda step, entries, results: history.append(entries[0]))
    best = min(history, key=lambda entry: entry["interpolation_mse"])
    assert result.selected_step == best["step"]
    assert result.extrapolation_mse == best["extrapolation_mse"]


def test_restarts_share_the_task_but_not_initialisation_or_data():
    config = resolve({"model": {"unit": "default"}})
    restarts = Replica.with_restarts(config, seed=5)
    assert len(restarts) == config.model.restart_count == 4
    assert restarts[0] == Replica.for_seed(config, 5)  # restart 0 is the run without restarts
    assert len({r.spec for r in restarts}) == 1
    assert len({r.init_seed for r in restarts}) == 4 and len({r.data_seed for r in restarts}) == 4


def test_a_group_of_restarts_is_the_member_with_lowest_interpolation_error():
    config = config_for("nau", op="add", learning_rate=0.05, early_stop=False)
    replicas = [Replica.for_seed(config, 1, restart) for restart in range(3)]
    trainer = ReplicaTrainer(config.model, config.training, replicas)
    results = trainer.fit(1500, 500, False, groups=[[0, 1, 2]])
    chosen = trainer.chosen([0, 1, 2])
    assert results[chosen].interpolation_mse == min(r.interpolation_mse for r in results)


def test_only_the_default_model_restarts_by_default():
    assert resolve({}).model.restart_count == 4
    assert resolve({"model": {"unit": "nalu"}}).model.restart_count == 1
    assert resolve({"model": {"layers": ["nau", "gated"]}}).model.restart_count == 1
    assert resolve({"model": {"unit": "nalu", "restarts": 3}}).model.restart_count == 3
