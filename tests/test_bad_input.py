"""Bad input: one line on stderr naming the problem, exit code 2, no traceback, nothing overwritten."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import invoke

YAML = {
    "malformed.yaml": "task: {op: add\n",
    "unknown_key.yaml": "training: {lerning_rate: 0.1}\n",
    "wrong_type.yaml": "training: {steps: many}\n",
    "unknown_op.yaml": "task: {op: pow}\n",
    "lo_ge_hi.yaml": "task: {interpolation_range: [2, 1]}\n",
    "sqrt_negative.yaml": "task: {op: sqrt, interpolation_range: [-2, -1]}\n",
    "div_zero.yaml": "task: {op: div, extrapolation_range: [-2, 2]}\n",
    "subsets_too_big.yaml": "task: {subsets: [[0, 10], [90, 110]]}\n",
    "ratio_too_big.yaml": "task: {input_size: 4, subset_ratio: 1.0}\n",
    "not_a_mapping.yaml": "- just\n- a list\n",
    "negative_steps.yaml": "training: {steps: -5}\n",
    "hidden_split_negative.yaml": "training: {hidden_split_start: -1}\n",
    "hidden_split_adam.yaml": "training: {optimizer: adam, hidden_split_start: 1000}\n",
    "common_step_negative.yaml": "training: {common_step_scale: -0.5}\n",
    "common_step_adam.yaml": "training: {optimizer: adam, common_step_scale: 0.3}\n",
    "one_layer.yaml": "model: {layers: [nau]}\n",
    "tabs.yaml": "task:\n\top: add\n",
    "bad_range_shape.yaml": "task: {extrapolation_range: [1, 2, 3]}\n",
    "recurrent_length_zero.yaml": "task: {kind: recurrent, length: 0}\n",
    "recurrent_test_length_zero.yaml": "task: {kind: recurrent, extrapolation_length: 0}\n",
    "recurrent_input_4.yaml": "task: {kind: recurrent, input_size: 4}\n",
    "unknown_kind.yaml": "task: {kind: sequential}\n",
    # Targets float32 cannot train on: too large (their squared errors overflow), too small (underflow), always 0.
    "huge.yaml": "task: {op: mul, input_size: 20, interpolation_range: [1.0e+9, 2.0e+9]}\n",
    "recurrent_huge.yaml": "task: {kind: recurrent, op: mul, interpolation_range: [1.0e+6, 2.0e+6]}\n",
    "tiny.yaml": "task: {op: mul, interpolation_range: [1.0e-12, 2.0e-12], extrapolation_range: [2.0e-12, 3.0e-12]}\n",
    "always_zero.yaml": "task: {op: sub, subsets: [[0, 5], [0, 5]]}\n",
}

CASES = [
    # (args, words the message must contain)
    (["train", "--op", "pow"], "'pow' is not one of"),
    (["train", "--steps", "ten"], "Invalid value for '--steps'"),
    (["train", "--lr", "-1"], "training.learning_rate"),
    (["train", "--config", "{tmp}/missing.yaml"], "config file not found"),
    (["train", "--config", "{tmp}"], "not a file"),
    (["train", "--config", "{tmp}/malformed.yaml"], "malformed YAML"),
    (["train", "--config", "{tmp}/unknown_key.yaml"], "unknown config key 'training.lerning_rate'"),
    (["train", "--config", "{tmp}/wrong_type.yaml"], "'training.steps' must be an integer"),
    (["train", "--config", "{tmp}/unknown_op.yaml"], "unknown op 'pow'"),
    (["train", "--config", "{tmp}/lo_ge_hi.yaml"], "lo must be below hi"),
    (["train", "--config", "{tmp}/sqrt_negative.yaml"], "'sqrt' needs non-negative inputs"),
    (["train", "--config", "{tmp}/div_zero.yaml"], "contains 0"),
    (["train", "--config", "{tmp}/subsets_too_big.yaml"], "does not fit input_size=100"),
    (["train", "--config", "{tmp}/ratio_too_big.yaml"], "do not fit task.input_size=4"),
    (["train", "--config", "{tmp}/not_a_mapping.yaml"], "must hold a mapping"),
    (["train", "--config", "{tmp}/negative_steps.yaml"], "'training.steps' must be positive"),
    (["train", "--config", "{tmp}/hidden_split_negative.yaml"], "'training.hidden_split_start' must be a step >= 0"),
    (["train", "--config", "{tmp}/hidden_split_adam.yaml"], "needs training.optimizer split-adam, got 'adam'"),
    (["train", "--config", "{tmp}/common_step_negative.yaml"], "'training.common_step_scale' must be a number >= 0"),
    (["train", "--config", "{tmp}/common_step_adam.yaml"], "scales split-adam's common-mode step; it needs"),
    (["train", "--op", "add", "--steps", "10", "--out", "{tmp}/precious"], "already exists"),
    (["train", "--op", "add", "--steps", "10", "--out", "{tmp}/precious", "--overwrite"], "not a nalu run"),
    (["eval", "{tmp}/missing"], "no such file or directory"),
    (["eval", "{tmp}/precious"], "neither a nalu run directory nor a SavedModel"),
    (["eval", "{tmp}/malformed.yaml"], "is not a directory"),
    (["extrapolate", "{tmp}/precious"], "neither a nalu run directory nor a SavedModel"),
    (["export", "{tmp}/missing", "--out", "{tmp}/new"], "no such file or directory"),
    (["train", "--config", "{tmp}/one_layer.yaml"], "'model.layers' must name two units"),
    (["train", "--config", "{tmp}/tabs.yaml"], "malformed YAML"),
    (["train", "--config", "{tmp}/bad_range_shape.yaml"], "task.extrapolation_range"),
    (["train", "--unit", "nau-nmu-nac"], "must be UNIT or FIRST-SECOND"),
    (["train", "--config", "{tmp}/recurrent_length_zero.yaml"], "'task.length' must be positive"),
    (["train", "--config", "{tmp}/recurrent_test_length_zero.yaml"], "'task.extrapolation_length' must be positive"),
    (["train", "--config", "{tmp}/recurrent_input_4.yaml"], "input_size=4 is too small for the recurrent task"),
    (["train", "--config", "{tmp}/unknown_kind.yaml"], "unknown task kind 'sequential'"),
    (["train", "--task", "sequential"], "'sequential' is not one of"),
    (["train", "--unit", "lstm"], "needs task.kind recurrent (--task recurrent)"),
    (["train", "--task", "recurrent", "--unit", "nau-lstm"], "cannot be the output layer"),
    (["benchmark", "--task", "static", "--units", "gru", "--out", "{tmp}/bench"], "needs task.kind recurrent"),
    (["train", "--resume", "{tmp}/precious"], "not a nalu run directory"),
    (["train", "--resume", "{tmp}/missing"], "not a nalu run directory"),
    (["predict", "{tmp}/precious", "{tmp}/malformed.yaml"], "neither a nalu run directory nor a SavedModel"),
    (["benchmark", "--ops", "add", "--workers", "0", "--out", "{tmp}/bench"], "--workers must be at least 1"),
    (["benchmark", "--ops", "add", "--replicas", "0", "--out", "{tmp}/bench"], "--replicas must be at least 1"),
    (["benchmark", "--ops", "add", "--seeds", "2", "--out", "{tmp}/precious"], "not a nalu benchmark directory"),
    # Keras seeds are 32-bit: a larger one used to crash inside Keras after the run directory existed.
    (["train", "--op", "add", "--seed", str(2**32), "--out", "{tmp}/big_seed"], "'seed' must be in [0, 2^32)"),
    (["benchmark", "--ops", "add", "--seeds", "0:5000000000", "--out", "{tmp}/bench"], "seeds in [0, 2^32)"),
    (["benchmark", "--ops", "add", "--seeds", "1000000000", "--out", "{tmp}/bench"], "at most 100,000 at a time"),
    # Values float32 cannot hold, known from the config: said before any work, nothing written.
    (["train", "--config", "{tmp}/huge.yaml"], "gives targets up to 1e+20: 10,000 squared errors that large overflow"),
    (["train", "--config", "{tmp}/recurrent_huge.yaml"], "1,000 steps) gives targets up to"),
    (["train", "--config", "{tmp}/tiny.yaml"], "their squared errors underflow float32"),
    (["train", "--config", "{tmp}/always_zero.yaml"], "gives targets that are always 0"),
    (["benchmark", "--config", "{tmp}/huge.yaml", "--ops", "mul", "--seeds", "2", "--out", "{tmp}/bench"],
     "overflow float32"),
    # Paths that are, or hold, the current directory.
    (["train", "--op", "add", "--out", ".", "--overwrite"], "holds the current directory; refusing to replace it"),
    (["benchmark", "--ops", "add", "--seeds", "1", "--out", "."], "is not a nalu benchmark directory"),
]


def snapshot(root):
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def workspace(tmp_path):
    for name, text in YAML.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("four years of work")
    return tmp_path


def check_one_line_error(result, expected):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nalu: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("args, expected", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(workspace, args, expected):
    before = snapshot(workspace)
    result = invoke(*[arg.format(tmp=workspace) for arg in args])
    check_one_line_error(result, expected)
    assert snapshot(workspace) == before


@pytest.mark.parametrize(
    "args, expected",
    [
        (["extrapolate", "{run}", "--range", "a:b"], "--range must be LO:HI"),
        (["extrapolate", "{run}", "--range", "5:1"], "lo must be below hi"),
        (["export", "{run}", "--out", "{tmp}/x", "--format", "pdf"], "unknown export format 'pdf'"),
        (["export", "{run}/saved_model", "--out", "{tmp}/x", "--format", "keras"], "needs a run directory"),
        (["train", "--resume", "{run}", "--op", "mul"], "--resume continues a run as it was configured"),
        (["predict", "{run}", "{tmp}/missing.csv"], "no such input file"),
        (["predict", "{run}", "{tmp}/narrow.csv"], "expects inputs of shape [N, 100], got [2, 3]"),
        (["predict", "{run}", "{tmp}/nan.csv"], "row 1 holds NaN or inf"),
        (["predict", "{run}", "{tmp}/inf.npy"], "row 0 holds NaN or inf"),
        (["predict", "{run}", "{tmp}/words.csv"], "cannot read inputs"),
        (["predict", "{run}", "{tmp}"], "input path is not a file"),
        (["predict", "{run}", "{tmp}/empty.npy"], "cannot read inputs from"),
        (["predict", "{run}", "{tmp}/empty.csv"], "holds no inputs"),
        (["predict", "{run}", "{tmp}/no_rows.npy"], "holds no inputs"),
        # An output that is, holds or lies inside the model it is made from.
        (["export", "{run}", "--out", "{run}", "--overwrite"], "the model it is made from; choose another"),
        (["export", "{run}/saved_model", "--out", "{run}/saved_model", "--overwrite"], "the model it is made from"),
        (["export", "{run}", "--out", "{run}/saved_model", "--overwrite"], "lies inside"),
        (["export", "{run}/saved_model", "--out", "{run}", "--overwrite"], "holds"),
        (["inspect", "{run}", "--snap", "--out", "{run}/saved_model", "--overwrite"], "lies inside"),
        # Ranges whose targets float32 cannot hold.
        (["extrapolate", "{run}", "--range", "1e37:2e37"], "gives targets up to 1e+39, beyond float32"),
        (["extrapolate", "{run}", "--range", "0:1e-45"], "which float32 rounds to 0"),
    ],
)
def test_bad_input_against_a_real_run(add_run, tmp_path, args, expected):
    np.savetxt(tmp_path / "narrow.csv", np.ones((2, 3)), delimiter=",")
    rows = np.ones((2, 100))
    rows[1, 5] = np.nan
    np.savetxt(tmp_path / "nan.csv", rows, delimiter=",")
    np.save(tmp_path / "inf.npy", np.full((1, 100), np.inf))
    (tmp_path / "words.csv").write_text("one,two,three\n")
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.csv").write_text("")
    np.save(tmp_path / "no_rows.npy", np.zeros((0, 100), np.float32))
    before = snapshot(add_run)
    result = invoke(*[arg.format(run=add_run, tmp=tmp_path) for arg in args])
    check_one_line_error(result, expected)
    assert snapshot(add_run) == before
    assert not (tmp_path / "x").exists()


def test_real_process_prints_one_line_and_exits_2(workspace):
    completed = subprocess.run(
        [sys.executable, "-m", "nalu_cli", "train", "--config", str(workspace / "unknown_key.yaml")],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == "nalu: error: unknown config key 'training.lerning_rate'"


def test_truncated_saved_model_is_one_line(add_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(add_run / "saved_model", broken)
    pb = broken / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:100])
    result = invoke("eval", broken)
    check_one_line_error(result, "cannot load SavedModel")


def test_corrupted_keras_file_is_one_line(add_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(add_run, run)
    (run / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    result = invoke("export", run, "--out", tmp_path / "x", "--format", "keras")
    check_one_line_error(result, "cannot load Keras model")
    assert not (tmp_path / "x").exists()


def test_division_saved_model_refuses_a_range_through_zero(add_run, tmp_path):
    """The domain check follows the SavedModel's own task: a/b is undefined where the sums can be 0."""
    division = tmp_path / "div_model"
    shutil.copytree(add_run / "saved_model", division)
    meta_path = division / "assets.extra" / "nalu.json"
    meta = json.loads(meta_path.read_text())
    meta["task"]["op"] = "div"
    meta_path.write_text(json.dumps(meta))
    result = invoke("extrapolate", division, "--range=-1:1")
    check_one_line_error(result, "op 'div' needs inputs of one sign")



# -- the recurrent task ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["extrapolate", "{run}", "--length", "-5"], "--length takes positive integers"),
        (["extrapolate", "{run}", "--length", "0"], "--length takes positive integers"),
        (["extrapolate", "{run}", "--length", "1.5"], "got '1.5'"),
        (["extrapolate", "{run}", "--length", "10,,100"], "--length takes positive integers"),
        (["extrapolate", "{run}", "--length", "1000000"], "longer than 100,000 steps"),
        (["extrapolate", "{run}", "--samples", "0"], "--samples must be at least 1"),
        (["predict", "{run}", "{tmp}/rows.csv"],
         "a recurrent model reads sequences: give a .npy file of shape [N, T, 10]"),
        (["predict", "{run}", "{tmp}/rows.npy"], "expects inputs of shape [N, T, 10] (sequences), got [2, 10]"),
        (["predict", "{run}", "{tmp}/narrow.npy"], "expects inputs of shape [N, T, 10] (sequences), got [2, 5, 4]"),
        (["export", "{run}", "--out", "{tmp}/x", "--format", "tflite"], "tflite cannot hold a recurrent model"),
    ],
)
def test_bad_input_against_a_recurrent_run(recurrent_run, tmp_path, args, expected):
    np.savetxt(tmp_path / "rows.csv", np.ones((2, 10)), delimiter=",")
    np.save(tmp_path / "rows.npy", np.ones((2, 10), np.float32))
    np.save(tmp_path / "narrow.npy", np.ones((2, 5, 4), np.float32))
    before = snapshot(recurrent_run)
    result = invoke(*[arg.format(run=recurrent_run, tmp=tmp_path) for arg in args])
    check_one_line_error(result, expected)
    assert snapshot(recurrent_run) == before
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def static_model(tmp_path_factory):
    """A small untrained static SavedModel (no training: --length and sequences are refused before use)."""
    from nalu_cli.config import ModelConfig
    from nalu_cli.export import make_meta, write_model
    from nalu_cli.model import build_model

    task = {"op": "mul", "input_size": 10, "subsets": [[0, 3], [2, 5]], "interpolation_range": [[1.0, 2.0]],
            "extrapolation_range": [[2.0, 6.0]], "seed": 0}
    path = tmp_path_factory.mktemp("static") / "model"
    write_model(build_model(ModelConfig(layers=["nau", "nmu"]), 10, seed=0), make_meta(task, {"unit": "nau-nmu"}), path)
    return path


@pytest.mark.parametrize(
    "args, expected",
    [
        (["extrapolate", "{model}", "--length", "10,100"], "--length is for recurrent models"),
        (["predict", "{model}", "{tmp}/sequences.npy"], "a static model reads one sample per row, shape [N, 10]; "
                                                        "got sequences of shape [2, 7, 10]"),
    ],
)
def test_sequences_to_a_static_model_are_one_line(static_model, tmp_path, args, expected):
    np.save(tmp_path / "sequences.npy", np.ones((2, 7, 10), np.float32))
    result = invoke(*[arg.format(model=static_model, tmp=tmp_path) for arg in args])
    check_one_line_error(result, expected)
