"""Exports load with their own runtimes and predict what the run predicts."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from nalu_cli.config import ModelConfig
from nalu_cli.export import (
    SavedModelPredictor,
    load_keras_model,
    make_meta,
    predict_tflite,
    tflite_interpreter,
    write_model,
)
from nalu_cli.model import build_model
from nalu_cli.rundir import KERAS_FILE, META_FILE, SAVED_MODEL_DIR
from tests.conftest import invoke

PLAIN_TF = """
import sys, json, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
serve = loaded.signatures["serving_default"]
x = np.load(sys.argv[2])
y = serve(x=tf.constant(x))["y"].numpy()
np.save(sys.argv[3], y)
assert not any(name.startswith("nalu_cli") for name in sys.modules), "nalu_cli was imported"
"""


@pytest.fixture(scope="module")
def inputs(exported):
    spec = json.loads((exported / "assets.extra" / "nalu.json").read_text())["task"]
    return np.random.default_rng(0).uniform(1, 6, (256, spec["input_size"])).astype(np.float32)


@pytest.fixture(scope="module")
def reference(add_run, inputs):
    return SavedModelPredictor(add_run / "saved_model")(inputs)


def test_saved_model_loads_with_plain_tensorflow_without_nalu(exported, inputs, reference, tmp_path):
    np.save(tmp_path / "x.npy", inputs)
    subprocess.run(
        [sys.executable, "-c", PLAIN_TF, exported, tmp_path / "x.npy", tmp_path / "y.npy"],
        check=True,
        capture_output=True,
        cwd=tmp_path,  # not the repo root, so nalu_cli is not importable by accident
    )
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reference, rtol=1e-6)


def test_saved_model_cli_lists_the_serving_signature(exported):
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir", str(exported), "--all"]
    completed = subprocess.run(cli, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert "serving_default" in completed.stdout
    assert "inputs['x'] tensor_info" in completed.stdout and "(-1, 100)" in completed.stdout
    assert "outputs['y'] tensor_info" in completed.stdout


def test_keras_export_predicts_the_same(exported, inputs, reference):
    import keras

    import nalu_cli.units  # noqa: F401

    model = keras.saving.load_model(exported / "model.keras")
    np.testing.assert_allclose(np.asarray(model(inputs)), reference, rtol=1e-6)


def test_tflite_export_predicts_the_same_without_a_deprecation_warning(exported, inputs, reference):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = predict_tflite(exported / "model.tflite", inputs)
    np.testing.assert_allclose(output, reference, rtol=1e-5)
    assert not [w for w in caught if "deprecated" in str(w.message)], [str(w.message) for w in caught]


def test_tflite_falls_back_to_tf_lite_quietly_without_litert(exported, inputs, reference, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if the tflite extra were not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = predict_tflite(exported / "model.tflite", inputs)
    np.testing.assert_allclose(output, reference, rtol=1e-5)
    assert type(tflite_interpreter(exported / "model.tflite")).__module__.startswith("tensorflow.lite")
    assert not [w for w in caught if "deprecated" in str(w.message)], [str(w.message) for w in caught]


def test_tflite_runs_on_litert_where_it_is_installed(exported):
    pytest.importorskip("ai_edge_litert")  # the tflite extra; TensorFlow is already imported here
    assert type(tflite_interpreter(exported / "model.tflite")).__module__ == "ai_edge_litert.interpreter"


def test_onnx_export_predicts_the_same(exported, inputs, reference):
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["x"]
    (output,) = session.run(None, {"x": inputs})
    np.testing.assert_allclose(output, reference, rtol=1e-5)


def test_exported_saved_model_carries_its_task_and_evaluates_alone(exported, add_run):
    from_export = json.loads(invoke("eval", exported, "--json").stdout)
    from_run = json.loads(invoke("eval", add_run, "--json").stdout)
    assert from_export["task"] == from_run["task"]
    assert from_export["extrapolation"]["mse"] == from_run["extrapolation"]["mse"]


def test_export_refuses_existing_output_unless_overwrite(add_run, exported):
    before = (exported / "saved_model.pb").read_bytes()
    result = invoke("export", add_run, "--out", exported)
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert (exported / "saved_model.pb").read_bytes() == before


def small_model_and_meta():
    model = build_model(ModelConfig(layers=["nau", "nmu"]), input_size=10, seed=3)
    task = {"op": "mul", "input_size": 10, "subsets": [[0, 3], [2, 5]], "interpolation_range": [[1.0, 2.0]],
            "extrapolation_range": [[2.0, 6.0]], "seed": 0}
    return model, make_meta(task, {"unit": "nau-nmu", "layers": ["nau", "nmu"]})


def test_write_model_puts_the_keras_file_inside_the_saved_model_when_asked(tmp_path):
    model, meta = small_model_and_meta()
    x = np.random.default_rng(0).uniform(1, 2, (16, 10)).astype(np.float32)
    write_model(model, meta, tmp_path / "out", tmp_path / "out" / KERAS_FILE)
    assert json.loads((tmp_path / "out" / META_FILE).read_text()) == meta
    np.testing.assert_allclose(SavedModelPredictor(tmp_path / "out")(x), np.asarray(model(x)), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(load_keras_model(tmp_path / "out" / KERAS_FILE)(x)), np.asarray(model(x)))


def test_write_model_writes_a_run_directorys_pair_side_by_side_and_leaves_no_temporaries(tmp_path):
    model, meta = small_model_and_meta()
    write_model(model, meta, tmp_path / SAVED_MODEL_DIR, tmp_path / KERAS_FILE)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([KERAS_FILE, SAVED_MODEL_DIR])


def test_write_model_without_a_keras_path_writes_the_saved_model_only(tmp_path):
    model, meta = small_model_and_meta()
    write_model(model, meta, tmp_path / "out")
    assert (tmp_path / "out" / "saved_model.pb").is_file() and not (tmp_path / "out" / KERAS_FILE).exists()


# -- recurrent models: sequences [N, T, n] of any length ------------------------------------------


@pytest.fixture(scope="module")
def sequences():
    """Sequences shorter and longer than training's T=10 (and than the cell's unrolled 64 steps)."""
    rng = np.random.default_rng(1)
    return {steps: rng.uniform(1, 2, (8, steps, 10)).astype(np.float32) for steps in (3, 10, 100)}


@pytest.fixture(scope="module")
def trainer_predictions(recurrent_run, sequences):
    """What the trainer's model (the run's model.keras) predicts."""
    model = load_keras_model(recurrent_run / KERAS_FILE)
    return {steps: np.asarray(model(x)) for steps, x in sequences.items()}


PLAIN_TF_SEQUENCES = """
import sys, numpy as np, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
inputs = np.load(sys.argv[2])
np.savez(sys.argv[3], **{name: serve(x=tf.constant(inputs[name]))["y"].numpy() for name in inputs.files})
assert not any(name.startswith("nalu_cli") for name in sys.modules), "nalu_cli was imported"
"""


def test_recurrent_saved_model_runs_in_plain_tensorflow_without_nalu(
    recurrent_exported, sequences, trainer_predictions, tmp_path
):
    np.savez(tmp_path / "x.npz", **{f"T{steps}": x for steps, x in sequences.items()})
    subprocess.run(
        [sys.executable, "-c", PLAIN_TF_SEQUENCES, recurrent_exported, tmp_path / "x.npz", tmp_path / "y.npz"],
        check=True, capture_output=True, cwd=tmp_path,  # not the repo root: nalu_cli is not importable
    )
    outputs = np.load(tmp_path / "y.npz")
    for steps in sequences:
        np.testing.assert_allclose(outputs[f"T{steps}"], trainer_predictions[steps], rtol=1e-6)


def test_recurrent_saved_model_signature_takes_sequences(recurrent_exported):
    predictor = SavedModelPredictor(recurrent_exported)
    assert predictor.recurrent and predictor.input_size == 10
    meta = json.loads((recurrent_exported / META_FILE).read_text())
    assert meta["task"]["kind"] == "recurrent" and meta["task"]["extrapolation_length"] == 50


def test_recurrent_keras_and_onnx_exports_predict_the_same(recurrent_exported, sequences, trainer_predictions):
    model = load_keras_model(recurrent_exported / KERAS_FILE)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(recurrent_exported / "model.onnx"))
    for steps, x in sequences.items():
        np.testing.assert_array_equal(np.asarray(model(x)), trainer_predictions[steps])
        (output,) = session.run(None, {"x": x})
        np.testing.assert_allclose(output, trainer_predictions[steps], rtol=1e-6)


def test_recurrent_export_evaluates_like_its_run(recurrent_exported, recurrent_run):
    args = ("--length", "20", "--samples", "20", "--json")
    from_export = json.loads(invoke("extrapolate", recurrent_exported, *args).stdout)
    from_run = json.loads(invoke("extrapolate", recurrent_run, *args).stdout)
    assert from_export["task"] == from_run["task"] and from_export["ranges"] == from_run["ranges"]
