"""The recurrent cells and the recurrent task's plumbing: cells as Keras users run them, their pure
`forward` against Keras's own recurrence, Keras's LSTM / GRU maths, an exact NAU accumulator, the
config of the recurrent task, shared evaluation sets, and replicas trained together or alone."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nalu_cli import tasks
from nalu_cli.config import ModelConfig, parse_architecture, resolve
from nalu_cli.errors import NaluError
from nalu_cli.model import build_model, forward, get_params, set_params, unit_layers
from nalu_cli.training import Replica, ReplicaTrainer
from nalu_cli.training.evaluate import shared_layout
from nalu_cli.units import ArithmeticCell, GRUCell, LSTMCell, functional

N = 4  # inputs per step: tiny shapes keep these tests fast

# The cells a user can put in keras.layers.RNN: nalu units as ArithmeticCell, and the LSTM / GRU baselines.
USER_CELLS = {
    "nau": lambda: ArithmeticCell("nau", 2),
    "nmu": lambda: ArithmeticCell("nmu", 2),
    "nac": lambda: ArithmeticCell("nac", 2),
    "nalu": lambda: ArithmeticCell("nalu", 2),
    "gated": lambda: ArithmeticCell("gated", 2),
    "lstm": lambda: LSTMCell(2),
    "gru": lambda: GRUCell(2),
}


def sample_weight(layer, name, shape, rng):
    """Random weights that keep a cell bounded over 100 steps of inputs in [0, 1) (products, powers)."""
    if name in ("initial_state", "initial_h", "initial_c"):
        return rng.uniform(0.1, 0.6, shape) * rng.choice([-1.0, 1.0], shape)  # nonzero: must be used
    if name in ("mix", "g_pow") or (getattr(layer, "unit_name", None) == "nmu" and name == "w"):
        return rng.uniform(0.0, 1.0, shape)  # gates, and NMU weights, live in [0, 1]
    return rng.uniform(-0.4, 0.4, shape)


def randomise(model, rng):
    """Every unit layer's weights (the cell's initial state included) set at random; returns them."""
    params = [{name: sample_weight(layer, name, var.shape, rng) for name, var in layer.params().items()}
              for layer in unit_layers(model)]
    set_params(model, params)
    return get_params(model)


def recurrent_model(layers, seed=0):
    return build_model(ModelConfig(layers=layers), N, seed, kind="recurrent")


# -- cells as Keras users use them ---------------------------------------------------------------


def test_cells_in_a_users_functional_model_train_save_and_reload(tmp_path):
    """Every cell in one user model (Input -> RNN(cell) per cell -> Dense): one fit and one save cover all
    seven, as a model per cell costs seconds each (measured)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 10))
    rnns = {name: keras.layers.RNN(make(), name=f"rnn_{name}") for name, make in USER_CELLS.items()}
    outputs = keras.layers.Dense(1)(keras.layers.Concatenate()([rnn(inputs) for rnn in rnns.values()]))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for length in (1, 3, 7):  # one model, sequences of any length
        assert model(rng.uniform(0, 1, (4, length, 10)).astype(np.float32)).shape == (4, 1)

    x = rng.uniform(0, 1, (8, 5, 10)).astype(np.float32)
    y = x.sum(axis=(1, 2))[:, None]
    before = {w.path: w.numpy().copy() for w in model.trainable_weights}
    for name in USER_CELLS:  # each cell's initial state is a weight
        assert any(path.startswith(f"rnn_{name}/") and "/initial_" in path for path in before), (name, sorted(before))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # two steps
    unchanged = [w.path for w in model.trainable_weights if np.array_equal(w.numpy(), before[w.path])]
    assert not unchanged, f"no gradient reached {unchanged}"

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for name, rnn in rnns.items():
        cell = loaded.get_layer(f"rnn_{name}").cell
        assert type(cell) is type(rnn.cell) and cell.get_config() == rnn.cell.get_config(), name
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    np.testing.assert_array_equal(np.asarray(loaded(x[:, :2])), np.asarray(model(x[:, :2])))


# -- the pure forward against Keras's recurrence ---------------------------------------------------

FORWARD_LAYERS = {"nau": ["nau", "nau"], "nmu": ["nmu", "nau"], "gated": ["gated", "nau"], "lstm": ["lstm", "linear"],
                  "gru": ["gru", "linear"]}


def run_for(length, fn):
    """Short sequences (unrolled) run eagerly; long ones (loops, Keras's and functional.recurrence's) in one
    traced graph: eager loops cost seconds, and so does tracing unrolled steps (measured)."""
    return tf.function(fn) if length > 64 else fn


# Every cell unrolled; the loop (one implementation for every cell) with one and with two states.
SHORT_AND_LONG = [(name, 5) for name in FORWARD_LAYERS] + [("nau", 100), ("lstm", 100)]


@pytest.mark.parametrize("name, length", SHORT_AND_LONG)
def test_pure_forward_equals_the_keras_rnn_on_the_same_weights(name, length):
    rng = np.random.default_rng(1)
    model = recurrent_model(FORWARD_LAYERS[name])
    params = randomise(model, rng)
    cell, rnn = unit_layers(model)[0], model.get_layer("recurrence")
    x = rng.uniform(0, 1, (6, length, N))
    x32 = x.astype(np.float32)

    def run(x, x32):
        return rnn(x), cell.forward(x, **params[0]), model(x32), forward(model, params, x32)

    keras_h, pure_h, keras_y, pure_y = (np.asarray(t) for t in run_for(length, run)(x, x32))
    assert keras_h.dtype == pure_h.dtype == np.float64
    assert np.all(np.isfinite(pure_h))
    np.testing.assert_allclose(pure_h, keras_h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pure_y, keras_y, rtol=1e-6)


REPLICA_CASES = [*((name, 5) for name in ("nau", "gated", "lstm", "gru")), ("nau", 100), ("lstm", 100)]


@pytest.mark.parametrize("name, length", REPLICA_CASES)
def test_a_replica_axis_gives_each_replica_its_own_result(name, length):
    rng = np.random.default_rng(2)
    replicas = 3
    model = recurrent_model(FORWARD_LAYERS[name])
    each = [randomise(model, rng) for _ in range(replicas)]
    stacked = [{key: np.stack([p[i][key] for p in each]) for key in each[0][i]} for i in range(2)]
    x = rng.uniform(0, 1, (replicas, 5, length, N))

    def run(x):
        together = forward(model, stacked, x)
        broadcast = forward(model, stacked, x[:1])  # one input set shared by every replica
        alone = [forward(model, each[r], x[r]) for r in range(replicas)]
        return together, broadcast, alone, [forward(model, each[r], x[0]) for r in range(replicas)]

    together, broadcast, alone, alone_on_first = tf.nest.map_structure(np.asarray, run_for(length, run)(x))
    assert together.shape == broadcast.shape == (replicas, 5, 1)
    for r in range(replicas):
        np.testing.assert_allclose(together[r], alone[r], rtol=1e-12)
        np.testing.assert_allclose(broadcast[r], alone_on_first[r], rtol=1e-12)
    assert not np.allclose(together[0], together[1])  # the replicas' weights really differ


# -- LSTM and GRU: Keras's maths -------------------------------------------------------------------


def _keras_cell_and_weights(kind, rng, units=3):
    cell = (keras.layers.LSTMCell if kind == "lstm" else keras.layers.GRUCell)(units, dtype="float64")
    cell.build((None, N))
    weights = {name: rng.normal(0, 0.7, getattr(cell, name).shape) for name in ("kernel", "recurrent_kernel", "bias")}
    for name, value in weights.items():
        getattr(cell, name).assign(value)
    return cell, weights


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_lstm_and_gru_steps_are_keras_cells_maths(kind):
    rng = np.random.default_rng(3)
    cell, weights = _keras_cell_and_weights(kind, rng)
    x = rng.normal(0, 1, (5, N))
    states = [rng.normal(0, 1, (5, 3)) for _ in range(2 if kind == "lstm" else 1)]
    _, expected = cell(x, states)
    step = functional.lstm_step if kind == "lstm" else functional.gru_step
    ours = step(x, *states, **weights)
    ours = ours if kind == "lstm" else [ours]
    for got, want in zip(ours, expected):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_nalus_lstm_and_gru_cells_are_keras_rnns_started_from_their_learned_state(kind):
    """RNN(nalu's cell) with initial state s == RNN(Keras's cell) given initial_state=s, same weights."""
    rng = np.random.default_rng(4)
    keras_cell, weights = _keras_cell_and_weights(kind, rng)
    ours = (LSTMCell if kind == "lstm" else GRUCell)(3, dtype="float64")
    layer = keras.layers.RNN(ours, dtype="float64")
    x = rng.normal(0, 1, (5, 7, N))
    layer(x)  # builds
    params = {**weights, **{name: rng.normal(0, 1, (3,)) for name in ours.state_names}}
    for name, var in ours.params().items():
        var.assign(params[name])
    initial = [np.broadcast_to(params[name], (5, 3)) for name in ours.state_names]
    expected = np.asarray(keras.layers.RNN(keras_cell, dtype="float64")(x, initial_state=initial))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ours.forward(x, **params)), expected, rtol=1e-12)


# -- an exact NAU accumulator ---------------------------------------------------------------------


def test_an_exact_nau_cell_accumulates_without_error_over_10000_steps():
    """W = [[mask A, mask B] for x_t, identity for h_{t-1}], h_0 = 0: h_T = (sum_t sum(x_t[A]), ...),
    in the model's own dtype (float64), so exact to 1e-12 where float32 would drift by ~1e-5."""
    (a0, a1), (b0, b1) = (0, 3), (2, 4)
    model = recurrent_model(["nau", "nau"])
    cell = unit_layers(model)[0]
    w = np.zeros((N + 2, 2))
    w[a0:a1, 0] = w[b0:b1, 1] = 1.0
    w[N:, :] = np.eye(2)
    cell.unit.w.assign(w)
    cell.initial_state.assign(np.zeros(2))
    params = get_params(model)[0]
    x = np.random.default_rng(5).uniform(1, 2, (4, 10_000, N)).astype(np.float32)  # float32, as the trainer feeds
    h = tf.function(lambda x: cell.forward(x, **params))(x).numpy()
    totals = x.astype(np.float64).sum(axis=1)
    expected = np.stack([totals[:, a0:a1].sum(axis=1), totals[:, b0:b1].sum(axis=1)], axis=1)
    assert np.max(np.abs(h - expected) / expected) <= 1e-12


# -- ArithmeticCell: the inner unit's hooks --------------------------------------------------------


@pytest.mark.parametrize("unit", ["nau", "nmu", "nac", "nalu", "gated"])
def test_arithmetic_cell_hooks_delegate_to_its_unit_and_snap_rounds_the_initial_state(unit):
    rng = np.random.default_rng(6)
    cell = ArithmeticCell(unit, 2)
    cell.build((None, N))
    params = {name: rng.uniform(-1.6, 1.6, var.shape).astype(np.float32) for name, var in cell.params().items()}
    initial, unit_params = params["initial_state"], {k: v for k, v in params.items() if k != "initial_state"}
    assert set(unit_params) == set(cell.unit.params())
    assert cell.regularizer_schedule == cell.unit.regularizer_schedule
    assert cell.discrete_weight_names == cell.unit.discrete_weight_names
    regularizer, unit_regularizer = cell.regularizer(**params), cell.unit.regularizer(**unit_params)
    np.testing.assert_array_equal(np.asarray(regularizer), np.asarray(unit_regularizer))
    for got, want in zip(cell.discrete_weights(**params), cell.unit.discrete_weights(**unit_params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    clipped, unit_clipped = cell.clip(**params), cell.unit.clip(**unit_params)
    assert set(clipped) == set(params)
    np.testing.assert_array_equal(np.asarray(clipped["initial_state"]), initial)
    for name in unit_params:
        np.testing.assert_array_equal(np.asarray(clipped[name]), np.asarray(unit_clipped[name]))
    try:
        unit_snapped = cell.unit.snap(**unit_params)
    except NotImplementedError:
        with pytest.raises(NotImplementedError):
            cell.snap(**params)
        return
    snapped = cell.snap(**params)
    np.testing.assert_array_equal(np.asarray(snapped["initial_state"]), np.round(initial))
    for name in unit_params:
        np.testing.assert_array_equal(np.asarray(snapped[name]), np.asarray(unit_snapped[name]))


@pytest.mark.parametrize("unit", ["lstm", "gru", "nope"])
def test_arithmetic_cell_refuses_names_that_are_not_units(unit):
    with pytest.raises(ValueError, match=f"unit={unit!r}"):
        ArithmeticCell(unit, 2)


def test_arithmetic_cell_config_round_trip_keeps_its_unit():
    cell = ArithmeticCell("nmu", 3, name="cell")
    clone = ArithmeticCell.from_config(cell.get_config())
    assert (clone.unit_name, clone.units, type(clone.unit)) == ("nmu", 3, type(cell.unit))



def test_a_cell_that_does_not_learn_its_initial_state_keeps_it_at_zero():
    """learn_initial_state=False: h_0 is a non-trainable 0 for Keras (model.fit leaves it), and `clip`
    (which nalu's trainer and polish apply after every step) pins it there; a learned one is left alone."""
    rng = np.random.default_rng(7)
    fixed, learned = ArithmeticCell("nau", 2, learn_initial_state=False), ArithmeticCell("nau", 2)
    for cell in (fixed, learned):
        cell.build((None, N))
    assert [v.trainable for v in (fixed.initial_state, learned.initial_state)] == [False, True]
    params = {name: rng.uniform(-1.6, 1.6, var.shape) for name, var in fixed.params().items()}
    np.testing.assert_array_equal(np.asarray(fixed.clip(**params)["initial_state"]), [0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(learned.clip(**params)["initial_state"]), params["initial_state"])
    assert ArithmeticCell.from_config(fixed.get_config()).learn_initial_state is False
    with pytest.raises(ValueError, match="learn_initial_state"):
        ArithmeticCell("nau", 2, learn_initial_state="no")
    # The config: the default model keeps h_0 at 0, named units learn it (stable-nalu's network).
    model_config = lambda settings: resolve({"task": {"kind": "recurrent"}, "model": settings}).model  # noqa: E731
    assert model_config({}).learns_initial_state is False
    assert model_config({"layers": ["nau", "gated"]}).learns_initial_state is True
    assert model_config({"learn_initial_state": True}).learns_initial_state is True
    assert model_config({"unit": "nmu", "learn_initial_state": False}).learns_initial_state is False
    default = build_model(model_config({}), N, seed=0, kind="recurrent")
    assert unit_layers(default)[0].learn_initial_state is False


def test_the_trainer_steps_a_cells_recurrence_one_over_t_as_far_under_split_adam():
    """training.recurrent_step_scale: null is 1/task.length under split-adam, 1 under adam (the
    published optimiser); it reaches the cell's matrices only (their h_{t-1} rows: see the
    SplitAdam test, which checks optimizer.update's rows), never h_0 or the output layer."""
    from nalu_cli.training.step import recurrent_row_scales

    def scales(settings, layers=("nau", "gated")):
        config = resolve({"task": {"kind": "recurrent", "op": "add", "length": 8}, "training": settings,
                          "model": {"layers": list(layers)}})
        model = build_model(config.model, config.task.input_size, seed=0, kind="recurrent")
        replica = Replica.for_seed(config, 0)
        return recurrent_row_scales(unit_layers(model), config.training, [replica])

    assert scales({}) == [{"w": 1 / 8}, {}]
    assert scales({"optimizer": "adam"}) == [{"w": 1.0}, {}]
    assert scales({"recurrent_step_scale": 0.5}) == [{"w": 0.5}, {}]
    assert scales({}, layers=("nalu", "nmu")) == [{"w_hat": 1 / 8, "m_hat": 1 / 8, "g": 1 / 8}, {}]
    assert scales({}, layers=("lstm", "linear")) == [{}, {}]  # Keras's cells: the baselines, as published
    with pytest.raises(NaluError, match="recurrent_step_scale' must be a number >= 0"):
        resolve({"training": {"recurrent_step_scale": -1.0}})


# -- the recurrent task's config -------------------------------------------------------------------


def test_recurrent_task_defaults_and_static_ones_unchanged():
    recurrent = resolve({"task": {"kind": "recurrent"}}).task
    assert (recurrent.input_size, recurrent.test_size) == (10, 1000)
    assert recurrent.extrapolation_range == recurrent.interpolation_range
    union = resolve({"task": {"kind": "recurrent", "op": "sub", "interpolation_range": [[-2, -1], [1, 2]]}}).task
    assert union.extrapolation_range == union.interpolation_range == [[-2.0, -1.0], [1.0, 2.0]]
    static = resolve({}).task
    assert (static.input_size, static.test_size, static.extrapolation_range) == (100, 10_000, [[2.0, 6.0]])
    explicit = {"kind": "recurrent", "input_size": 12, "test_size": 5, "extrapolation_range": [1, 3]}
    explicit = resolve({"task": explicit}).task
    assert (explicit.input_size, explicit.test_size, explicit.extrapolation_range) == (12, 5, [[1.0, 3.0]])
    # The polish step: at every evaluation on the recurrent task, never on the static one, unless set.
    training = lambda settings: resolve(settings).training  # noqa: E731
    assert (training({}).polish_every, training({}).polish_iterations) == (0, 200)
    recurrent_training = training({"task": {"kind": "recurrent"}, "training": {"eval_every": 500}})
    assert (recurrent_training.polish_every, recurrent_training.polish_iterations) == (500, 30)
    off = training({"task": {"kind": "recurrent"}, "training": {"polish_every": 0, "polish_iterations": 7}})
    assert (off.polish_every, off.polish_iterations) == (0, 7)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"model": {"unit": "lstm"}}, "unit 'lstm' is a recurrent cell; it needs task.kind recurrent"),
        ({"model": {"layers": ["gru", "nau"]}}, "unit 'gru' is a recurrent cell; it needs task.kind recurrent"),
        ({"task": {"kind": "recurrent"}, "model": {"layers": ["nau", "lstm"]}}, "cannot be the output layer"),
        ({"task": {"kind": "recurrent", "length": 0}}, "'task.length' must be positive"),
        ({"task": {"kind": "recurrent", "extrapolation_length": 0}}, "'task.extrapolation_length' must be positive"),
        ({"task": {"kind": "recurrent", "input_size": 4}}, "input_size=4 is too small"),
        ({"task": {"kind": "recurrent", "input_size": 8}}, "input_size=8 is too small"),
        ({"task": {"kind": "loop"}}, "unknown task kind 'loop'"),
    ],
)
def test_recurrent_config_errors_name_the_problem(settings, message):
    with pytest.raises(NaluError, match=message):
        resolve(settings)


def test_recurrent_configs_that_fit_are_accepted():
    assert resolve({"task": {"kind": "recurrent", "input_size": 9}}).task.input_size == 9
    assert resolve({"task": {"kind": "recurrent", "input_size": 4, "subsets": [[0, 2], [1, 3]]}}).task.subsets
    assert resolve({"task": {"kind": "recurrent"}, "model": {"unit": "gru"}}).model.layer_units == ["gru", "linear"]


def test_an_lstm_architecture_gets_a_linear_output_layer():
    assert parse_architecture("lstm") == {"unit": "lstm", "layers": ["lstm", "linear"]}
    assert parse_architecture("nau") == {"unit": "nau", "layers": ["nau", "nau"]}
    config = resolve({"task": {"kind": "recurrent"}, "model": parse_architecture("lstm")})
    assert config.model.name == "lstm-linear"


# -- shared validation and test sets ---------------------------------------------------------------


def test_shared_layout_finds_runs_of_equal_specs():
    s0, s1 = (tasks.TaskSpec.from_config(resolve({"task": {"kind": "recurrent"}}).task, seed) for seed in (0, 1))
    assert s0 != s1
    assert shared_layout([s0]) == (1, 1)
    assert shared_layout([s0, s0, s0]) == (1, 3)
    assert shared_layout([s0, s0, s1, s1]) == (2, 2)
    assert shared_layout([s0, s1]) == (2, 1)
    for mixed in ([s0, s0, s1], [s0, s1, s1], [s0, s0, s1, s0], [s0, s1, s0, s1], [s0, s0, s0, s1]):
        assert shared_layout(mixed) == (len(mixed), 1), mixed


# -- the replica trainer on the recurrent task -----------------------------------------------------


def test_recurrent_replicas_trained_together_equal_each_trained_alone():
    """As tests/test_training.py for the static task, on the recurrent one (float64 cells, sequences)."""
    config = resolve({
        "task": {"op": "add", "kind": "recurrent", "length": 5, "validation_size": 64, "test_size": 16,
                 "extrapolation_length": 100},
        "model": {"layers": ["nau", "nau"]},
        # No polish: its compilation would double this test's cost (tests/test_polish.py covers replicas).
        "training": {"batch_size": 32, "learning_rate": 1e-2, "polish_every": 0},
    })
    # Two restarts of one seed: one task, so evaluation stores its sets once and broadcasts them.
    replicas = [Replica.for_seed(config, 0, restart) for restart in (0, 1)]
    together = ReplicaTrainer(config.model, config.training, replicas)
    results = together.fit(200, 100, False)
    assert together.architectures[0].layers[0].dtype == "float64"
    first, second = together.replica_params(0), together.replica_params(1)
    assert not np.allclose(first[0]["w"], second[0]["w"])
    # The second replica (its own initialisation and data stream, not first in the batch) trained alone;
    # a trainer per replica costs seconds of compilation, so one is checked.
    alone = ReplicaTrainer(config.model, config.training, [replicas[1]])
    (result,) = alone.fit(200, 100, False)
    for layer_together, layer_alone in zip(second, alone.replica_params(0)):
        for name in layer_alone:
            np.testing.assert_allclose(layer_together[name], layer_alone[name], rtol=1e-4, atol=1e-5)  # as for static
    assert np.isfinite(result.interpolation_mse) and np.isfinite(result.extrapolation_mse)
    np.testing.assert_allclose(results[1].interpolation_mse, result.interpolation_mse, rtol=1e-5)
    np.testing.assert_allclose(results[1].extrapolation_mse, result.extrapolation_mse, rtol=1e-5)
