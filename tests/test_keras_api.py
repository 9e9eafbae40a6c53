"""nalu's units in a user's own Keras model (nalu_cli.keras): the penalty in `model.losses` driven by
the step, weight ranges as constraints, SplitAdam taking the trainer's steps, snapping, saving.

Small models and a few steps each: `benchmarks/keras_fit.py` shows them learning a*b."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nalu_cli.keras import (
    NALU,
    NAU,
    NMU,
    ArithmeticCell,
    Clip,
    RegularizerSchedule,
    SnapSelection,
    SplitAdam,
    snap_units,
)
from nalu_cli.training import optimizer as trainer_optimizer

IN = 6


def nau_nmu(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((IN,)), NAU(2, name="nau"), NMU(1, name="nmu")])


def recurrent(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((None, 3)), keras.layers.RNN(ArithmeticCell("nau", 2), name="rnn"),
                             NMU(1, name="nmu")])


def data(n=64, seed=0, shape=(IN,)):
    x = np.random.default_rng(seed).uniform(1, 2, (n, *shape)).astype(np.float32)
    return x, (x[..., :2].sum(-1) * x[..., 1:4].sum(-1)).reshape(n, -1)[:, :1]


def penalty(unit):
    return float(unit.regularizer_strength.numpy()) * float(unit.regularizer(**unit.params()))


# -- the sparsity penalty -------------------------------------------------------------------------


def test_each_units_penalty_is_in_model_losses_scaled_by_its_strength():
    model = nau_nmu()
    nau, nmu = model.layers
    assert [float(loss) for loss in model.losses] == [0.0, 0.0]  # strength 0 until the schedule says otherwise
    nau.regularizer_strength.assign(0.5)
    nmu.regularizer_strength.assign(3.0)
    assert [float(loss) for loss in model.losses] == pytest.approx([penalty(nau), penalty(nmu)], rel=1e-6)
    assert penalty(nau) > 0 and penalty(nmu) > 0
    assert not nau.regularizer_strength.trainable
    x, y = data()
    model.compile(loss="mse", run_eagerly=True)  # what fit minimises: the MSE plus model.losses
    mse = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(mse + penalty(nau) + penalty(nmu), rel=1e-5)


def test_regularizer_schedule_follows_the_optimizer_step_with_the_published_schedules():
    model = nau_nmu()
    model.compile(keras.optimizers.SGD(0.0), "mse", run_eagerly=True)
    model.optimizer.iterations.assign(27_500)  # the NAU's ramp (0 -> 0.01 over steps 5e3 -> 5e4) half way
    history = model.fit(*data(), batch_size=64, epochs=1, callbacks=[RegularizerSchedule()], verbose=0)
    assert history.history["nau_regularizer_strength"] == [pytest.approx(0.005)]
    assert history.history["nmu_regularizer_strength"] == [0.0]  # the NMU's starts at step 1e6


def test_regularizer_schedule_overrides_set_every_units_ramp():
    model = nau_nmu()
    model.compile(keras.optimizers.SGD(0.0), "mse", run_eagerly=True)
    # Set before each batch, from the step: 4 batches, the last at step 3 -> lambda = 2 * 3 / 10.
    model.fit(*data(), batch_size=16, epochs=1, callbacks=[RegularizerSchedule(scale=2.0, start=0, end=10)], verbose=0)
    assert [float(unit.regularizer_strength.numpy()) for unit in model.layers] == pytest.approx([0.6, 0.6])


def test_a_cell_inside_keras_rnn_trains_with_its_penalty():
    """add_loss in a cell fails inside RNN's loop; the penalty comes from the weights, outside it."""
    lr, strength = 0.1, 0.5
    x = data(32, shape=(4, 3))[0]
    model = recurrent()
    unit = model.get_layer("rnn").cell.unit
    y = model(x).numpy()  # the model's own outputs: the MSE has no gradient, the penalty has
    before = unit.w.numpy()
    unit.regularizer_strength.assign(strength)
    model.compile(keras.optimizers.SGD(lr), "mse")  # in a graph, where the RNN's loop is a tf.while_loop
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    with tf.GradientTape() as tape:
        w = tf.constant(before)
        tape.watch(w)
        gradient = tape.gradient(unit.regularizer(w=w), w)
    expected = unit.clip(w=before - lr * strength * gradient)["w"].numpy()
    np.testing.assert_allclose(unit.w.numpy(), expected, atol=1e-7)
    assert np.abs(unit.w.numpy() - before).max() > 1e-3
    # ... and RegularizerSchedule finds the unit inside the cell.
    model.compile(keras.optimizers.SGD(0.0), "mse", run_eagerly=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[RegularizerSchedule(scale=1.0, start=0, end=2)])
    assert float(unit.regularizer_strength.numpy()) == 1.0


# -- weight ranges ------------------------------------------------------------------------------


def test_weight_ranges_hold_under_any_optimizer():
    model = nau_nmu()
    model.compile(keras.optimizers.SGD(1e3), "mse", run_eagerly=True)  # steps far outside [-1, 1]
    model.fit(*data(), batch_size=32, epochs=1, verbose=0)
    nau, nmu = (layer.w.numpy() for layer in model.layers)
    assert nau.min() >= -1 and nau.max() <= 1 and nmu.min() >= 0 and nmu.max() <= 1
    assert np.isin(np.abs(nau), [1.0]).any() and np.isin(nmu, [0.0, 1.0]).any()  # the ranges bound the step


# -- SplitAdam ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, scale, hidden, common", [
    ("static", 1.0, None, 1.0), ("recurrent", 1.0, None, 1.0), ("recurrent", 0.1, None, 1.0), ("static", 1.0, 3, 1.0),
    ("recurrent", 0.1, 3, 1.0), ("static", 1.0, 3, 0.3), ("recurrent", 0.1, None, 0.3)])
def test_split_adam_takes_the_trainers_steps_on_the_same_gradients(kind, scale, hidden, common):
    """nalu's trainer: optimizer.update (split-adam on the first layer's matrices; a cell's x_t rows
    only, its h_{t-1} rows stepping `scale` times as far; with `hidden`, the hidden split from that
    step; the common mode's step `common` times as far), then each unit's clip."""
    model = nau_nmu() if kind == "static" else recurrent()
    units = [model.layers[0].cell if kind == "recurrent" else model.layers[0], model.layers[1]]
    split_adam = SplitAdam(learning_rate=0.05, recurrent_step_scale=scale, hidden_split_start=hidden,
                           common_step_scale=common)
    variables = model.trainable_variables
    split_adam.build(variables)
    first = units[0].unit.w if kind == "recurrent" else units[0].w
    assert split_adam.split_variables() == [first]
    params = [{name: tf.constant(v.numpy()) for name, v in unit.params().items()} for unit in units]
    state = trainer_optimizer.init(params, [("w",), ()], hidden=hidden is not None)
    rows = [3 if kind == "recurrent" else None, None]
    rng = np.random.default_rng(0)
    for step in range(6):
        grads = [{name: tf.constant(rng.normal(size=tuple(v.shape)), v.dtype) for name, v in p.items()} for p in params]
        by_variable = {id(unit.params()[name]): g[name] for unit, g in zip(units, grads) for name in g}
        split_adam.apply_gradients([(by_variable[id(v)], v) for v in variables])
        row_scales = [{"w": scale} if kind == "recurrent" else {}, {}]
        params, state = trainer_optimizer.update(grads, state, params, trainer_optimizer.step_size(0.05, step), rows,
                                                 row_scales, hidden=None if hidden is None else (hidden, step),
                                                 common_scale=common)
        params = [unit.clip(**p) for unit, p in zip(units, params)]
    for unit, expected in zip(units, params):
        for name, variable in unit.params().items():
            np.testing.assert_array_equal(variable.numpy(), expected[name].numpy(), err_msg=name)


def test_split_adam_without_splits_is_keras_adam():
    variables = [[keras.Variable(w) for w in nau_nmu().get_weights()[::2]] for _ in range(2)]  # the two w
    optimizers = [SplitAdam(0.05, split=[]), keras.optimizers.Adam(0.05)]
    rng = np.random.default_rng(1)
    for _ in range(6):
        grads = [tf.constant(rng.normal(size=v.shape), tf.float32) for v in variables[0]]
        for chosen, weights in zip(optimizers, variables):
            chosen.apply_gradients(zip(grads, weights))
    assert optimizers[0].split_variables() == []
    for a, b in zip(*variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_split_adam_splits_the_variables_named_and_round_trips_its_config():
    model = nau_nmu()
    split_adam = SplitAdam(0.01, split=["nmu"])
    split_adam.build(model.trainable_variables)
    assert split_adam.split_variables() == [model.layers[1].w]
    clone = SplitAdam.from_config(SplitAdam(0.01, split=["nmu"], recurrent_step_scale=0.1,
                                            common_step_scale=0.3).get_config())
    assert clone.split == ["nmu"] and float(clone.learning_rate) == pytest.approx(0.01)
    assert clone.recurrent_step_scale == 0.1 and clone.common_step_scale == 0.3


@pytest.mark.parametrize("name", ["common_step_scale", "recurrent_step_scale"])
@pytest.mark.parametrize("value", [-0.1, float("inf"), float("nan"), True, "0.3"])
def test_split_adam_refuses_a_step_factor_that_is_not_a_finite_number_at_least_0(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be a finite number >= 0"):
        SplitAdam(0.01, **{name: value})


# -- snapping -----------------------------------------------------------------------------------


def exact_nau_nmu(offset=0.0):
    """NAU -> NMU holding a = x0 + x1 and b = x1 + x2 + x3 (plus `offset` on every weight)."""
    model = nau_nmu()
    nau = np.zeros((IN, 2), np.float32)
    nau[:2, 0] = nau[1:4, 1] = 1
    model.layers[0].w.assign(np.clip(nau + offset, -1, 1))
    model.layers[1].w.assign(np.full((2, 1), 1 - abs(offset), np.float32))
    return model


def test_snap_units_snaps_in_place_and_refuses_a_unit_without_exact_form():
    model = exact_nau_nmu(offset=0.02)
    assert snap_units(model) == ["nau", "nmu"]
    np.testing.assert_array_equal(model.layers[0].w.numpy(), exact_nau_nmu().layers[0].w.numpy())
    np.testing.assert_array_equal(model.layers[1].w.numpy(), np.ones((2, 1)))
    nalu = keras.Sequential([keras.Input((IN,)), NAU(2, name="nau"), NALU(1, name="gate")])
    before = [w.copy() for w in nalu.get_weights()]
    with pytest.raises(ValueError, match="cannot snap gate"):
        snap_units(nalu)
    for a, b in zip(before, nalu.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing changed, not even the units that could snap


def test_snap_selection_keeps_the_snapped_weights_only_when_better():
    model = exact_nau_nmu(offset=0.02)
    trained = [w.copy() for w in model.get_weights()]
    x, y = data(256)
    # Scored on the task, the snapped weights are better; on the model's own outputs, the trained ones.
    by_own_outputs = SnapSelection(validation_data=(x, model.predict(x, batch_size=1024, verbose=0)))
    by_task = SnapSelection(validation_data=(x, y))
    # The weights stay (learning rate 0): the choice is between them and their snapped form.
    model.compile(keras.optimizers.SGD(0.0), "mse", run_eagerly=True)
    model.fit(x, y, batch_size=256, epochs=2, callbacks=[by_own_outputs, by_task], verbose=0)
    assert (by_task.best_snapped, by_own_outputs.best_snapped) == (True, False)
    assert by_task.best_epoch == by_own_outputs.best_epoch == 0  # epoch 1 ties: no change
    exact = exact_nau_nmu().get_weights()
    for selected, expected in ((by_task.best_weights, exact), (by_own_outputs.best_weights, trained)):
        for a, b in zip(selected, expected):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(model.get_weights(), exact):  # the last callback to end puts its choice in the model
        np.testing.assert_array_equal(a, b)


def test_snap_selection_reads_the_exact_product_a_model_of_two_units_holds_at_the_wrong_scale():
    """Each slice at weight 0.4 rounds to nothing, unit by unit; as nalu train does, the callback
    also tries the product of the first layer's patterns (training/forms.py) and hands out a*b.
    Around other layers (an output scaled by 1.5) the forms are not those of the model: not tried
    (the form would give 1.5 a*b, nearer y than the trained weights, and be selected)."""
    x, y = data(256)
    scaled = exact_nau_nmu()
    scaled.layers[0].w.assign(0.4 * scaled.layers[0].w.numpy())
    inputs = keras.Input((IN,))
    rescaled = keras.Model(inputs, keras.layers.Rescaling(1.5)(NMU(1, name="nmu")(NAU(2, name="nau")(inputs))))
    rescaled.set_weights(scaled.get_weights())
    for model, derived in ((scaled, True), (rescaled, False)):
        selection = SnapSelection(validation_data=(x, y))
        model.compile(keras.optimizers.SGD(0.0), "mse", run_eagerly=True)
        model.fit(x, y, batch_size=256, epochs=1, callbacks=[selection], verbose=0)
        assert selection.best_snapped is derived
        if derived:
            assert selection.best_mse < 1e-9
            for a, b in zip(model.get_weights(), exact_nau_nmu().get_weights()):
                np.testing.assert_array_equal(a, b)


def test_snap_selection_reads_the_exact_product_under_the_float64_policy_too():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        model = nau_nmu()
        nau = np.zeros((IN, 2))
        nau[:2, 0] = nau[1:4, 1] = 0.4
        model.layers[0].w.assign(nau)
        model.layers[1].w.assign(np.ones((2, 1)))
        x, y = (array.astype(np.float64) for array in data(256))
        selection = SnapSelection(validation_data=(x, y))
        model.compile(keras.optimizers.SGD(0.0), "mse", run_eagerly=True)
        model.fit(x, y, batch_size=256, epochs=1, callbacks=[selection], verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.layers[0].w.dtype == "float64"
    assert selection.best_snapped and selection.best_mse < 1e-9


# -- saving and arguments -------------------------------------------------------------------------


def test_save_and_load_keep_the_strengths_the_constraints_and_the_penalty(tmp_path):
    model = nau_nmu()
    model.layers[0].regularizer_strength.assign(0.004)
    model.layers[1].regularizer_strength.assign(7.0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert [unit.regularizer_strength.numpy() for unit in loaded.layers] == [np.float32(0.004), np.float32(7.0)]
    assert [unit.w.constraint.get_config() for unit in loaded.layers] == [{"low": -1.0, "high": 1.0},
                                                                           {"low": 0.0, "high": 1.0}]
    assert [float(loss) for loss in loaded.losses] == pytest.approx([float(loss) for loss in model.losses])


def test_exported_model_carries_the_strengths(tmp_path):
    model = nau_nmu()
    model.layers[0].regularizer_strength.assign(0.004)
    model.export(tmp_path / "exported", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    strengths = sorted(v.numpy() for v in loaded.variables if "regularizer_strength" in v.name)
    assert strengths == [np.float32(0.0), np.float32(0.004)]
    x, _ = data()
    np.testing.assert_allclose(loaded.serve(x).numpy(), model.predict(x, verbose=0), rtol=1e-6)


def test_a_keras_file_written_before_the_strength_existed_still_loads(tmp_path, monkeypatch):
    for unit in (NAU, NMU):  # as before nalu_cli.keras: no schedule on the class, no strength variable
        monkeypatch.setattr(unit, "regularizer_schedule", (0.0, 0, 1))
    old = nau_nmu(seed=4)
    assert old.layers[0].regularizer_strength is None
    old.save(tmp_path / "old.keras")
    monkeypatch.undo()
    loaded = keras.models.load_model(tmp_path / "old.keras")
    for a, b in zip(loaded.trainable_weights, old.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert [float(unit.regularizer_strength.numpy()) for unit in loaded.layers] == [0.0, 0.0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SplitAdam(split="nau"), "Received: split='nau'"),
        (lambda: SplitAdam(recurrent_step_scale=-0.1), "Received: -0.1"),
        (lambda: Clip(1.0, 0.0), "Received: low=1.0, high=0.0"),
        (lambda: RegularizerSchedule(scale=-1.0), "Received: scale=-1.0"),
        (lambda: SnapSelection(validation_data=np.zeros((4, 2))), "must be a tuple"),
        (lambda: SnapSelection(validation_data=data(), every=0), "Received: every=0"),
    ],
)
def test_invalid_arguments_are_rejected_quoting_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_callbacks_refuse_a_model_without_units():
    model = keras.Sequential([keras.Input((IN,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", run_eagerly=True)
    for callback, message in ((RegularizerSchedule(), "no nalu unit with a sparsity penalty"),
                              (SnapSelection(data()), "no nalu unit to snap")):
        with pytest.raises(ValueError, match=message):
            model.fit(*data(), epochs=1, verbose=0, callbacks=[callback])
