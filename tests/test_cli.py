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


def test_tensorflow_imports_without_matplotlib_and_plots_still_draw():
    # Keras imports matplotlib.pyplot with TensorFlow when it is installed (31 MiB of every process);
    # nalu's import leaves it out, and a --plot afterwards still gets pyplot. Needs the plot extra.
    code = ("import sys\nfrom nalu_cli._tf import import_tensorflow\nimport_tensorflow()\n"
            "assert 'matplotlib' not in sys.modules, 'imported'\n"
            "from nalu_cli.plots import require_matplotlib\nprint(require_matplotlib().__name__)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "matplotlib.pyplot"


def test_python_dash_m_runs_the_cli():
    completed = subprocess.run([sys.executable, "-m", "nalu_cli", "--version"], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.startswith("nalu ")


def test_config_numbers_with_an_exponent_and_no_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads `1e-3` as a string; a nalu config reads it as the number."""
    from nalu_cli.config import resolve
    from nalu_cli.config_files import load_yaml

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


# -- the recurrent task ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recurrent_eval(recurrent_run):
    result = invoke("eval", recurrent_run, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_task_flag_trains_a_recurrent_run(recurrent_run):
    config = yaml.safe_load((recurrent_run / "config.yaml").read_text())
    assert config["task"]["kind"] == "recurrent" and config["task"]["op"] == "add"
    assert config["task"]["input_size"] == 10 and config["task"]["length"] == 10
    assert config["task"]["extrapolation_length"] == 50  # from the --config the flag combines with
    assert json.loads((recurrent_run / "summary.json").read_text())["steps_trained"] == 250


def test_default_run_directory_names_the_recurrent_kind():
    from nalu_cli.cli.train import default_run_dir
    from nalu_cli.config import resolve

    assert str(default_run_dir(resolve({"task": {"op": "mul"}, "model": {"unit": "nau"}}))) == "runs/mul-nau-seed0"
    recurrent = resolve({"task": {"op": "mul", "kind": "recurrent"}, "model": {"unit": "nau"}})
    assert str(default_run_dir(recurrent)) == "runs/recurrent-mul-nau-seed0"


def test_benchmark_task_reaches_every_cell():
    from nalu_cli.benchmark import make_cells

    cells = make_cells(["add", "mul"], ["nau", "lstm"], {"task": {"length": 5}}, steps=10, kind="recurrent")
    assert [c.config["task"]["kind"] for c in cells] == ["recurrent"] * 4
    assert all(c.config["task"]["length"] == 5 for c in cells)
    (from_settings,) = make_cells(["add"], ["nau"], {"task": {"kind": "recurrent"}}, steps=10)
    assert from_settings.config["task"]["kind"] == "recurrent"


def test_recurrent_eval_reports_each_splits_length(recurrent_eval, recurrent_run):
    from nalu_cli import tasks, thresholds

    report = recurrent_eval
    spec = tasks.TaskSpec.from_dict(report["task"])
    assert report["interpolation"]["length"] == 10 and report["extrapolation"]["length"] == 50
    assert report["interpolation"]["threshold"] == thresholds.success_threshold(spec, spec.interpolation_range, length=10)
    assert report["extrapolation"]["threshold"] == thresholds.success_threshold(spec, length=50)
    assert report["extrapolation"]["normalized_error"] is not None  # the random baseline ran recurrent models
    summary = json.loads((recurrent_run / "summary.json").read_text())
    assert report["extrapolation"]["mse"] == pytest.approx(summary["extrapolation_mse"], rel=1e-3)


def test_recurrent_eval_table_shows_the_lengths(recurrent_run):
    result = invoke("eval", recurrent_run)
    assert result.exit_code == 0, result.stderr
    assert "T=10" in result.stdout and "T=50" in result.stdout


def test_extrapolate_length_gives_one_row_per_length(recurrent_run, recurrent_eval, tmp_path):
    from nalu_cli import tasks, thresholds

    result = invoke("extrapolate", recurrent_run, "--length", "10,100", "--length", "30", "--samples", "40",
                    "--json", "--plot", tmp_path / "lengths.png")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    rows = report["ranges"]
    spec = tasks.TaskSpec.from_dict(report["task"])
    assert [row["length"] for row in rows] == [10, 100, 30]
    assert all(row["range"] == [[1.0, 2.0]] for row in rows)  # the recurrent extrapolation range: the training one
    for row in rows:
        assert row["threshold"] == thresholds.success_threshold(spec, spec.extrapolation_range, samples=100_000, length=row["length"])
        assert row["success"] == (row["mse"] < row["threshold"])
    assert (tmp_path / "lengths.png").stat().st_size > 0
    # Every length draws from its own stream: the same row whichever lengths come with it.
    alone = json.loads(invoke("extrapolate", recurrent_run, "--length", "100", "--samples", "40", "--json").stdout)
    assert alone["ranges"][0] == rows[1]
    # At the training length the error is the interpolation error's size (other samples, same distribution).
    assert rows[0]["mse"] == pytest.approx(recurrent_eval["interpolation"]["mse"], rel=0.5)


def test_extrapolate_range_on_a_recurrent_model_uses_the_test_length(recurrent_run):
    result = invoke("extrapolate", recurrent_run, "--range", "2:3", "--samples", "10", "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)["ranges"]
    assert row["range"] == [[2.0, 3.0]] and row["length"] == 50
    result = invoke("extrapolate", recurrent_run, "--range", "2:3", "--length", "5", "--samples", "10")
    assert result.exit_code == 0, result.stderr
    assert "T=5" in result.stdout and "U[2, 3]" in result.stdout


def test_predict_reads_npy_sequences_of_any_length(recurrent_run, tmp_path):
    from nalu_cli.export import SavedModelPredictor

    predictor = SavedModelPredictor(recurrent_run / "saved_model")
    for steps in (3, 40):
        x = np.random.default_rng(steps).uniform(1, 2, (4, steps, 10)).astype(np.float32)
        np.save(tmp_path / "x.npy", x)
        result = invoke("predict", recurrent_run, tmp_path / "x.npy", "--json")
        assert result.exit_code == 0, result.stderr
        np.testing.assert_array_equal(np.array(json.loads(result.stdout), np.float32), predictor(x)[:, 0])


def test_eval_of_a_recurrent_only_cell_builds_its_baseline_as_recurrent(tmp_path):
    """An LSTM exists only as a cell: the random baseline must resolve it with the task's kind."""
    from nalu_cli import export
    from nalu_cli.config import resolve
    from nalu_cli.model import build_model
    from nalu_cli.tasks import TaskSpec

    config = resolve({"task": {"kind": "recurrent", "op": "add", "validation_size": 50, "test_size": 10,
                               "extrapolation_length": 20}, "model": {"unit": "lstm"}})
    spec = TaskSpec.from_config(config.task, seed=0)
    model = build_model(config.model, spec.input_size, seed=0, kind="recurrent")
    export.write_model(model, export.make_meta(spec.to_dict(), config.to_dict()["model"]), tmp_path / "lstm")
    result = invoke("eval", tmp_path / "lstm", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["extrapolation"]["length"] == 20 and report["extrapolation"]["normalized_error"] is not None
