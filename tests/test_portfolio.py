"""The default model is a portfolio: several architectures trained side by side, one model chosen."""

import dataclasses
import json

import numpy as np
import pytest

from nalu_cli import portfolio
from nalu_cli.config import OPS, resolve
from nalu_cli.rundir import META_FILE
from nalu_cli.training.replicas import members


@pytest.mark.parametrize("kind", ["static", "recurrent"])
def test_the_default_model_trains_the_same_architectures_whatever_the_op(kind):
    names = {op: [model.name for model, _ in portfolio.architectures(resolve({"task": {"op": op, "kind": kind}}))]
             for op in OPS}
    assert len({tuple(n) for n in names.values()}) == 1  # not told the op
    assert names["mul"] == (["nau-gated", "nau-nainpu"] if kind == "static" else ["nau-gated", "nau-nmu", "nau-nainpu"])


def test_every_replica_of_a_portfolio_has_its_own_start_and_data_and_each_seed_one_group():
    config = resolve({"model": {"restarts": 3}})
    built, groups = members(config, [0, 1])
    replicas = [replica for member in built for replica in member.replicas]
    assert [len(member.replicas) for member in built] == [6, 6]
    assert len({(r.init_seed, r.data_seed) for r in replicas}) == 12
    assert groups == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]
    assert all(replicas[i].spec.seed == seed for seed, group in enumerate(groups) for i in group)
    # restart 0 of the first architecture is the run without restarts, as before the portfolio
    assert (replicas[0].init_seed, replicas[3].init_seed) == (0, 1)


def test_only_the_division_member_polishes_on_a_multiple_of_eval_every():
    config = resolve({"training": {"eval_every": 3000}})
    (gated, gated_training), (nainpu, nainpu_training) = portfolio.architectures(config)
    assert gated_training.polish_every == 0
    # the gated member alone takes the hidden split (portfolio.HIDDEN_SPLIT_START)
    assert gated_training == dataclasses.replace(config.training, hidden_split_start=portfolio.HIDDEN_SPLIT_START)
    assert nainpu_training.hidden_split_start is None
    assert nainpu_training.polish_every == 6_000 and nainpu_training.polish_iterations == 50
    assert nainpu_training.polish_limit == 2 and nainpu_training.polish_hold  # see portfolio.POLISH_LIMIT
    assert nainpu.layers == ["nau", "nainpu"] and nainpu.restarts == gated.restarts == 6


def test_the_recurrent_nmu_and_nainpu_members_hold_their_cells_recurrence_at_the_identity():
    """The NAU -> NMU and NAU -> NaiNPU members' h_{t-1} rows stay the identity they start at (an
    exact accumulator) while the gated member learns its recurrence, and each member still learns
    its x_t rows."""
    from nalu_cli.training import ReplicaTrainer

    config = resolve({"task": {"kind": "recurrent", "op": "mul", "validation_size": 100, "test_size": 20,
                               "extrapolation_length": 20},
                      "model": {"restarts": 1}, "training": {"eval_every": 100, "polish_every": 0}})
    (gated, gated_training), (nmu, nmu_training), (nainpu, nainpu_training) = portfolio.architectures(config)
    assert nmu.layers == ["nau", "nmu"] and nmu_training.recurrent_step_scale == 0.0
    assert nainpu.layers == ["nau", "nainpu"] and nainpu_training.recurrent_step_scale == 0.0
    assert gated_training.recurrent_step_scale is None  # 1/T under split-adam: learned
    built, (group,) = members(config, [0])
    trainer = ReplicaTrainer.of(built)
    before = [trainer.replica_params(r)[0]["w"] for r in group]  # numpy copies
    trainer.fit(200, 100, False, groups=[group])
    after = [trainer.replica_params(r)[0]["w"] for r in group]
    inputs = config.task.input_size
    assert not np.array_equal(after[0][inputs:], before[0][inputs:])
    for held_before, held_after in zip(before[1:], after[1:]):
        np.testing.assert_array_equal(held_after[inputs:], np.eye(2))
        assert not np.array_equal(held_after[:inputs], held_before[:inputs])


def test_the_recurrent_division_member_alone_polishes_holding_its_powers():
    config = resolve({"task": {"kind": "recurrent"}, "training": {"eval_every": 2000}})
    (_, gated_training), (_, nmu_training), (_, nainpu_training) = portfolio.architectures(config)
    assert nainpu_training.polish_hold and not (gated_training.polish_hold or nmu_training.polish_hold)
    assert (nainpu_training.polish_every, nainpu_training.polish_limit) == (6000, 2)
    assert nainpu_training.polish_iterations == 100
    # the others keep the recurrent task's polish: at every evaluation, 30 iterations
    assert (nmu_training.polish_every, nmu_training.polish_iterations) == (2000, 30)


def test_a_named_unit_is_one_architecture():
    config = resolve({"model": {"layers": ["nau", "nmu"]}})
    assert portfolio.architectures(config) == [(config.model, config.training)]


def test_a_run_saves_the_chosen_architecture_whichever_member_it_is(tmp_path):
    """The model a portfolio run hands out is the chosen restart's, of its own architecture:
    model.keras and the SavedModel's metadata describe it, and they load without the portfolio."""
    from nalu_cli.export import load_keras_model
    from nalu_cli.model import get_params
    from nalu_cli.training import ReplicaTrainer
    from nalu_cli.training.run import save_selected

    config = resolve({"task": {"op": "div", "input_size": 20, "validation_size": 100, "test_size": 100},
                      "model": {"restarts": 2}})
    built, (group,) = members(config, [0])
    trainer = ReplicaTrainer.of(built)
    trainer.fit(0, 100, False, groups=[group])
    for chosen, layers in ((3, ["nau", "nainpu"]), (1, ["nau", "gated"])):
        for r, result in enumerate(trainer.results):
            result.interpolation_mse = 0.0 if r == chosen else 1.0
        out = tmp_path / f"chosen{chosen}"
        out.mkdir()
        save_selected(trainer, group, config, out)
        model = load_keras_model(out / "model.keras")
        assert [type(layer).__name__.lower() for layer in model.layers] == layers
        for saved, selected in zip(get_params(model), trainer.results[chosen].selected_params):
            for name, value in selected.items():
                np.testing.assert_array_equal(saved[name], value)
        meta = json.loads((out / "saved_model" / META_FILE).read_text())
        assert meta["model"]["layers"] == layers


def test_an_architecture_whose_replicas_all_stopped_is_neither_stepped_nor_polished():
    """A group's members stop together, but in a benchmark one architecture's seeds can all be
    done while the other's train on: its chunk and its polish would be work thrown away."""
    from nalu_cli.training import ReplicaTrainer

    config = resolve({"task": {"op": "add", "input_size": 20, "validation_size": 100, "test_size": 100},
                      "model": {"restarts": 1},
                      "training": {"eval_every": 100, "polish_every": 100, "polish_iterations": 2}})
    built, _ = members(config, [0])
    trainer = ReplicaTrainer.of([type(m)(m.model, config.training, m.replicas) for m in built])  # both polish
    trainer.fit(0, 100, False)
    polished = []
    for arch in trainer.architectures:
        polish = arch.polish
        arch.polish = lambda params, polish=polish, name=arch.model_config.name: polished.append(name) or polish(params)
    trainer.status.active[0] = False  # the NAU -> gated restart stopped
    weights = lambda r: [value for layer in trainer.replica_params(r) for value in layer.values()]  # noqa: E731
    stopped, running = weights(0), weights(1)
    trainer.fit(200, 100, False)
    assert polished == ["nau-nainpu", "nau-nainpu"]
    assert all(np.array_equal(a, b) for a, b in zip(stopped, weights(0)))
    assert not all(np.array_equal(a, b) for a, b in zip(running, weights(1)))
