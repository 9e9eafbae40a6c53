"""Nothing lost, nothing silently wrong: interruption, resume, atomic writes, locks, divergence, determinism."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nalu_cli.config import resolve
from nalu_cli.errors import NaluError
from nalu_cli.rundir import run_lock
from tests.conftest import QUICK_CONFIG, assert_same_weights, invoke, metrics_without_timing, weights

SMALL_RUN = ["--op", "mul", "--unit", "nalu", "--seed", "3"]
SMALL_CONFIG = "task: {input_size: 20}\ntraining: {steps: 30000, eval_every: 500}\n"


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_CONFIG)
    return path


def test_sigint_checkpoints_exits_130_and_resume_matches_an_uninterrupted_run(tmp_path, config_file):
    interrupted = tmp_path / "interrupted"
    # 4,000 steps: the interrupt lands around step 1,500 of the first chunks, well before the end.
    command = [sys.executable, "-m", "nalu_cli", "train", "--config", str(config_file), *SMALL_RUN, "--steps", "4000",
               "--out", str(interrupted)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = interrupted / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"nalu train --resume {interrupted}" in stderr
    summary = json.loads((interrupted / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and summary["steps_trained"] < 4000
    assert (interrupted / "saved_model" / "saved_model.pb").exists()  # the interrupted run is usable as it is

    assert invoke("train", "--resume", interrupted).exit_code == 0
    whole = tmp_path / "whole"
    assert invoke("train", "--config", config_file, *SMALL_RUN, "--steps", "4000", "--out", whole).exit_code == 0
    assert metrics_without_timing(interrupted) == metrics_without_timing(whole)
    assert_same_weights(interrupted, whole)
    resumed, uninterrupted = (json.loads((run / "summary.json").read_text()) for run in (interrupted, whole))
    for key in ("steps_trained", "selected_step", "interpolation_mse", "extrapolation_mse", "success", "stop_reason"):
        assert resumed[key] == uninterrupted[key], key


def test_same_seed_gives_bit_identical_weights_and_metrics(tmp_path):
    """The default model (a portfolio of two architectures, restarts, gated units), as
    `nalu train --op mul` trains it; 2 restarts each rather than 6, for time."""
    config_file = tmp_path / "restarts.yaml"
    config_file.write_text(SMALL_CONFIG + "model: {restarts: 2}\n")
    for name in ("a", "b"):
        args = ["--config", config_file, "--op", "mul", "--seed", "7", "--steps", "1000", "--out", tmp_path / name]
        assert invoke("train", *args).exit_code == 0
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert metrics_without_timing(tmp_path / "a") == metrics_without_timing(tmp_path / "b")


def test_crash_while_writing_a_saved_model_keeps_the_old_one(add_run, tmp_path, monkeypatch):
    import tensorflow as tf

    export_dir = tmp_path / "export"
    assert invoke("export", add_run, "--out", export_dir).exit_code == 0
    before = (export_dir / "saved_model.pb").read_bytes()

    def crash(obj, export_dir, *args, **kwargs):
        os.makedirs(export_dir, exist_ok=True)
        open(os.path.join(export_dir, "saved_model.pb"), "wb").write(b"truncated")
        raise OSError("killed (simulated)")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    result = invoke("export", add_run, "--out", export_dir, "--overwrite")
    assert result.exit_code != 0
    assert (export_dir / "saved_model.pb").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_second_writer_on_the_same_run_is_refused(add_run):
    with run_lock(add_run):
        for args in (["train", "--op", "add", "--out", add_run, "--overwrite"], ["train", "--resume", add_run]):
            result = invoke(*args)
            assert result.exit_code == 2
            assert "being written by another nalu process" in result.stderr


def test_divergence_is_restored_counted_and_never_saved(tmp_path):
    run = tmp_path / "diverging"
    config = tmp_path / "hot.yaml"
    # Adam moves each weight by about the learning rate per step: at 1e20 a linear model's
    # squared error overflows float32 within the first chunk, however often it is restored.
    config.write_text("task: {op: add, input_size: 20}\ntraining: {steps: 5000, eval_every: 500, learning_rate: 1.0e+20}\n")
    result = invoke("train", "--config", config, "--unit", "linear", "--out", run)
    assert result.exit_code == 0, result.stderr
    assert "divergence(s) restored" in result.stderr  # the progress bar says so
    summary = json.loads((run / "summary.json").read_text())
    assert summary["divergence_events"] == 5 and summary["stop_reason"] == "diverged"
    assert summary["diverged_at_step"] == 2500 and summary["steps_trained"] == 2500
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(line["divergence_events"] for line in lines) == summary["divergence_events"]
    assert all(np.all(np.isfinite(value)) for layer in weights(run) for value in layer.values())


def test_resuming_a_checkpoint_without_the_optimizer_state_is_one_clear_error(run_copy):
    """A checkpoint lacking the split-adam moments (written by nalu 0.1.0, or with optimizer: adam
    and then resumed under another config) is refused with one line, and the run is left as it was."""
    from nalu_cli import training

    run = run_copy
    arrays, scalars = training.read_checkpoint(run / "checkpoint")
    old_state = {k: v for k, v in arrays.items() if not k.startswith(("mc/", "vc/"))}
    assert len(old_state) < len(arrays)
    training.write_checkpoint(run / "checkpoint", old_state, scalars)
    before = sorted(p.name for p in run.iterdir())
    result = invoke("train", "--resume", run)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("nalu: error:")]
    assert len(errors) == 1 and "checkpoint has no mc/0/" in errors[0]  # progress lines aside, one error
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.fixture(scope="module")
def trained_1000(tmp_path_factory):
    """A finished 1,000-step run (SMALL_RUN), trained once for the tests that damage a copy of it."""
    root = tmp_path_factory.mktemp("trained")
    config = root / "small.yaml"
    config.write_text(SMALL_CONFIG)
    run = root / "run"
    assert invoke("train", "--config", config, *SMALL_RUN, "--steps", "1000", "--out", run).exit_code == 0
    return run


@pytest.fixture
def run_copy(trained_1000, tmp_path):
    import shutil

    return Path(shutil.copytree(trained_1000, tmp_path / "run"))


def test_a_metrics_line_torn_by_a_kill_is_dropped_on_resume(run_copy):
    run = run_copy
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 1500, "loss": 0.2, "interpol')  # a kill in the middle of a line
    result = invoke("train", "--resume", run, "--steps", "1500")
    assert result.exit_code == 0, result.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 500, 1000, 1500]


def test_a_damaged_metrics_line_before_the_last_is_one_clear_error(run_copy):
    run = run_copy
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", *lines[2:]]) + "\n")
    result = invoke("train", "--resume", run, "--steps", "1500")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("nalu: error:")]
    assert len(errors) == 1 and "metrics.jsonl line 2 is not a metrics entry" in errors[0]


def test_a_truncated_checkpoint_is_one_clear_error(run_copy):
    run = run_copy
    state = run / "checkpoint" / "state.npz"
    state.write_bytes(state.read_bytes()[:100])
    result = invoke("train", "--resume", run, "--steps", "1500")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("nalu: error:")]
    assert len(errors) == 1 and "checkpoint" in errors[0] and "--overwrite" in errors[0]


def test_resume_refuses_a_config_edited_since_the_checkpoint_and_changes_nothing(run_copy):
    run = run_copy
    edited = (run / "config.yaml").read_text().replace("hidden_size: 2", "hidden_size: 4")
    (run / "config.yaml").write_text(edited)
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    result = invoke("train", "--resume", run, "--steps", "2000")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "no longer matches the run's checkpoint (model.hidden_size: 2 -> 4)" in result.stderr
    assert (run / "config.yaml").read_text() == edited
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_resume_refuses_a_step_budget_below_where_the_run_is(run_copy):
    run = run_copy
    config = (run / "config.yaml").read_text()
    result = invoke("train", "--resume", run, "--steps", "500")
    assert result.exit_code == 2 and "is at step 1,000; --steps 500 would go back" in result.stderr
    assert (run / "config.yaml").read_text() == config


def test_a_checkpoint_written_before_the_recurrent_task_resumes(run_copy):
    """nalu 0.4 wrote a config without task.kind, length or extrapolation_length and with input_size,
    test_size and the polish keys as numbers: read through today's defaults it is the same run."""
    run = run_copy
    scalars = json.loads((run / "checkpoint" / "state.json").read_text())
    for key in ("kind", "length", "extrapolation_length"):
        del scalars["config"]["task"][key]
    (run / "checkpoint" / "state.json").write_text(json.dumps(scalars))
    result = invoke("train", "--resume", run, "--steps", "1500")
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "summary.json").read_text())["steps_trained"] == 1500


def test_a_recurrent_run_of_an_older_nalu_is_resumed_only_as_it_trained(tmp_path):
    """Two nulls changed meaning on the recurrent task: nalu 0.5's default model learned h_0 (0.6
    keeps it at 0), and up to 0.6 split-adam stepped a cell's recurrence like its other weights
    (0.7: 1/T). Resuming such a run under today's meaning would change its training mid-run, so it
    is refused, naming the key to set; a run whose training the change leaves alone resumes."""
    from nalu_cli.training.run import check_resumable

    def written_by_old_nalu(settings, *missing):
        old = resolve(settings).to_dict()
        for section, key in missing:
            del old[section][key]
        return {"config": old, "step": 1000}

    recurrent = {"task": {"kind": "recurrent", "op": "add"}}
    nalu_0_5 = written_by_old_nalu(recurrent, ("model", "learn_initial_state"), ("training", "recurrent_step_scale"))
    nalu_0_6 = written_by_old_nalu(recurrent, ("training", "recurrent_step_scale"))
    with pytest.raises(NaluError, match="nalu 0.5, .* add `learn_initial_state: true` under `model:`"):
        check_resumable(resolve(recurrent), nalu_0_5, tmp_path)
    h_0_learned = {**recurrent, "model": {"learn_initial_state": True}}
    with pytest.raises(NaluError, match="add `recurrent_step_scale: 1.0` under `training:`"):
        check_resumable(resolve(h_0_learned), nalu_0_5, tmp_path)
    with pytest.raises(NaluError, match="add `recurrent_step_scale: 1.0` under `training:`"):
        check_resumable(resolve(recurrent), nalu_0_6, tmp_path)
    # Set, those keys give back the old run's config, but not its default model's members: since 0.10
    # the NMU member holds its recurrence (portfolio.DEFAULT_MODEL), which no key of the config undoes.
    for old, settings in ((nalu_0_5, {**h_0_learned, "training": {"recurrent_step_scale": 1.0}}),
                          (nalu_0_6, {**recurrent, "training": {"recurrent_step_scale": 1.0}})):
        with pytest.raises(NaluError, match="nalu 0.9.0 or older, whose default recurrent model's NAU -> NMU member"):
            check_resumable(resolve(settings), old, tmp_path)
    # A split-adam run of named units resumes once the key is set.
    nau_nmu = {**recurrent, "model": {"layers": ["nau", "nmu"]}}
    with pytest.raises(NaluError, match="add `recurrent_step_scale: 1.0` under `training:`"):
        check_resumable(resolve(nau_nmu), written_by_old_nalu(nau_nmu, ("training", "recurrent_step_scale")), tmp_path)
    check_resumable(resolve({**nau_nmu, "training": {"recurrent_step_scale": 1.0}}),
                    written_by_old_nalu(nau_nmu, ("training", "recurrent_step_scale")), tmp_path)
    # Runs the changes leave alone resume as they are: named units keep a learned h_0, adam was
    # never scaled, and the static task has no cell.
    nau = {**recurrent, "model": {"unit": "nau", "layers": ["nau", "nau"]}, "training": {"optimizer": "adam"}}
    check_resumable(resolve(nau), written_by_old_nalu(nau, ("model", "learn_initial_state"),
                                                      ("training", "recurrent_step_scale")), tmp_path)
    check_resumable(resolve({}), written_by_old_nalu({}, ("model", "learn_initial_state"),
                                                     ("training", "recurrent_step_scale")), tmp_path)


def test_a_default_recurrent_run_resumes_only_under_the_nalu_whose_portfolio_trained_it(tmp_path):
    """The checkpoint names the nalu that wrote it (since 0.10.0): a default recurrent run of 0.9.0
    or older, whose NMU member learned its recurrence, is refused in one line; one of this nalu, a
    static default run and a named architecture resume."""
    from nalu_cli import __version__
    from nalu_cli.training.run import check_resumable

    def checkpoint(settings, version=None):
        return {"config": resolve(settings).to_dict(), "step": 1000,
                **({"nalu_version": version} if version else {})}

    recurrent = {"task": {"kind": "recurrent", "op": "mul"}}
    for version in (None, "0.9.0", "not a version"):
        with pytest.raises(NaluError, match="NAU -> NMU member learned its cell's recurrence.*start a new run"):
            check_resumable(resolve(recurrent), checkpoint(recurrent, version), tmp_path)
    check_resumable(resolve(recurrent), checkpoint(recurrent, __version__), tmp_path)
    check_resumable(resolve({}), checkpoint({}), tmp_path)
    named = {**recurrent, "model": {"layers": ["nau", "nmu"]}}
    check_resumable(resolve(named), checkpoint(named), tmp_path)


def test_a_checkpoint_names_the_nalu_that_wrote_it_and_what_its_members_trained_with(trained_1000):
    from nalu_cli import __version__
    from nalu_cli.config import Config
    from nalu_cli.rundir import read_run_config
    from nalu_cli.training.run import member_settings

    state = json.loads((trained_1000 / "checkpoint" / "state.json").read_text())
    assert state["nalu_version"] == __version__
    assert state["members"] == member_settings(read_run_config(trained_1000, None))
    assert state["members"] != member_settings(Config())  # the record names this run's model, not any model


def test_a_run_whose_members_this_nalu_would_train_otherwise_is_refused(tmp_path, monkeypatch):
    """A default-model checkpoint records each member's settings: when a later nalu's portfolio
    (portfolio.DEFAULT_MODEL) trains a member otherwise, or has other members, resuming is refused
    in one line naming what changed, with no entry in a table of versions needed."""
    from nalu_cli import portfolio
    from nalu_cli.training.run import check_resumable, member_settings

    recurrent = {"task": {"kind": "recurrent", "op": "mul"}}
    config = resolve(recurrent)
    checkpoint = {"config": config.to_dict(), "step": 1000, "nalu_version": "0.10.0", "members": member_settings(config)}
    check_resumable(config, checkpoint, tmp_path)
    (gated, _), (nmu, _), nainpu = portfolio.DEFAULT_MODEL["recurrent"]
    changed = {**portfolio.DEFAULT_MODEL, "recurrent": ((gated, {}), (nmu, {"recurrent_step_scale": 0.5}), nainpu)}
    monkeypatch.setattr(portfolio, "DEFAULT_MODEL", changed)
    with pytest.raises(NaluError, match=r"member 2 trained with training.recurrent_step_scale 0.0; nalu .*'s "
                                        r"\(nau -> nmu\) with 0.5: resume it with that nalu, or start a new run"):
        check_resumable(config, checkpoint, tmp_path)
    monkeypatch.setattr(portfolio, "DEFAULT_MODEL", {**changed, "recurrent": changed["recurrent"][:1]})
    with pytest.raises(NaluError, match="with 3 architectures; nalu .*'s model has 1 \\(nau -> gated\\)"):
        check_resumable(config, checkpoint, tmp_path)


NAMED = {"model": {"layers": ["nau", "nmu"]}}


@pytest.mark.parametrize("version, added, settings, older, refused", [
    # 0.11.0's training.polish_hold: the static default model's NaiNPU member now polishes otherwise
    # (0.10's: one free polish of 1,000 iterations at step 10,000).
    ("0.10.2", "polish_hold", NAMED, {}, None),
    ("0.10.2", "polish_hold", {}, {1: {"polish_every": 10_000, "polish_iterations": 1_000, "polish_limit": 1}},
     r"member 2 trained with training.polish_every 10000; nalu .*'s \(nau -> nainpu\) with 5000"),
    # 0.16.0's training.hidden_split_start: the static default model's gated member now splits from step 1,000.
    ("0.15.0", "hidden_split_start", NAMED, {}, None),
    ("0.15.0", "hidden_split_start", {}, {},
     r"member 1 trained with training.hidden_split_start null; nalu .*'s \(nau -> gated\) with 1000: "
     r"resume it with that nalu, or start a new run"),
    # 0.18.0's training.common_step_scale: 1, split-adam as before, for every model.
    ("0.17.0", "common_step_scale", NAMED, {}, None),
    ("0.17.0", "common_step_scale", {}, {}, None),
])
def test_a_setting_added_since_a_checkpoint_resumes_at_its_default_and_is_refused_otherwise(
        tmp_path, version, added, settings, older, refused):
    """A checkpoint of an older nalu records no setting added since: a named unit, which trains as it
    did, resumes; the static default model, whose member now trains otherwise, is refused, naming the
    first setting that changed."""
    from nalu_cli.training.run import check_resumable, member_settings

    config = resolve(settings)
    members = member_settings(config)
    for index, member in enumerate(members):
        del member["training"][added]
        member["training"].update(older.get(index, {}))
    checkpoint = {"config": config.to_dict(), "step": 1000, "nalu_version": version, "members": members}
    if refused is None:
        check_resumable(config, checkpoint, tmp_path)
    else:
        with pytest.raises(NaluError, match=refused):
            check_resumable(config, checkpoint, tmp_path)


def test_a_run_killed_mid_write_resumes_to_the_uninterrupted_run_and_leaves_nothing_of_the_dead_writer(
        tmp_path, monkeypatch):
    """Two points where a kill leaves a write half done: a checkpoint exchanged with its new version,
    the old one not yet deleted from its temporary name; the final model.keras written but not renamed
    (no summary yet). The run directory is copied there as a dead process leaves it (its temporaries
    named after another pid), and `--resume` finishes each copy: the uninterrupted run, with the dead
    writer's temporaries gone. benchmarks/fault_injection.py kills real processes at 30 points."""
    import shutil
    from collections import Counter

    from nalu_cli import faults

    config, run = tmp_path / "quick.yaml", tmp_path / "run"
    config.write_text(QUICK_CONFIG)
    points, arrivals, copies = {"exchanged:checkpoint": 1, "keras": 1}, Counter(), {}

    def copy_as_killed(point, path=None, start=0):
        arrivals[point] += 1
        if points.get(point) == arrivals[point]:
            copies[point] = Path(shutil.copytree(run, tmp_path / f"killed-{len(copies)}"))
            for entry in copies[point].iterdir():  # a dead writer's: another process's pid
                entry.rename(entry.with_name(entry.name.replace(f"-{os.getpid()}", "-12345")))

    monkeypatch.setattr(faults, "reached", copy_as_killed)
    assert invoke("train", "--config", config, "--out", run).exit_code == 0
    monkeypatch.undo()
    assert sorted(copies) == sorted(points)
    for point, copy in copies.items():
        assert [p.name for p in copy.iterdir() if ".tmp-12345" in p.name], point  # as the kill left it
        result = invoke("train", "--resume", copy)
        assert result.exit_code == 0, f"{point}: {result.stderr}"
        assert metrics_without_timing(copy) == metrics_without_timing(run), point
        assert_same_weights(copy, run)
        resumed, whole = (json.loads((r / "summary.json").read_text()) for r in (copy, run))
        for key in ("steps_trained", "selected_step", "interpolation_mse", "extrapolation_mse", "success"):
            assert resumed[key] == whole[key], (point, key)
        assert not [p.name for p in copy.iterdir() if ".tmp-" in p.name or ".old-" in p.name], point
