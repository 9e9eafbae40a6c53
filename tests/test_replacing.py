"""Replacing an output (--overwrite) loses nothing, wherever a kill -9 lands: the swap, recovery, concurrency.

A kill is real: a forked child runs the replacing code and SIGKILLs itself just before its
n-th change to the file system, for every n until it finishes; the parent then checks what
the next nalu command finds. No TensorFlow runs in a child (the writers are the real
`replacing` / `train` / `write_checkpoint` code around a stand-in for training).
"""

import gc
import hashlib
import json
import os
import shutil
import select
import signal
from pathlib import Path

import numpy as np
import pytest

from nalu_cli import outputs
from nalu_cli.config import resolve
from nalu_cli.rundir import atomic_path, atomic_write_text
from nalu_cli.training import run
from nalu_cli.training.checkpoint import write_checkpoint
from tests.conftest import invoke

# The calls that change the file system's layout in the code under test: a kill before each. (shutil.rmtree
# removes a directory's files with os.unlink, then the directory with os.rmdir: a kill before its rmdirs leaves
# a directory emptied of files, which is as far as a kill inside it gets.)
MUTATIONS = ("replace", "rename", "mkdir", "rmdir")
CONFIG = resolve({"task": {"op": "add", "input_size": 20, "validation_size": 100, "test_size": 100},
                  "model": {"unit": "nac"}, "training": {"steps": 2, "eval_every": 1}})


def tree(path: Path) -> dict:
    """Every file under `path` (its lock aside) and its hash: what a user would call the run."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


def killed_at(n: int, action) -> bool:
    """Run `action` in a forked child that SIGKILLs itself just before its n-th file-system change.
    True if the child was killed, False if it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: no cleanup of any kind may run after the kill
        try:
            gc.disable()  # a collection would touch (and copy) every page of the parent's heap: seconds
            count = [0]

            def counted(function):
                def call(*args, **kwargs):
                    count[0] += 1
                    if count[0] == n:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return function(*args, **kwargs)
                return call

            for name in MUTATIONS:
                setattr(os, name, counted(getattr(os, name)))
            action()
        except BaseException:
            os._exit(1)
        os._exit(0)
    exited = os.pidfd_open(pid)  # readable once the child has exited: a stuck child fails the test, not the suite
    try:
        if not select.select([exited], [], [], 60)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the writer forked to die at change {n} hung")
    finally:
        os.close(exited)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the writer failed without being killed"
    return False


def fake_run(config, out, on_progress, should_stop, checkpoint=None, on_checkpoint=None):
    """What `_run` writes, without training: two evaluations (metrics line, checkpoint), the model, the summary."""
    for step in (0, 1):
        with open(out / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps({"step": step}) + "\n")
        write_checkpoint(out / "checkpoint", {"w": np.full(3, step)}, {"step": step, "config": config.to_dict()})
        if on_checkpoint:
            on_checkpoint()
    with atomic_path(out / "saved_model") as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_text("new model")
    atomic_write_text(out / "summary.json", json.dumps({"steps_trained": 2}))
    return {}


@pytest.fixture
def old_run(tmp_path):
    """A finished run directory (as far as its layout goes) at tmp_path/out/run, and a pristine copy."""
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    (pristine / "config.yaml").write_text("seed: 1\n")
    (pristine / "metrics.jsonl").write_text('{"step": 0}\n')
    (pristine / "checkpoint").mkdir()
    (pristine / "checkpoint" / "state.json").write_text('{"step": 0}')
    (pristine / "saved_model").mkdir()
    (pristine / "saved_model" / "saved_model.pb").write_text("old model")
    (pristine / ".lock").write_text("")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("the user's own file beside the run")
    return tmp_path / "out" / "run", pristine


def reset(path: Path, pristine: Path) -> None:
    """`path` the old output again, and nothing of nalu's beside it (the user's notes.txt stays)."""
    for leftover in path.parent.iterdir():
        if leftover.name.startswith((path.name, f".{path.name}")):
            shutil.rmtree(leftover)
    shutil.copytree(pristine, path)


def bystanders(path: Path) -> dict:
    """The user's other files beside `path`, hashed."""
    return {p.name: tree(p) if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in path.parent.iterdir() if not p.name.startswith((path.name, f".{path.name}"))}


def after_recovery(path: Path, old: dict, capsys, usable) -> str:
    """What the next nalu command finds once `recover` has run: the old output at `path`, or a usable
    new one with any backup of the old one named on stderr. Never neither; never an old one lost."""
    others = bystanders(path)
    outputs.recover(path)
    note = capsys.readouterr().err
    assert bystanders(path) == others
    beside = sorted(p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))
    # Nor anything begun in a temporary sibling, however far it got: a run (its lock alone, or more), a SavedModel.
    assert not [p for p in beside if ".discard-" in p.name or ".tmp-" in p.name]
    backups = [p for p in beside if ".backup-" in p.name]
    if path.exists() and tree(path) == old:
        assert not backups
        return "old"
    assert usable(path), f"{path} holds neither the old output nor a usable new one: {sorted(tree(path))}"
    for backup in backups:
        assert tree(backup) == old and str(backup) in note  # kept, and the user told where
    return "new, old kept and named" if backups else "new"


def sweep(path: Path, pristine: Path, action, capsys, usable) -> list[str]:
    """Kill `action` before each of its file-system changes in turn, from the old output each time."""
    old, states = tree(pristine), []
    reset(path, pristine)
    others = bystanders(path)
    for n in range(1, 500):
        reset(path, pristine)
        if not killed_at(n, action):
            break
        states.append(after_recovery(path, old, capsys, usable))
        assert bystanders(path) == others  # the user's files beside the output, byte for byte
    return states


def resumable_run(path: Path) -> bool:
    return (path / "checkpoint" / "state.json").is_file() and (path / "config.yaml").is_file()


def whole_saved_model(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() and (path / "assets.extra" / "nalu.json").is_file()


def test_a_kill_anywhere_in_train_overwrite_leaves_the_old_run_or_a_resumable_new_one(old_run, monkeypatch, capsys):
    path, pristine = old_run
    monkeypatch.setattr(run, "_run", fake_run)
    states = sweep(path, pristine, lambda: run.train(CONFIG, path, overwrite=True), capsys, resumable_run)
    # Before the first checkpoint the old run comes back; after it the new one stays and the old one goes.
    assert len(states) > 10 and states[0] == "old" and states[-1] == "new", states
    assert "new, old kept and named" in states  # killed between the checkpoint and deleting the backup
    assert (path / "summary.json").is_file() and not list(path.parent.glob(f".{path.name}.*"))


def fake_export(path: Path):
    """What `export` writes: a SavedModel (atomically, in a locked temporary directory), then files inside it."""
    with outputs.replacing(path, overwrite=True, kind="SavedModel"):
        with atomic_path(path, directory=True) as tmp:
            (tmp / "variables").mkdir()
            (tmp / "variables" / "variables.index").write_text("new")
            (tmp / "assets.extra").mkdir()
            (tmp / "saved_model.pb").write_text("new")
            (tmp / "assets.extra" / "nalu.json").write_text("{}")
        with atomic_path(path / "model.onnx") as tmp:
            tmp.write_text("onnx")


def test_a_kill_anywhere_in_export_overwrite_leaves_the_old_saved_model_or_the_new_one(tmp_path, capsys):
    pristine = tmp_path / "pristine"
    (pristine / "assets.extra").mkdir(parents=True)
    (pristine / "saved_model.pb").write_text("old")
    (pristine / "assets.extra" / "nalu.json").write_text("{}")
    (pristine / "model.keras").write_text("old keras")
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "model"
    states = sweep(path, pristine, lambda: fake_export(path), capsys, whole_saved_model)
    assert len(states) > 5 and states[0] == "old" and "new" in states, states


def test_a_saved_model_begun_beside_the_output_goes_once_its_writer_is_gone_and_only_if_nalus(tmp_path):
    """What an export killed before its SavedModel was in place leaves beside it (`.STEM.tmp-PID.SUFFIX`)
    goes at the next command on the output. The lock says the writer is gone, not the pid: one named
    after a live process goes, one a live writer holds stays. A name alone is not enough: a directory
    holding anything a SavedModel writer does not write, a file, a symlink, another name all stay."""
    path = tmp_path / "model.v2"  # with a suffix: atomic_path's temporary is .model.tmp-PID.v2

    def begun(name: str, *files: str) -> Path:
        directory = tmp_path / name
        for file in files:
            (directory / file).parent.mkdir(parents=True, exist_ok=True)
            (directory / file).write_text("x")
        directory.mkdir(exist_ok=True)
        return directory

    abandoned = [begun(f".model.tmp-{os.getppid()}.v2"),  # nothing in it yet; a live pid
                 begun(".model.tmp-1.v2", "variables/variables.index", f"saved_model.pb.tmp{'0' * 32}"),
                 begun(".model.tmp-2.v2", "variables/variables.index", "saved_model.pb", "assets.extra/nalu.json")]
    others = [begun(".model.tmp-3.v2", "saved_model.pb", "notes.txt"), begun(".model.tmp-x.v2", "saved_model.pb"),
              begun(".model.v2.tmp-4", "saved_model.pb"), begun("elsewhere", "saved_model.pb")]
    (tmp_path / ".model.tmp-5.v2").write_text("a file")
    (tmp_path / ".model.tmp-6.v2").symlink_to(others[-1])
    others += [tmp_path / ".model.tmp-5.v2", tmp_path / ".model.tmp-6.v2"]
    before = {p: tree(p) if p.is_dir() else p.read_text() for p in others}
    with atomic_path(path, directory=True) as live:  # this process, writing a SavedModel at `path`
        (live / "saved_model.pb").write_text("being written")
        result = invoke("eval", path)  # a later command on the output
        assert result.exit_code == 2 and f"no such file or directory: {path}" in result.stderr
        assert not [p for p in abandoned if p.exists()]
        assert {p: tree(p) if p.is_dir() else p.read_text() for p in others} == before
        assert (live / "saved_model.pb").read_text() == "being written"
    assert (path / "saved_model.pb").read_text() == "being written"


def test_exports_writer_keeps_its_temporary_locked_until_it_is_in_place(tmp_path, monkeypatch):
    """The real writer (export.write_saved_model) holds the lock while TensorFlow writes: a command on
    the output meanwhile leaves the temporary alone, and the SavedModel lands whole."""
    from nalu_cli import faults
    from nalu_cli.config import ModelConfig
    from nalu_cli.export import make_meta, write_model
    from nalu_cli.model import build_model

    out, seen = tmp_path / "out", []

    def reached(point, written=None, start=0):
        if point == "saved-model":  # TensorFlow has written the SavedModel in the temporary
            outputs.recover(out)
            seen.append(sorted(p.name for p in tmp_path.iterdir()))

    monkeypatch.setattr(faults, "reached", reached)
    model = build_model(ModelConfig(layers=["nau", "nmu"]), input_size=4, seed=3)
    task = {"op": "mul", "input_size": 4, "subsets": [[0, 2], [1, 3]], "interpolation_range": [[1.0, 2.0]],
            "extrapolation_range": [[2.0, 6.0]], "seed": 0}
    write_model(model, make_meta(task, {"unit": "nau-nmu", "layers": ["nau", "nmu"]}), out)
    assert seen == [[f".out.tmp-{os.getpid()}"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "assets.extra" / "nalu.json").is_file()


def test_a_kill_while_putting_a_backup_back_is_finished_by_the_next_command(old_run, capsys):
    """Recovery itself killed at each step: the command after it still finds the old run."""
    path, pristine = old_run
    old = tree(pristine)
    for n in range(1, 50):
        reset(path, pristine)
        backup = path.with_name(f".{path.name}.backup-12345")  # what a killed `train --overwrite` leaves
        os.replace(path, backup)
        path.mkdir()
        (path / "config.yaml").write_text("seed: 2\n")
        (path / "metrics.jsonl").write_text("")
        if not killed_at(n, lambda: outputs.recover(path)):
            break
        assert after_recovery(path, old, capsys, resumable_run) == "old"
    assert n > 2


def test_a_backup_whose_writer_is_alive_is_left_alone_and_the_output_refused(old_run, capsys):
    """The lock, not the pid, says whether a writer is alive: a backup named after this very
    (live) process but unlocked is recovered; a locked one is not, and a second writer is refused."""
    path, pristine = old_run
    reset(path, pristine)
    backup = path.with_name(f".{path.name}.backup-{os.getpid()}")  # a live pid: pid reuse cannot fool it
    os.replace(path, backup)
    outputs.recover(path)
    assert tree(path) == tree(pristine) and "put back the run" in capsys.readouterr().err

    with pytest.raises(KeyboardInterrupt), outputs.replacing(path, overwrite=True, kind="run"):  # a live writer
        assert not path.exists()
        assert outputs.recover(path) is True and not path.exists()  # nothing touched
        for overwrite in (["--overwrite"], []):
            result = invoke("train", "--op", "add", "--out", path, *overwrite)
            assert result.exit_code == 2 and "being replaced by another nalu process" in result.stderr
        raise KeyboardInterrupt  # the writer stops before its new run is usable
    assert tree(path) == tree(pristine) and not list(path.parent.glob(f".{path.name}.*"))


def test_a_failure_before_the_first_checkpoint_puts_the_old_run_back_and_after_it_keeps_the_new(
        old_run, monkeypatch):
    path, pristine = old_run

    def fail_at(step_to_fail):
        def failing_run(config, out, on_progress, should_stop, checkpoint=None, on_checkpoint=None):
            for step in (0, 1):
                if step == step_to_fail:
                    raise OSError(28, "No space left on device", str(out / "checkpoint"))
                write_checkpoint(out / "checkpoint", {"w": np.zeros(1)}, {"step": step})
                on_checkpoint()
        return failing_run

    reset(path, pristine)
    monkeypatch.setattr(run, "_run", fail_at(0))
    with pytest.raises(Exception, match="No space left on device; .* is as it was before this command"):
        run.train(CONFIG, path, overwrite=True)
    assert tree(path) == tree(pristine) and not list(path.parent.glob(f".{path.name}.*"))

    monkeypatch.setattr(run, "_run", fail_at(1))
    with pytest.raises(Exception, match=f"keeps its last checkpoint: continue with `nalu train --resume {path}`"):
        run.train(CONFIG, path, overwrite=True)
    assert json.loads((path / "checkpoint" / "state.json").read_text())["step"] == 0
    assert not list(path.parent.glob(f".{path.name}.*"))  # the old run went at the first checkpoint, as asked


def test_a_fresh_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    def failing_run(config, out, *args, **kwargs):
        raise OSError(27, "File too large", str(out / "metrics.jsonl"))

    monkeypatch.setattr(run, "_run", failing_run)
    with pytest.raises(Exception, match="File too large"):
        run.train(CONFIG, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_a_run_killed_before_its_first_checkpoint_can_be_overwritten_or_resumed(tmp_path, monkeypatch):
    """What a kill leaves of a fresh run (config.yaml, an empty metrics.jsonl) is a run nalu can use:
    --overwrite takes it, --resume trains it from step 0."""
    from nalu_cli.config_files import dump_yaml
    from nalu_cli.rundir import new_run_dir

    path = tmp_path / "run"
    with new_run_dir(path, dump_yaml(CONFIG)):
        (path / "metrics.jsonl").write_text('{"step": 0, "loss": 1')  # killed while writing its first line
    outputs.check_output(path, overwrite=True, kind="run")  # not "not a nalu run directory"
    calls = []
    monkeypatch.setattr(run, "_run", lambda config, out, *args, checkpoint="unset", **kwargs: calls.append(
        (config, checkpoint)) or {})
    run.resume(path)
    assert calls == [(CONFIG, None)]  # from step 0, the torn line dropped (truncate_metrics with no checkpoint)
