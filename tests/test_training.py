"""The replica trainer: R models in one graph equal R models trained one by one."""

import numpy as np
import pytest

from nalu_cli.config import resolve
from nalu_cli.training import Callback, Replica, ReplicaTrainer
from nalu_cli.training.replicas import members


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
    # Each trainer costs seconds of compilation, so one replica is trained alone: the last, whose
    # slices, initialisation and data stream sit behind two others on the replica axis.
    alone = ReplicaTrainer(config.model, config.training, [replicas[2]])
    alone.train(steps)
    for layer_together, layer_alone in zip(together.replica_params(2), alone.replica_params(0)):
        for name in layer_alone:
            np.testing.assert_allclose(layer_together[name], layer_alone[name], rtol=1e-4, atol=1e-5)
    first, last = together.replica_params(0)[0], together.replica_params(2)[0]
    assert any(not np.allclose(first[name], last[name]) for name in first)  # distinct replicas, not copies


def test_replicas_differ_in_slices_init_and_data():
    config = config_for("nac")
    first, second = Replica.for_seed(config, 0), Replica.for_seed(config, 1)
    assert first.spec.subsets != second.spec.subsets or first.data_seed != second.data_seed
    assert first.init_seed != second.init_seed


def test_training_in_chunks_equals_one_long_chunk(monkeypatch):
    """Chunks, and the calls a chunk is cut into (to answer Ctrl-C), change no number."""
    from nalu_cli.training.step import ChunkRunner

    config = config_for("nalu")
    replica = Replica.for_seed(config, 3)
    monkeypatch.setattr(ChunkRunner, "_pace", lambda runner, steps, seconds: None)  # keep call_steps as set
    chunked = ReplicaTrainer(config.model, config.training, [replica])
    chunked.architectures[0].chunk.call_steps = 7  # 100 steps as 15 calls
    for _ in range(4):
        chunked.train(100)
    whole = ReplicaTrainer(config.model, config.training, [replica])
    whole.architectures[0].chunk.call_steps = 400  # one call
    whole.train(400)
    for a, b in zip(chunked.replica_params(0), whole.replica_params(0)):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_an_interrupt_abandons_the_chunk_and_leaves_the_trainer_as_it_was():
    """With eval_every far beyond one call, `should_stop` is asked between calls: the chunk's
    steps are dropped, and the trainer is as the last evaluation (the run's checkpoint) left it."""
    import tensorflow as tf

    config = config_for("nac")
    trainer = ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, 0)])
    before = [leaf.numpy() for leaf in tf.nest.flatten(trainer.architectures[0].state)]
    asked = []
    # Stop at the end of the third call (a trainer that asks only between chunks trains all
    # 2,000,000 steps, a minute or two).
    assert trainer.train(2_000_000, should_stop=lambda: asked.append(1) or len(asked) > 2) is None
    assert trainer.step == 0 and len(asked) == 3
    for a, b in zip(before, [leaf.numpy() for leaf in tf.nest.flatten(trainer.architectures[0].state)]):
        np.testing.assert_array_equal(a, b)


def test_selection_ignores_the_extrapolation_set():
    """The selected checkpoint is the lowest interpolation MSE even when extrapolation says otherwise."""
    config = config_for("nalu", steps=3000, eval_every=500, early_stop=False)
    trainer = ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, 0)])
    history = []

    class History(Callback):
        def on_evaluation(self, trainer, entries):
            history.append(entries[0])

    (result,) = trainer.fit(3000, 500, False, callbacks=[History()])
    best = min(history, key=lambda entry: entry["interpolation_mse"])
    assert result.selected_step == best["step"]
    assert result.extrapolation_mse == best["extrapolation_mse"]


def test_restarts_share_the_task_but_not_initialisation_or_data():
    config = resolve({"model": {"unit": "default"}})
    built, (group,) = members(config, [5])
    restarts = [replica for member in built for replica in member.replicas]
    assert len(restarts) == len(group) == 2 * config.model.restart_count == 12
    assert restarts[0] == Replica.for_seed(config, 5)  # restart 0 is the run without restarts
    assert len({r.spec for r in restarts}) == 1
    assert len({r.init_seed for r in restarts}) == 12 and len({r.data_seed for r in restarts}) == 12


def test_a_group_of_restarts_is_the_member_with_lowest_interpolation_error():
    config = config_for("nau", op="add", learning_rate=0.05, early_stop=False)
    replicas = [Replica.for_seed(config, 1, restart) for restart in range(3)]
    trainer = ReplicaTrainer(config.model, config.training, replicas)
    results = trainer.fit(1500, 500, False, groups=[[0, 1, 2]])
    chosen = trainer.chosen([0, 1, 2])
    assert results[chosen].interpolation_mse == min(r.interpolation_mse for r in results)


def test_only_the_default_model_restarts_by_default():
    assert resolve({}).model.restart_count == 6
    assert resolve({"model": {"unit": "nalu"}}).model.restart_count == 1
    assert resolve({"model": {"layers": ["nau", "gated"]}}).model.restart_count == 1
    assert resolve({"model": {"unit": "nalu", "restarts": 3}}).model.restart_count == 3


def _run_adam_step(params, grads, split, steps=3, lr=0.01, common_scale=1.0):
    """Apply `optimizer.update` `steps` times with the same gradients; returns the final weights."""
    import tensorflow as tf

    from nalu_cli.training import optimizer

    params = [{k: tf.constant(v) for k, v in layer.items()} for layer in params]
    grads = [{k: tf.constant(v) for k, v in layer.items()} for layer in grads]
    state = optimizer.init(params, split)
    for step in range(steps):
        step_size = optimizer.step_size(tf.constant([lr]), tf.constant(step, tf.int64))
        params, state = optimizer.update(grads, state, params, step_size, common_scale=common_scale)
    return [{k: t.numpy() for k, t in layer.items()} for layer in params]


def test_plain_adam_is_keras_adam():
    import keras

    rng = np.random.default_rng(0)
    w = rng.normal(size=(1, 5, 2)).astype(np.float32)
    g = rng.normal(size=(1, 5, 2)).astype(np.float32)
    ours = _run_adam_step([{"w": w}], [{"w": g}], split=[()])[0]["w"]
    variable = keras.Variable(w[0])
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    for _ in range(3):
        optimizer.apply([keras.ops.convert_to_tensor(g[0])], [variable])
    np.testing.assert_allclose(ours[0], variable.numpy(), rtol=1e-6, atol=1e-7)


def test_split_adam_moves_what_tells_inputs_apart_at_the_learning_rate():
    """A large gradient shared by every input (the inputs' common mean) plus small differences
    between inputs: Adam moves every weight alike, so the differences do not move them apart;
    split-adam moves each weight by lr for the shared part plus lr for its difference."""
    n, lr = 100, 0.01
    w = np.zeros((1, n, 1), np.float32)
    signs = np.random.default_rng(1).permutation(np.tile([1.0, -1.0], n // 2)).reshape(1, n, 1)
    g = (100.0 + 0.01 * signs).astype(np.float32)

    adam = -_run_adam_step([{"w": w}], [{"w": g}], split=[()], steps=1, lr=lr)[0]["w"]
    np.testing.assert_allclose(adam, lr, rtol=1e-4)

    split = -_run_adam_step([{"w": w}], [{"w": g}], split=[("w",)], steps=1, lr=lr)[0]["w"]
    np.testing.assert_allclose(split, lr + lr * signs, atol=1e-3 * lr)  # Adam's epsilon: ~3e-4 relative


def test_the_common_step_scale_shortens_the_common_step_and_nothing_else():
    """training.common_step_scale s: the shared part moves every weight by s * lr, the part that
    tells the inputs apart still by lr; under plain adam nothing is split, so nothing is scaled."""
    n, lr = 100, 0.01
    w = np.zeros((1, n, 1), np.float32)
    signs = np.random.default_rng(1).permutation(np.tile([1.0, -1.0], n // 2)).reshape(1, n, 1)
    g = (100.0 + 0.01 * signs).astype(np.float32)
    for scale in (0.3, 0.0):
        split = -_run_adam_step([{"w": w}], [{"w": g}], split=[("w",)], steps=1, lr=lr, common_scale=scale)[0]["w"]
        np.testing.assert_allclose(split, scale * lr + lr * signs, atol=1e-3 * lr)
    adam = -_run_adam_step([{"w": w}], [{"w": g}], split=[()], steps=1, lr=lr, common_scale=0.3)[0]["w"]
    np.testing.assert_allclose(adam, lr, rtol=1e-4)


def test_the_trainers_step_takes_the_configs_common_step_scale(monkeypatch):
    """The compiled chunk hands training.common_step_scale to every update it traces."""
    from nalu_cli.training import optimizer

    seen, update = [], optimizer.update

    def recording(*args, **kwargs):
        seen.append(kwargs.get("common_scale"))
        return update(*args, **kwargs)

    monkeypatch.setattr(optimizer, "update", recording)
    config = config_for("nau", op="add", common_step_scale=0.25)
    ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, 0)]).train(2)
    assert seen and set(seen) == {0.25}


def _hidden_split_run(differences, steps, start, seed=0, lr=0.01):
    """`steps` split-adam updates of a [1, 50, H] matrix from 0 under gradients that share one
    fresh noise vector over the inputs on every hidden unit of `differences` ([H], 1 where a unit
    has it, 0 where the next layer does not read the unit) plus 1e-3 `differences` times fixed
    signs per input; the hidden split from `start` (None: never). Returns (weights, the signs)."""
    import tensorflow as tf

    from nalu_cli.training import optimizer

    n, units = 50, len(differences)
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n, 1))
    shared = np.asarray(differences, np.float64) != 0
    params = [{"w": tf.zeros((1, n, units))}]
    state = optimizer.init(params, [("w",)], hidden=start is not None)
    for step in range(steps):
        g = rng.normal(size=(n, 1)) * shared + 1e-3 * signs * np.asarray(differences)
        step_size = optimizer.step_size(tf.constant([lr]), tf.constant(step, tf.int64))
        params, state = optimizer.update([{"w": tf.constant(g[None], tf.float32)}], state, params, step_size,
                                         hidden=None if start is None else (start, tf.constant(step, tf.int64)))
    return params[0]["w"].numpy()[0], signs


def test_the_hidden_split_moves_what_tells_the_hidden_units_apart_at_the_learning_rate():
    """Two hidden units whose gradients share the batch's noise and differ by 1e-3: split-adam
    divides the difference by the noise, so the units hardly part; from the hidden split's start
    the difference has moments of its own and parts them by about the learning rate a step.
    Before the start the steps are split-adam's, to the bit."""
    lr, start, steps = 0.01, 100, 300
    plain, signs = _hidden_split_run([1.0, -1.0], steps, None, lr=lr)
    hidden, _ = _hidden_split_run([1.0, -1.0], steps, start, lr=lr)
    apart = lambda w: float(np.mean((w[:, 1] - w[:, 0]) * signs[:, 0]))  # noqa: E731  (descent: against +-signs)
    assert abs(apart(plain)) < 0.05 * (steps - start) * lr
    assert apart(hidden) > 1.0 * (steps - start) * lr  # each unit about lr a step, so the two 2 lr
    np.testing.assert_array_equal(_hidden_split_run([1.0, -1.0], start, start, lr=lr)[0],
                                  _hidden_split_run([1.0, -1.0], start, None, lr=lr)[0])


def test_the_hidden_split_leaves_a_unit_without_gradient_where_it_is():
    """A hidden unit the next layer does not read (an NMU gate at 0) gets no gradient. The split is
    along the units' principal direction, which gives that unit no part of the common step (the
    plain mean over units would drag it along with the others)."""
    hidden, _ = _hidden_split_run([1.0, -1.0, 0.0], 200, 0)
    assert np.all(hidden[:, 2] == 0.0) and np.abs(hidden[:, :2]).max() > 0.5


def test_split_adam_splits_the_first_layers_weight_matrices_only():
    import tensorflow as tf

    from nalu_cli.training.optimizer import split_weights

    params = [{"w": tf.zeros((3, 100, 2)), "g": tf.zeros((3, 100))}, {"w": tf.zeros((3, 2, 1))}]
    assert split_weights(params, "split-adam") == [("w",), ()]
    assert split_weights(params, "adam") == [(), ()]


def test_nau_nmu_learns_multiplication_with_split_adam():
    """a*b on the literature's task: the published NMU needs a median 1.4e6 steps; with split-adam
    NAU -> NMU solves seed 0 within 30,000 steps (measured: step 14,000)."""
    config = resolve({"task": {"op": "mul"}, "model": {"layers": ["nau", "nmu"]}})
    trainer = ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, 0)])
    (result,) = trainer.fit(config.training.steps, config.training.eval_every, True)
    assert result.solved_at_step is not None and result.solved_at_step <= 30_000
    assert result.extrapolation_mse < trainer.thresholds[0]


def test_use_threads_takes_effect_in_a_fresh_process():
    """The helper `nalu train` (run.train_threads) and benchmark
    workers call before building a model: in a new process it succeeds and TF reads back the threads
    asked for (intra-op; one inter-op thread)."""
    import subprocess
    import sys

    code = (
        "from nalu_cli._tf import import_tensorflow, use_threads\n"
        "tf = import_tensorflow()\n"
        "assert use_threads(tf, 2)\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "1"]


def test_a_chunk_rolls_back_only_the_replicas_that_went_non_finite():
    import tensorflow as tf

    from nalu_cli.training.optimizer import AdamState
    from nalu_cli.training.step import ChunkRunner, TrainState

    def chunk(start, n, state, lr_scale, loss_sum, streams=()):  # replica 1's weights blow up, replica 2's loss does
        params = [{"w": state.params[0]["w"] + tf.constant([[1.0], [np.inf], [1.0]])}]
        return TrainState(params, state.optimizer), loss_sum + tf.cast(n, tf.float32) * tf.constant([0.5, 0.5, np.nan])

    state = TrainState([{"w": tf.zeros((3, 1))}], AdamState(*([{}] for _ in AdamState._fields)))
    new_state, losses, finite = ChunkRunner(chunk)(0, 10, state, np.ones(3, bool), np.ones(3, np.float32))
    assert finite.tolist() == [True, False, False]
    assert new_state.params[0]["w"].numpy()[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert losses[0] == 0.5 and np.isnan(losses[1:]).all()


@pytest.mark.parametrize("hidden_split_start", [None, 200])
def test_a_trainer_restored_from_its_checkpoint_continues_exactly(hidden_split_start):
    """With the hidden split, begun before the checkpoint (step 300), its state is restored too."""
    config = config_for("nau", op="add", hidden_split_start=hidden_split_start)
    replicas = [Replica.for_seed(config, seed) for seed in (0, 1)]
    first = ReplicaTrainer(config.model, config.training, replicas)
    first.fit(300, 100, False)
    arrays, scalars = first.checkpoint().arrays_and_scalars()
    second = ReplicaTrainer(config.model, config.training, replicas)
    second.restore(arrays, scalars)
    assert second.step == 300 and [r.selected_step for r in second.results] == [r.selected_step for r in first.results]
    first.fit(600, 100, False)
    second.fit(600, 100, False)
    for index in range(2):
        for a, b in zip(first.replica_params(index), second.replica_params(index)):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])


def portfolio_members(config):
    """Two architectures of one seed's model: NAU (restart 0) and NAU -> NMU (restart 1)."""
    from nalu_cli.config import ModelConfig
    from nalu_cli.training.architecture import Member

    return [Member(config.model, config.training, [Replica.for_seed(config, 0, 0)]),
            Member(ModelConfig(layers=["nau", "nmu"]), config.training, [Replica.for_seed(config, 0, 1)])]


def test_a_portfolio_trains_each_architecture_as_alone_and_selects_across_them():
    config = config_for("nau", op="add")
    members = portfolio_members(config)
    both = ReplicaTrainer.of(members)
    both.fit(400, 200, False, groups=[[0, 1]])
    assert type(both.architectures[1].layers[1]).__name__ == "NMU"
    for index, member in enumerate(members):
        alone = ReplicaTrainer(member.model, member.training, member.replicas)
        (result,) = alone.fit(400, 200, False)
        for a, b in zip(both.replica_params(index), alone.replica_params(0)):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
        assert both.results[index].interpolation_mse == result.interpolation_mse
    interpolation = [result.interpolation_mse for result in both.results]
    assert both.chosen([0, 1]) == int(np.argmin(interpolation)) and interpolation[0] != interpolation[1]
    # Compiled one at a time before the first chunk (to keep the peak memory down), each traced
    # once: the compiling call is the one every later call runs. One copy of the evaluation sets.
    assert [arch.chunk.chunk.experimental_get_tracing_count() for arch in both.architectures] == [1, 1]
    assert both.architectures[0].evaluate.sets is both.architectures[1].evaluate.sets


def test_a_portfolio_interrupted_or_restored_from_its_checkpoint_continues_exactly():
    """Restored from a checkpoint, a portfolio continues as it would have. Its architectures
    step side by side, one thread each: each asks `should_stop` between its own calls, and
    once it says yes none keeps any of the chunk's steps, so an interrupted trainer too
    continues as if it had not been."""
    import threading

    import tensorflow as tf

    config = config_for("nau", op="add")
    first = ReplicaTrainer.of(portfolio_members(config))
    first.fit(200, 100, False)
    arrays, scalars = first.checkpoint().arrays_and_scalars()
    def state():
        return [leaf.numpy() for arch in first.architectures for leaf in tf.nest.flatten(arch.state)]

    before, asked = state(), []

    def should_stop():
        asked.append(threading.current_thread().name)
        return len(asked) > 4

    assert first.train(2_000_000, should_stop=should_stop) is None
    assert first.step == 200 and len(set(asked)) == 2  # both architectures ran, each in its own thread
    for a, b in zip(before, state()):
        np.testing.assert_array_equal(a, b)
    second = ReplicaTrainer.of(portfolio_members(config))
    second.restore(arrays, scalars)
    for trainer in (first, second):
        trainer.fit(400, 100, False)
    for index in range(2):
        assert first.results[index].selected_params is not None
        for a, b in zip(first.replica_params(index) + first.results[index].selected_params,
                        second.replica_params(index) + second.results[index].selected_params):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])


def test_a_later_trainer_of_the_same_architecture_runs_on_the_graphs_of_an_earlier_one():
    """A benchmark worker trains group after group: with a process's `Graphs`, a later trainer of
    other seeds reuses the chunk, evaluation and polish an earlier one traced and compiled (they
    take the seeds' streams and sets as arguments), and trains exactly as a trainer of its own."""
    from nalu_cli.training.architecture import Graphs, Member

    config = config_for("nau", op="mul", eval_every=100, polish_every=100, polish_iterations=3)

    def trainer(seeds, graphs=None, config=config):
        return ReplicaTrainer.of([Member(config.model, config.training, [Replica.for_seed(config, s) for s in seeds])],
                                 graphs)

    graphs = Graphs()
    earlier = trainer((0, 1), graphs)
    earlier.fit(100, 100, False)  # traced, compiled, and polished once
    later, own = trainer((2, 3), graphs), trainer((2, 3))
    chunk = later.architectures[0].chunk.chunk
    assert chunk is earlier.architectures[0].chunk.chunk and len(graphs) == 3  # chunk, evaluation, polish
    for each in (later, own):
        each.fit(300, 100, False)  # three evaluations and polishes
    assert chunk.experimental_get_tracing_count() == 1
    for index in range(2):
        assert later.results[index].selected_step == own.results[index].selected_step
        assert later.results[index].interpolation_mse == own.results[index].interpolation_mse
        for a, b in zip(later.replica_params(index) + later.results[index].selected_params,
                        own.replica_params(index) + own.results[index].selected_params):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
    # Another op, or another replica count, is another set of graphs.
    trainer((2, 3), graphs, config_for("nau", op="add", eval_every=100, polish_every=100, polish_iterations=3))
    trainer((2, 3, 4), graphs)
    assert len(graphs) == 9
    # One replica's chunk holds its stream as constants: never another seed's.
    alone, other = trainer((5,), graphs), trainer((6,), graphs)
    assert alone.architectures[0].chunk.chunk is not other.architectures[0].chunk.chunk
    own = trainer((6,))
    for each in (other, own):
        each.train(100)
    for a, b in zip(other.replica_params(0), own.replica_params(0)):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_replicas_of_other_ops_cannot_share_a_chunk_s_streams():
    """The chunk draws every stream as its first replica's task: replicas of another op are refused."""
    from nalu_cli.training.step import streams

    replicas = [Replica.for_seed(config_for("nau", op=op), 0) for op in ("mul", "add")]
    with pytest.raises(ValueError, match="must share op"):
        streams(replicas)
    assert [t.shape for t in streams(replicas[:1] * 2)] == [(2,), (2, 20, 2)]
