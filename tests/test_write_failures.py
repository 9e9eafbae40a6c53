"""Outputs that cannot be written: a read-only place or a full disk is one line on stderr and exit 2,
before any work where that can be known; mid-run, the run keeps its last checkpoint and resumes, once
the cause is gone, to what an uninterrupted run gives."""

import contextlib
import hashlib
import json
import resource
import shutil
import subprocess
import sys

import pytest

from nalu_cli.errors import NaluError
from tests.conftest import (
    GRID,
    QUICK_CONFIG,
    assert_same_weights,
    fake_runner,
    invoke,
    metrics_without_timing,
)


def writable(directory) -> bool:
    probe = directory / ".probe"
    try:
        probe.write_text("x")
        probe.unlink()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def read_only(directory):
    """`directory` made unwritable for this process: chmod 555 where that denies it, else (root, whom
    permission bits do not stop) the immutable attribute; skipped where neither works."""
    directory.chmod(0o555)
    immutable = False
    if writable(directory):
        directory.chmod(0o755)
        immutable = bool(shutil.which("chattr")) and subprocess.run(
            ["chattr", "+i", str(directory)], capture_output=True).returncode == 0
        if not immutable or writable(directory):
            if immutable:
                subprocess.run(["chattr", "-i", str(directory)], check=True)
            pytest.skip("cannot make a directory read-only here (root, and no immutable attribute)")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


def snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def error_lines(result) -> list[str]:
    """The error lines (the progress bar also writes to stderr); no traceback anywhere."""
    assert "Traceback" not in result.stdout + result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("nalu: error:")]


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--op", "add", "--steps", "10", "--out", "{ro}/new"],
        ["train", "--op", "add", "--steps", "10", "--out", "{ro}/not/yet/made"],
        ["export", "{run}", "--out", "{ro}/exported"],
        ["inspect", "{run}", "--snap", "--out", "{ro}/snapped"],
        ["plot", "{run}", "--out", "{ro}/curves.png"],
        ["extrapolate", "{run}", "--plot", "{ro}/error.png"],
        ["benchmark", "--ops", "add", "--seeds", "1", "--out", "{ro}/bench"],
        ["benchmark", "--ops", "add", "--seeds", "1", "--out", "bench", "--plot", "{ro}/success.png"],
        ["train", "--resume", "{ro}/run"],
        ["plot", "{ro}/run"],  # the picture goes inside the run
    ],
    ids=lambda args: " ".join(args[:2]) + (" (default out)" if args[0] == "plot" and len(args) == 2 else "")
    + (" --plot" if args[0] == "benchmark" and "--plot" in args else ""),
)
def test_an_output_in_a_read_only_place_is_refused_before_any_work(add_run, tmp_path, args):
    place = tmp_path / "place"
    shutil.copytree(add_run, place / "run")  # for the commands that write inside a run
    before = snapshot(place)
    with read_only(place / "run" if "{ro}/run" in args else place):
        result = invoke(*[arg.format(run=add_run, ro=place) for arg in args])
    errors = error_lines(result)
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert "cannot write in" in errors[0] and str(place) in errors[0]
    assert snapshot(place) == before


def test_a_run_directory_turned_read_only_mid_run_keeps_its_checkpoint_and_resumes_to_the_same_result(
        tmp_path, monkeypatch):
    """A checkpoint that cannot be written: the previous one stays whole, nothing half-written is left
    beside it, one line says how to go on, and the resumed run is its uninterrupted twin.
    (A write cut off part-way, leaving a partial temporary, is the file-size-limit test below.)"""
    from nalu_cli.training import callbacks

    config = tmp_path / "quick.yaml"
    config.write_text(QUICK_CONFIG)
    assert invoke("train", "--config", config, "--out", tmp_path / "whole").exit_code == 0
    run = tmp_path / "run"
    real_write = callbacks.write_checkpoint
    turned = contextlib.ExitStack()

    def write_checkpoint(path, arrays, scalars):
        if scalars["step"] == 200:  # the place turns read-only between two checkpoints
            turned.enter_context(read_only(run))
        real_write(path, arrays, scalars)

    monkeypatch.setattr(callbacks, "write_checkpoint", write_checkpoint)
    with turned:
        result = invoke("train", "--config", config, "--out", run)
    monkeypatch.undo()
    errors = error_lines(result)
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert f"cannot write {run / 'checkpoint'}" in errors[0]
    assert f"keeps its last checkpoint: continue with `nalu train --resume {run}`" in errors[0]
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 100
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]

    result = invoke("train", "--resume", run)  # the cause gone
    assert result.exit_code == 0, result.stderr
    assert metrics_without_timing(run) == metrics_without_timing(tmp_path / "whole")
    assert_same_weights(run, tmp_path / "whole")


def test_a_file_too_large_while_saving_the_model_keeps_the_old_one_and_resume_saves_it(add_copy, add_run):
    """A file-size limit (what a full disk does to the largest file): the SavedModel, written last by
    TensorFlow, fails; the run's complete SavedModel stays, and resuming once there is room saves it."""
    run = add_copy
    saved_model = run / "saved_model"
    largest = (saved_model / "saved_model.pb").stat().st_size
    assert max(p.stat().st_size for p in run.glob("*.*") if p.is_file() and p.suffix != ".keras") < largest // 2
    before = snapshot(saved_model)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (largest // 2, hard))  # Python ignores SIGXFSZ: writes fail EFBIG
    try:
        result = invoke("train", "--resume", run)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    errors = error_lines(result)
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert f"cannot write {saved_model}" in errors[0] and "--resume" in errors[0]
    assert snapshot(saved_model) == before
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]

    result = invoke("train", "--resume", run)
    assert result.exit_code == 0, result.stderr
    assert metrics_without_timing(run) == metrics_without_timing(add_run)
    assert_same_weights(run, add_run)


def test_a_file_too_large_while_exporting_over_an_old_export_puts_the_old_one_back(add_copy, tmp_path):
    old = shutil.copytree(add_copy / "saved_model", tmp_path / "exported")  # an earlier export, to be replaced
    before = snapshot(old)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, ((old / "saved_model.pb").stat().st_size // 2, hard))
    try:
        result = invoke("export", add_copy, "--out", old, "--overwrite")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    errors = error_lines(result)
    assert result.exit_code == 2 and len(errors) == 1 and f"cannot write {old}" in errors[0], result.stderr
    assert snapshot(old) == before and sorted(p.name for p in tmp_path.iterdir()) == ["exported", "run"]


def test_a_benchmark_that_cannot_append_its_results_keeps_the_finished_seeds_and_resumes(tmp_path, monkeypatch):
    from nalu_cli import benchmark

    monkeypatch.setitem(benchmark.RUNNERS, "local", fake_runner)
    out = tmp_path / "bench"
    whole = benchmark.run_benchmark(out=tmp_path / "whole", **GRID)
    benchmark.run_benchmark(out=out, **{**GRID, "seeds": [0, 1]})  # the first group
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, ((out / "results.jsonl").stat().st_size + 10, hard))  # a full disk
    try:
        with pytest.raises(NaluError) as error:  # the CLI prints a NaluError as its one line
            benchmark.run_benchmark(out=out, **GRID)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(error.value).startswith(f"cannot write {out / 'results.jsonl'}: File too large; the seeds finished "
                                       "before are kept: rerun the same command")
    assert benchmark.run_benchmark(out=out, **GRID) == whole  # room again: the rest trains, nothing twice
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_a_real_process_under_a_file_size_limit_says_so_in_one_line_before_any_work(tmp_path):
    """`ulimit -f 0` in a real nalu process: the write probe fails (EFBIG, not SIGXFSZ), before TensorFlow loads."""

    def no_file_may_grow():
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    completed = subprocess.run([sys.executable, "-m", "nalu_cli", "train", "--op", "add", "--out", str(tmp_path / "run")],
                               capture_output=True, text=True, preexec_fn=no_file_may_grow, timeout=120)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip() == f"nalu: error: cannot write in {tmp_path}: File too large"
    assert list(tmp_path.iterdir()) == []


def test_a_finished_benchmark_and_a_run_in_a_read_only_place_can_still_be_read(tmp_path, add_run, monkeypatch):
    """Nothing to write, nothing refused: a finished benchmark shows its results, a run evaluates,
    and a backup a killed --overwrite left there, which nalu cannot put back, is named."""
    from nalu_cli import benchmark

    monkeypatch.setitem(benchmark.RUNNERS, "local", fake_runner)
    place = tmp_path / "place"
    whole = benchmark.run_benchmark(out=place / "bench", **GRID)
    shutil.copytree(add_run / "saved_model", place / ".model.backup-12345")  # what a kill left
    with read_only(place), read_only(place / "bench"):
        assert benchmark.run_benchmark(out=place / "bench", **GRID) == whole
        result = invoke("predict", place / "model", place / "x.csv")
    assert result.exit_code == 2 and "nalu cannot put it back" in result.stderr and "no such file" in result.stderr
