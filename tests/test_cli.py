"""The end-to-end flow through the CLI: train -> eval -> extrapolate, on a short a+b run."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import invoke


def test_add_run_reaches_the_success_criterion(add_run):
    summary = json.loads((add_run / "summary.json").read_text())
    assert summary["success"] is True
    assert summary["stop_reason"] == "success"  # early stop once the selected checkpoint succeeds
    assert summary["extrapolation_mse"] < summary["success_threshold"]
    assert summary["solved_at_step"] <= summary["steps_trained"] < 60_000
    # Snapped-weight selection handed out the exact solution: far below the threshold.
    assert summary["selected_snapped"] is True and summary["extrapolation_mse"] < 1e-8


def test_run_directory_holds_every_artifact(add_run):
    for name in ("config.yaml", "metrics.jsonl", "model.keras", "summary.json", "saved_model/saved_model.pb"):
        assert (add_run / name).exists(), name
    assert any((add_run / "tensorboard").iterdir())
    config = yaml.safe_load((add_run / "config.yaml").read_text())
    assert config["task"]["op"] == "add" and config["model"]["unit"] == "nac"
    assert config["training"]["learning_rate"] == 0.1


def test_metrics_has_one_line_per_evaluation_and_selection_uses_interpolation(add_run):
    lines = [json.loads(line) for line in (add_run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((add_run / "summary.json").read_text())
    assert [entry["step"] for entry in lines] == list(range(0, summary["steps_trained"] + 1, 1000))
    # Candidates: the weights at each evaluation, and the same weights snapped to exact values.
    candidates = [(e["interpolation_mse"], e["step"]) for e in lines]
    candidates += [(e["snapped_interpolation_mse"], e["step"]) for e in lines if "snapped_interpolation_mse" in e]
    best_mse, best_step = min(candidates)
    assert summary["selected_step"] == best_step
    assert summary["interpolation_mse"] == best_mse


def test_eval_json_reports_the_literature_criteria(add_run):
    result = invoke("eval", add_run, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"]["op"] == "add" and report["task"]["input_size"] == 100
    assert report["task"]["interpolation_range"] == [[1.0, 2.0]]
    assert report["task"]["extrapolation_range"] == [[2.0, 6.0]]
    assert len(report["task"]["subsets"]) == 2
    extrapolation = report["extrapolation"]
    assert 1.2e-5 < extrapolation["threshold"] < 2e-5  # simulated for a+b on U[2,6]
    assert extrapolation["mse"] < extrapolation["threshold"] and report["success"] is True
    assert 0 <= extrapolation["normalized_error"] < 0.01  # random model = 100
    assert report["interpolation"]["mse"] is not None


def test_eval_table_says_success(add_run):
    result = invoke("eval", add_run)
    assert result.exit_code == 0
    assert "SUCCESS" in result.stdout and "extrapolation" in result.stdout


def test_eval_agrees_with_the_training_summary(add_run):
    report = json.loads(invoke("eval", add_run, "--json").stdout)
    summary = json.loads((add_run / "summary.json").read_text())
    assert abs(report["extrapolation"]["mse"] - summary["extrapolation_mse"]) <= 1e-3 * summary["extrapolation_mse"]


def test_extrapolate_bare_saved_model_grows_ranges_away_from_training(add_run):
    result = invoke("extrapolate", add_run / "saved_model", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["ranges"]
    assert [row["range"] for row in rows] == [[[2, 6]], [[20, 60]], [[200, 600]], [[2000, 6000]]]
    # A solved a+b is a linear map: its relative error stays small however far it goes.
    assert all(row["relative_error"] < 1e-4 for row in rows)


def test_extrapolate_custom_ranges(add_run):
    result = invoke("extrapolate", add_run, "--range", "1:2", "--range=-6:-2", "--json")
    assert result.exit_code == 0, result.stderr
    assert [row["range"] for row in json.loads(result.stdout)["ranges"]] == [[[1, 2]], [[-6, -2]]]


def test_second_train_into_same_out_is_refused_and_keeps_the_run(add_run):
    before = (add_run / "summary.json").read_bytes()
    result = invoke("train", "--op", "add", "--steps", "10", "--out", add_run)
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert (add_run / "summary.json").read_bytes() == before


def test_config_file_with_flag_overrides(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("task: {op: sub, input_size: 20}\ntraining: {steps: 5000, eval_every: 500}\nseed: 3\n")
    result = invoke("train", "--config", config, "--steps", "1000", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["task"]["op"] == "sub" and saved["task"]["input_size"] == 20
    assert saved["training"]["steps"] == 1000 and saved["seed"] == 3


def test_help_does_not_import_tensorflow_and_is_fast():
    code = "import sys; from nalu_cli.cli import app; sys.argv=['nalu','--help'];\ntry: app()\nexcept SystemExit: pass\nassert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert "train" in completed.stdout and "export" in completed.stdout


def test_python_dash_m_runs_the_cli():
    completed = subprocess.run([sys.executable, "-m", "nalu_cli", "--version"], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.startswith("nalu ")


def test_config_numbers_with_an_exponent_and_no_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads `1e-3` as a string; a nalu config reads it as the number."""
    from nalu_cli.config import load_yaml, resolve

    path = tmp_path / "c.yaml"
    path.write_text("training: {learning_rate: 1e-3, steps: 20000}\ntask: {op: add, extrapolation_range: [2E0, 6e+0]}\n"
                    "model: {layers: [nau, nmu]}\nseed: 7\n")
    settings = load_yaml(path)
    assert settings["training"] == {"learning_rate": 0.001, "steps": 20000}  # a float and an int, as written
    assert settings["task"] == {"op": "add", "extrapolation_range": [2.0, 6.0]}
    assert settings["model"] == {"layers": ["nau", "nmu"]} and settings["seed"] == 7  # words and ints unchanged
    assert resolve(settings).training.learning_rate == 0.001


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), ("0", False), ("false", False),
                                             ("", False), ("off", False)])
def test_nalu_debug_0_means_off(monkeypatch, value, expected):
    from nalu_cli.errors import debugging

    monkeypatch.setenv("NALU_DEBUG", value)
    assert debugging() is expected


def test_json_reports_are_strict_json_even_where_a_figure_overflows(tmp_path):
    """An NMU's random baseline overflows float32 on the extrapolation range (a product of 100
    inputs up to 6): `eval --json` says null, never the non-JSON Infinity; `predict --json` too."""
    from nalu_cli import export
    from nalu_cli.config import resolve
    from nalu_cli.model import build_model
    from nalu_cli.tasks import TaskSpec

    config = resolve({"task": {"op": "mul"}, "model": {"unit": "nmu"}})
    spec = TaskSpec.from_config(config.task, seed=0)
    model = build_model(config.model, spec.input_size, seed=0)
    path = tmp_path / "nmu"
    export.write_model(model, export.make_meta(spec.to_dict(), config.to_dict()["model"]), path)

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))

    result = invoke("eval", path, "--json")
    assert result.exit_code == 0, result.stderr
    assert strict(result.stdout)["extrapolation"]["random_baseline_mse"] is None

    np.save(tmp_path / "x.npy", np.full((2, 100), 1e30, np.float32))
    result = invoke("predict", path, tmp_path / "x.npy", "--json")
    assert result.exit_code == 0, result.stderr
    assert strict(result.stdout) == [None, None]
    assert "2 of 2 predictions overflow float32 (printed as null)" in result.stderr
