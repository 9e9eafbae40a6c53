"""The Keras layer contract of every unit: arguments checked at construction, configs and
`.keras` files that round-trip, registration under the "nalu" package, the unit registry,
seeded initial weights, and SavedModels that plain TensorFlow runs without nalu_cli."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from nalu_cli.config import CELL_ONLY_UNITS, UNITS, ModelConfig
from nalu_cli.export import make_meta, write_saved_model
from nalu_cli.model import build_model, get_params, initial_params
from nalu_cli.unit_names import UNIT_CLASSES
from nalu_cli.units import INALU, NALU, NMRU, UNIT_LAYERS, ArithmeticUnit, Gated, NaiNPU, RealNPU, ReLUMLP
from tests.unit_cases import BATCH, CASE_IDS, CASES, IN, assign, random_params

# -- constructor arguments ----------------------------------------------------------------------


@pytest.mark.parametrize("units", [0, -2, 2.5, True])
@pytest.mark.parametrize("name", UNITS)
def test_invalid_units_are_rejected_quoting_the_value(name, units):
    with pytest.raises(ValueError, match=f"Received: units={units}"):
        UNIT_LAYERS[name](units)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: NALU(1, epsilon=0), "Received: epsilon=0"),
        (lambda: INALU(1, epsilon=0), "Received: epsilon=0"),
        (lambda: INALU(1, omega=-1.0), "Received: omega=-1.0"),
        (lambda: INALU(1, regularizer_threshold="20"), "Received: regularizer_threshold=20"),
        (lambda: RealNPU(1, epsilon=-1e-7), "Received: epsilon=-1e-07"),
        (lambda: NaiNPU(1, epsilon=0.0), "Received: epsilon=0.0"),
        (lambda: NMRU(1, epsilon=-1.0), "Received: epsilon=-1.0"),
        (lambda: NMRU(1, sign_retrieval="yes"), "Received: sign_retrieval=yes"),
        (lambda: ReLUMLP(1, hidden_units=0), "Received: hidden_units=0"),
        (lambda: ReLUMLP(1, hidden_units=3.0), "Received: hidden_units=3.0"),
        (lambda: Gated(1, epsilon=-1.0), "Received: epsilon=-1.0"),
    ],
)
def test_invalid_arguments_are_rejected_quoting_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- configs and .keras files -------------------------------------------------------------------

# Hyperparameters away from their defaults: a round trip must keep them, not fall back.
HYPERPARAMETERS = {
    "nac": {},
    "nalu": {"epsilon": 1e-5},
    "nau": {},
    "nmu": {},
    "inalu": {"epsilon": 1e-5, "omega": 10.0, "regularizer_threshold": 10.0},
    "realnpu": {"epsilon": 1e-5},
    "nainpu": {"epsilon": 1e-5},
    "nmru": {"epsilon": 1e-5, "sign_retrieval": False},
    "linear": {},
    "relu": {"hidden_units": 8},
    "gated": {"epsilon": 1e-5},
    "lstm": {},
    "gru": {},
}


@pytest.mark.parametrize("configured", [False, True], ids=["defaults", "set"])
@pytest.mark.parametrize("name", UNITS)
def test_config_round_trip_keeps_hyperparameters(name, configured):
    kwargs = {**HYPERPARAMETERS[name], "name": "unit"} if configured else {}
    layer = UNIT_LAYERS[name](3, **kwargs)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.units == 3
    for key, value in kwargs.items():
        assert getattr(clone, key) == value, key


@pytest.mark.parametrize("name", CASE_IDS)
def test_keras_file_round_trip_gives_equal_predictions(name, tmp_path):
    rng = np.random.default_rng(6)
    model = keras.Sequential([keras.Input(shape=(IN,)), CASES[name].make()])
    layer = model.layers[0]
    assign(layer, random_params(name, layer, rng))
    x = CASES[name].inputs(rng, (BATCH, IN)).astype(np.float32)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is type(layer)
    assert loaded.layers[0].get_config() == layer.get_config()
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


# -- registration and the unit registry ----------------------------------------------------------


@pytest.mark.parametrize("name", UNITS)
def test_layers_are_registered_under_the_nalu_package(name):
    assert keras.saving.get_registered_name(UNIT_LAYERS[name]) == f"nalu>{UNIT_CLASSES[name]}"


def test_every_configurable_unit_has_a_layer_in_the_same_order():
    assert tuple(UNIT_LAYERS) == UNITS
    assert UNITS == (
        "nac", "nalu", "nau", "nmu", "inalu", "realnpu", "nainpu", "nmru", "linear", "relu", "gated", "lstm", "gru"
    )


def test_every_registered_name_resolves_to_the_arithmetic_unit_class_the_table_names():
    for name, layer_cls in UNIT_LAYERS.items():
        assert isinstance(layer_cls, type) and issubclass(layer_cls, ArithmeticUnit), name
        assert layer_cls.__name__ == UNIT_CLASSES[name]


# -- seeds ------------------------------------------------------------------------------------------


def test_same_seed_same_initial_weights():
    first = build_model(ModelConfig(unit="nalu"), input_size=10, seed=5)
    second = build_model(ModelConfig(unit="nalu"), input_size=10, seed=5)
    other = build_model(ModelConfig(unit="nalu"), input_size=10, seed=6)
    for a, b, c in zip(first.get_weights(), second.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


STATIC_UNITS = [unit for unit in UNITS if unit not in CELL_ONLY_UNITS]


@pytest.mark.parametrize("first", STATIC_UNITS)
def test_initial_params_are_the_weights_of_the_model_the_seed_builds_without_building_it(first):
    # The trainer builds one Keras model per architecture and draws its other restarts' weights so.
    for second, hidden, inputs, seed in (("nmu", 2, 100, 0), (first, 3, 7, 11), ("gated", 5, 10, 2**32 - 1)):
        config = ModelConfig(layers=[first, second], hidden_size=hidden)
        built = get_params(build_model(config, input_size=inputs, seed=seed))
        drawn = initial_params(config, input_size=inputs, seed=seed)
        assert [sorted(layer) for layer in drawn] == [sorted(layer) for layer in built]
        for want, got in zip(built, drawn):
            for name in want:
                assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
                np.testing.assert_array_equal(got[name], want[name], err_msg=f"{first}-{second} {name}")
    seed_0, seed_1 = (initial_params(ModelConfig(layers=[first, "nmu"]), input_size=100, seed=seed)[0] for seed in (0, 1))
    assert any(not np.array_equal(seed_0[name], seed_1[name]) for name in seed_0)


def test_a_recurrent_models_initial_params_are_its_built_weights():
    config = ModelConfig(layers=["nau", "nmu"])
    built = get_params(build_model(config, input_size=10, seed=4, kind="recurrent"))
    drawn = initial_params(config, input_size=10, seed=4, kind="recurrent")
    for want, got in zip(built, drawn):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_initial_params_refuses_a_built_layer_whose_variables_it_would_replace():
    model = build_model(ModelConfig(layers=["nau", "nmu"]), input_size=10, seed=0)
    with pytest.raises(ValueError, match="unbuilt"):
        model.layers[0].initial_params((None, 10))
    assert isinstance(model.layers[0].w, keras.Variable)


# -- a fresh process: SavedModels without nalu_cli, then the .keras file with it ------------------

FRESH_PROCESS = """
import json, sys, numpy as np, tensorflow as tf
x, saved_models, keras_file, out = np.load(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
outputs = {}
sequences = np.load(sys.argv[1].replace("x.npy", "sequences.npy"))
for unit, path in saved_models.items():
    serve = tf.saved_model.load(path).signatures["serving_default"]
    (y,) = serve(x=tf.constant(sequences if unit.startswith("recurrent-") else x)).values()  # "y"; model.export: "output_0"
    outputs[unit] = y.numpy()
nalu_cli_imported = any(name.startswith("nalu_cli") for name in sys.modules)

import keras
import nalu_cli.units  # registers the layers
outputs["keras_file"] = np.asarray(keras.saving.load_model(keras_file)(x))
np.savez(out, nalu_cli_imported=nalu_cli_imported, **outputs)
"""


STATIC_UNITS = [unit for unit in UNITS if unit not in CELL_ONLY_UNITS]
# Both kinds of cell: a unit as an ArithmeticCell (the default model's NAU) and a Keras cell (LSTM, two states).
RECURRENT_MODELS = ["default", "lstm"]


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory):
    """What a fresh Python process computes from files written here, with what this process computes.

    One process serves both tests that need one, as starting TensorFlow costs seconds: it first runs
    every unit's SavedModel with plain TensorFlow, noting whether that imported nalu_cli, and only
    then imports nalu_cli.units to reload a NALU model's .keras file.
    """
    tmp_path = tmp_path_factory.mktemp("fresh_process")
    x = np.random.default_rng(0).uniform(1, 2, (32, 10)).astype(np.float32)
    task = {"op": "mul", "input_size": 10, "subsets": [[0, 3], [2, 5]], "interpolation_range": [[1, 2]],
            "extrapolation_range": [[2, 6]], "seed": 0}
    expected, paths = {}, {}
    for unit in STATIC_UNITS:
        model = build_model(ModelConfig(unit=unit), input_size=10, seed=1)
        expected[unit] = np.asarray(model(x))
        paths[unit] = str(tmp_path / unit)
        write_saved_model(model, make_meta(task, {"unit": unit}), tmp_path / unit)
    # Recurrent models take sequences of any length: [N, T, n] (here T = 7).
    sequences = np.random.default_rng(1).uniform(1, 2, (32, 7, 10)).astype(np.float32)
    np.save(tmp_path / "sequences.npy", sequences)
    for unit in RECURRENT_MODELS:
        model = build_model(ModelConfig(unit=unit), input_size=10, seed=1, kind="recurrent")
        expected[f"recurrent-{unit}"] = np.asarray(model(sequences))
        paths[f"recurrent-{unit}"] = str(tmp_path / f"recurrent-{unit}")
        write_saved_model(model, make_meta({**task, "kind": "recurrent", "length": 10, "extrapolation_length": 1000},
                                           {"unit": unit}), tmp_path / f"recurrent-{unit}")
    # Keras's own model.export of a model with regulariser strengths and constraints (nalu_cli.keras).
    model = build_model(ModelConfig(layers=["nau", "nmu"]), input_size=10, seed=2)
    for unit in model.layers:
        unit.regularizer_strength.assign(0.5)
    model.export(tmp_path / "keras-export", verbose=False)
    expected["keras-export"], paths["keras-export"] = np.asarray(model(x)), str(tmp_path / "keras-export")
    model = build_model(ModelConfig(unit="nalu"), input_size=10, seed=3)
    model.save(tmp_path / "model.keras")
    expected["keras_file"] = np.asarray(model(x))
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, tmp_path / "x.npy", json.dumps(paths), tmp_path / "model.keras",
         tmp_path / "y.npz"],
        check=True, capture_output=True, cwd=tmp_path,
    )
    with np.load(tmp_path / "y.npz") as loaded:
        return {key: loaded[key] for key in loaded.files}, expected


def test_every_unit_round_trips_through_a_plain_tensorflow_saved_model(fresh_process):
    loaded, expected = fresh_process
    assert not loaded["nalu_cli_imported"], "nalu_cli was imported"
    for unit in [*STATIC_UNITS, *(f"recurrent-{unit}" for unit in RECURRENT_MODELS), "keras-export"]:
        np.testing.assert_allclose(loaded[unit], expected[unit], rtol=1e-5, err_msg=unit)


def test_keras_file_reloads_in_fresh_process(fresh_process):
    loaded, expected = fresh_process
    np.testing.assert_array_equal(loaded["keras_file"], expected["keras_file"])
