"""Exports load with their own runtimes and predict what the run predicts."""

import json
import subprocess
import sys

import numpy as np
import pytest

from nalu_cli.export import SavedModelPredictor
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


def test_tflite_export_predicts_the_same(exported, inputs, reference):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(exported / "model.tflite"))
    input_detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], inputs.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], inputs)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(output, reference, rtol=1e-5)


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
