"""Every file nalu reads back, cut short at several offsets: nalu recovers (a torn last line dropped and
the file written again whole) or says in one line which file is damaged and what to do, exit code 2.

The runs are copies of the session's runs (tests/conftest.py); most cases need no training.
"""

import json
import shutil

import pytest

from nalu_cli import benchmark
from nalu_cli.rundir import read_run_config
from tests.conftest import GRID, fake_runner, invoke

# Where a file is cut: nothing left, one byte, half, all but its last byte.
OFFSETS = {"empty": lambda n: 0, "one byte": lambda n: 1, "half": lambda n: n // 2, "last byte - 1": lambda n: n - 1}


def cut(path, offset: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: OFFSETS[offset](len(data))])


def one_error(result, *words):
    """Exit 2, exactly one error line holding `words`, no traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("nalu: error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert str(word) in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def plot_out(tmp_path):
    return tmp_path / "curves.png"


# -- files that damage a run: one line, the file named, what to do -------------------------------------

DAMAGE = [
    # (file in the run, command, words of the one error line); {run}: the run, {png}: a picture path
    ("checkpoint/state.npz", ["train", "--resume", "{run}"], ["checkpoint {run}/checkpoint is unreadable", "--overwrite"]),
    ("checkpoint/state.json", ["train", "--resume", "{run}"], ["checkpoint {run}/checkpoint is unreadable", "--overwrite"]),
    ("summary.json", ["plot", "{run}", "--out", "{png}"],
     ["{run}/summary.json is damaged", "`nalu train --resume {run}` writes it again"]),
    ("saved_model/assets.extra/nalu.json", ["eval", "{run}"],
     ["task spec {run}/saved_model/assets.extra/nalu.json is damaged", "`nalu train --resume {run}` writes it again"]),
    ("model.keras", ["inspect", "{run}"],
     ["cannot load Keras model {run}/model.keras", "`nalu train --resume {run}` writes it again"]),
]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("name, command, words", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_run_file_is_one_line_naming_it(add_copy, plot_out, name, command, words, offset):
    cut(add_copy / name, offset)
    damaged = (add_copy / name).read_bytes()
    result = invoke(*[arg.format(run=add_copy, png=plot_out) for arg in command])
    if name == "summary.json" and offset == "last byte - 1":  # only its final newline gone: still whole
        assert result.exit_code == 0 and plot_out.is_file(), result.stderr
        return
    one_error(result, *[word.format(run=add_copy) for word in words])
    assert (add_copy / name).read_bytes() == damaged and not plot_out.exists()


@pytest.mark.parametrize("offset", ["empty", "one byte", "half"])
def test_a_metrics_file_that_lost_lines_is_one_line_and_left_as_it_is(add_copy, offset):
    metrics = add_copy / "metrics.jsonl"
    step = json.loads((add_copy / "checkpoint" / "state.json").read_text())["step"]
    cut(metrics, offset)
    damaged = metrics.read_bytes()
    result = invoke("train", "--resume", add_copy)
    one_error(result, add_copy / "metrics.jsonl", f"the run's checkpoint is at step {step:,}: lines were lost", "--overwrite")
    assert metrics.read_bytes() == damaged


@pytest.mark.parametrize("offset", OFFSETS)
def test_a_config_cut_short_is_read_from_the_checkpoint(add_copy, add_run, offset):
    cut(add_copy / "config.yaml", offset)
    assert read_run_config(add_copy) == read_run_config(add_run)


@pytest.mark.parametrize("offset", OFFSETS)
def test_plot_draws_the_entries_before_a_torn_last_line(add_copy, plot_out, offset):
    """A run being written (or killed) may end in half a line: plot leaves it out, or says there is nothing."""
    cut(add_copy / "metrics.jsonl", offset)
    result = invoke("plot", add_copy, "--out", plot_out)
    entries = (add_copy / "metrics.jsonl").read_text().count("\n")
    if entries:
        assert result.exit_code == 0 and plot_out.is_file(), result.stderr
    else:
        one_error(result, f"run {add_copy} has no metrics yet")


def test_resume_writes_a_cut_config_metrics_and_summary_whole_again(add_copy, add_run):
    """One resume of a finished run repairs all three: config.yaml from the checkpoint, metrics.jsonl
    without its torn tail, summary.json from the checkpoint."""
    cut(add_copy / "config.yaml", "half")
    cut(add_copy / "metrics.jsonl", "last byte - 1")  # the last line loses its newline
    cut(add_copy / "summary.json", "half")
    result = invoke("train", "--resume", add_copy)
    assert result.exit_code == 0, result.stderr
    for name in ("config.yaml", "metrics.jsonl"):
        assert (add_copy / name).read_bytes() == (add_run / name).read_bytes(), name
    timing = ("train_seconds", "wall_seconds", "steps_per_second", "polish_seconds")
    summary, whole = (json.loads((run / "summary.json").read_text()) for run in (add_copy, add_run))
    assert {k: v for k, v in summary.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}


@pytest.mark.parametrize("offset", OFFSETS)
def test_a_saved_models_task_spec_cut_short_is_one_line(add_run, tmp_path, offset):
    model = shutil.copytree(add_run / "saved_model", tmp_path / "model")  # a SavedModel on its own, as exported
    cut(model / "assets.extra" / "nalu.json", offset)
    one_error(invoke("eval", model), f"task spec {model}/assets.extra/nalu.json is damaged", "export the model again")


# -- a benchmark's results.jsonl and settings.json -----------------------------------------------------

@pytest.fixture
def fake_benchmark(tmp_path, monkeypatch):
    monkeypatch.setitem(benchmark.RUNNERS, "local", fake_runner)
    out = tmp_path / "bench"
    whole = benchmark.run_benchmark(out=out, **GRID)
    return out, whole


@pytest.mark.parametrize("offset", OFFSETS)
def test_a_cut_results_file_keeps_its_whole_lines_and_trains_the_rest_again(fake_benchmark, offset):
    out, whole = fake_benchmark
    results = out / "results.jsonl"
    lines = results.read_text().splitlines()
    cut(results, offset)
    kept = [line for line in results.read_text().split("\n")[:-1]]  # lines that still end in a newline
    trained = []
    again = benchmark.run_benchmark(out=out, on_results=trained.append, **GRID)
    assert again == whole
    text = results.read_text()
    assert text.endswith("\n") or offset == "last byte - 1"  # nothing appended: nothing to repair
    assert text.splitlines()[: len(kept)] == kept  # whole lines untouched, the torn one gone
    assert sorted(text.splitlines()) == sorted(lines)  # and each seed once again


@pytest.mark.parametrize("offset", OFFSETS)
def test_a_cut_settings_file_is_written_again_from_the_results(fake_benchmark, offset):
    out, whole = fake_benchmark
    settings = (out / "settings.json").read_bytes()
    cut(out / "settings.json", offset)
    assert benchmark.run_benchmark(out=out, **GRID) == whole
    if offset == "last byte - 1":  # only its final newline gone: still whole, left as it is
        assert json.loads((out / "settings.json").read_bytes()) == json.loads(settings)
    else:
        assert (out / "settings.json").read_bytes() == settings


def test_a_damaged_results_line_before_the_last_is_one_line(fake_benchmark):
    out, _ = fake_benchmark
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join([lines[0], lines[1][:20], *lines[2:]]) + "\n")
    result = invoke("benchmark", "--ops", "add", "--units", "nac", "--seeds", "4", "--replicas", "2", "--out", out)
    one_error(result, f"{out}/results.jsonl line 2 is not a result", "restore the file")
