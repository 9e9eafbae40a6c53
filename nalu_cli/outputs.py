"""Outputs nalu writes where something may already be: checked first, replaced so that nothing is lost.

`nalu train --out RUN --overwrite`, `export --overwrite` and `inspect --snap --overwrite`
replace an old output. `replacing` moves the old one aside to `.NAME.backup-PID` and puts it
back if the new one fails before it is usable; once it is usable (`commit`: a run at its first
checkpoint, a SavedModel when written whole) the backup is renamed `.NAME.discard-PID` and
deleted. A process killed in between (kill -9, the out-of-memory killer) cannot do either, so
every command that touches NAME first calls `recover`: a backup whose writer is gone comes
back if NAME is not usable, and is named in one line otherwise; a discard is deleted, and so is
a SavedModel a killed export began beside NAME (`.STEM.tmp-PID.SUFFIX`, rundir.atomic_path).

"Whose writer is gone" is an flock on the backup (or the temporary) directory itself, taken
before the move (when it is made) and held to the end. The kernel drops it when the process
dies, however it dies, so neither a pid reused by another process nor a second nalu can make a
live backup look abandoned; whoever recovers a backup holds the same lock while doing it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import re
import sys
import tempfile
from pathlib import Path

from nalu_cli import faults
from nalu_cli.errors import NaluError
from nalu_cli.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOCK_FILE,
    META_FILE,
    METRICS_FILE,
    NALU_NAMES,
    SAVED_MODEL_NAMES,
    STATE_FILE,
    is_locked,
    is_run_dir,
    is_saved_model,
    is_temporary,
    remove,
)


def check_output(path: Path, overwrite: bool, kind: str) -> None:
    """Refuse an output nalu cannot or must not write, before any work: one that exists (unless
    --overwrite), that nalu did not write, that another nalu is writing, that holds the current
    directory, or whose directory cannot be written."""
    path = Path(path)
    replaced = recover(path)
    if replaced:
        raise NaluError(f"{path} is being replaced by another nalu process")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise NaluError(f"{path} already exists; pass --overwrite to replace it")
        if not path.is_dir() or path.is_symlink():
            raise NaluError(f"{path} exists and is not a directory; refusing to replace it")
        if Path.cwd().resolve().is_relative_to(path.resolve()):
            raise NaluError(f"{path} holds the current directory; refusing to replace it")
        ours = (is_run_dir(path) or _is_new_run(path)) if kind == "run" else is_saved_model(path)
        if not ours and any(path.iterdir()):
            raise NaluError(f"{path} is not a nalu {kind} directory; refusing to overwrite it")
        if kind == "run" and is_locked(path):
            raise NaluError(f"{path} is being written by another nalu process")
    elif path.parent.exists() and not path.parent.is_dir():
        raise NaluError(f"cannot create {path}: {path.parent} is not a directory")
    check_writable(path.parent)


def check_apart(source: Path, out: Path) -> None:
    """Refuse an output that is, holds or lies inside the input it is made from (replacing it would
    move the input away, or change it)."""
    given, target = Path(source).resolve(), Path(out).resolve()
    if given == target:
        raise NaluError(f"--out {out} is {source}, the model it is made from; choose another directory")
    if target.is_relative_to(given):
        raise NaluError(f"--out {out} lies inside {source}, the model it is made from; choose a directory outside it")
    if given.is_relative_to(target):
        raise NaluError(f"--out {out} holds {source}, the model it is made from; choose another directory")


def check_writable(directory: Path) -> None:
    """Refuse a directory nalu could not write in (read-only, no permission, disk full): tried, not
    guessed from permission bits, which root ignores. A directory yet to be made: its nearest parent."""
    directory = Path(directory).absolute()
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    if not directory.is_dir():
        raise NaluError(f"cannot create anything in {directory}: it is not a directory")
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".nalu-probe-") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as error:
        raise NaluError(f"cannot write in {directory}: {error.strerror}") from None


def _is_new_run(path: Path) -> bool:
    """A run directory a killed `nalu train` left before its first evaluation: config.yaml and its lock."""
    return (path / CONFIG_FILE).is_file() and (path / LOCK_FILE).is_file()


def _is_begun_run(path: Path) -> bool:
    """A run directory rundir.new_run_dir began in a temporary sibling: its lock, and nothing but what
    it writes there (config.yaml, metrics.jsonl, a temporary config.yaml), however far it got."""
    return path.is_dir() and not path.is_symlink() and (path / LOCK_FILE).is_file() and all(
        entry.name in (LOCK_FILE, CONFIG_FILE, METRICS_FILE) or is_temporary(entry.name, CONFIG_FILE)
        for entry in path.iterdir())


class Replacement:
    """The output being written by `replacing`: `commit()` once it is usable, and the old one goes."""

    def __init__(self, path: Path, backup: Path | None):
        self.path, self.backup, self.committed = path, backup, False

    def commit(self) -> None:
        if self.committed:
            return
        self.committed = True
        if self.backup is not None:
            faults.reached("commit")
            doomed = self.backup.with_name(self.backup.name.replace(".backup-", ".discard-", 1))
            os.replace(self.backup, doomed)  # from here a kill leaves a discard, which `recover` deletes
            remove(doomed)

    def undo(self) -> None:
        """Before commit: set aside what was written at `path` (unless another nalu is writing there)
        and put the old output back."""
        if (self.path.exists() or self.path.is_symlink()) and is_locked(self.path):
            return  # not ours: a backup left here is named by the next `recover`
        _put_back(self.path, self.backup)


@contextlib.contextmanager
def replacing(path: Path, overwrite: bool, kind: str):
    """Write a new output at `path` (kind "run" or "SavedModel"), replacing an old one if `overwrite`.

    Yields a `Replacement`; call its `commit()` once the new output is usable, or leave the block
    without error (which commits). An error before that removes what was written and puts the
    old output back. The caller writes the new output at `path`, which does not exist inside the block.
    """
    path = Path(path)
    check_output(path, overwrite, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked_dir(path if path.is_dir() else None) as held:
        if held is False:
            raise NaluError(f"{path} is being written by another nalu process")
        if kind == "run" and path.is_dir() and is_locked(path):  # it began training since the check
            raise NaluError(f"{path} is being written by another nalu process")
        backup = None
        if path.exists():
            backup = path.with_name(f".{path.name}.backup-{os.getpid()}")
            remove(backup)
            os.replace(path, backup)  # the locked directory moves with its lock
            faults.reached("backup")
        replacement = Replacement(path, backup)
        try:
            yield replacement
        except BaseException:
            if not replacement.committed:
                replacement.undo()
            raise
        replacement.commit()


def recover(path: Path) -> bool:
    """Clean up after a nalu process killed while replacing `path`; True if a live one is replacing it.

    An abandoned backup (its lock free) is put back when `path` is missing or an unusable
    output nalu began (a run without a checkpoint), and named in one line on stderr when `path`
    is usable (a run with a checkpoint, a whole SavedModel): the user chooses. Discards go, and so
    does a run directory begun in a temporary sibling (rundir.new_run_dir) or a SavedModel begun
    in one (rundir.atomic_path with `directory`) whose writer is gone.
    """
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        return False
    live = False
    pattern = glob.escape(str(path.parent / f".{path.name}"))
    for doomed in sorted(glob.glob(f"{pattern}.discard-*")):
        with _locked_dir(Path(doomed)) as held:
            if held:
                remove(Path(doomed))
    for name in sorted(glob.glob(f"{pattern}.tmp-*")):  # a run begun by a process killed before it appeared
        begun = Path(name)
        if _is_begun_run(begun) and not is_locked(begun):
            remove(begun)
    for temporary in _saved_model_temporaries(path):  # an export killed before its SavedModel was in place
        with _locked_dir(temporary) as held:
            if held and _is_saved_model_temporary(temporary):  # under the lock: no writer can begin in it
                remove(temporary)
    for name in sorted(glob.glob(f"{pattern}.backup-*")):
        backup = Path(name)
        with _locked_dir(backup) as held:
            if held is False:
                live = True
                continue
            if held is None:  # not a directory: nothing nalu moved aside
                continue
            kind = "run" if is_run_dir(backup) or _is_new_run(backup) else "SavedModel"
            if kind == "SavedModel" and not is_saved_model(backup):
                continue  # not something nalu writes: not nalu's to move
            if _usable(path, kind) or not _only_nalus(path):
                _note(f"{backup} is the earlier {kind} at {path}, left by a nalu process killed while replacing "
                      f"it; delete it to keep the new {path}, or move it back to {path}")
                continue
            try:
                _put_back(path, backup)
            except OSError as error:  # a read-only place: say where it is, and let a reader go on
                _note(f"{backup} holds the {kind} that was at {path} when a nalu process replacing it was "
                      f"killed; nalu cannot put it back ({error.strerror}): move it back to {path}")
                continue
            _note(f"put back the {kind} at {path}: a nalu process replacing it was killed before it finished")
    return live


def _saved_model_temporaries(path: Path) -> list[Path]:
    """The directories beside `path` named as `atomic_path(path, directory=True)` names its temporary."""
    pattern = glob.escape(str(path.parent / f".{path.stem}.tmp-")) + "*" + glob.escape(path.suffix)
    return [Path(name) for name in sorted(glob.glob(pattern))
            if is_temporary(Path(name).name, path.name) and Path(name).is_dir() and not Path(name).is_symlink()]


# TensorFlow writes saved_model.pb and fingerprint.pb to a temporary name, then renames it.
_TF_TEMPORARY = re.compile(r"(saved_model|fingerprint)\.pb\.tmp[0-9a-f]{32}")


def _is_saved_model_temporary(path: Path) -> bool:
    """Whether `path` holds nothing but what writing a nalu SavedModel puts there (nothing yet, too)."""
    return all(entry.name in SAVED_MODEL_NAMES or _TF_TEMPORARY.fullmatch(entry.name) for entry in path.iterdir())


def _put_back(path: Path, backup: Path | None) -> None:
    """`backup` to `path`, whatever is at `path` discarded: each step one rename, so a kill between
    them leaves a backup (put back next time) and a discard (deleted), never a half-deleted `path`."""
    if path.exists() or path.is_symlink():
        doomed = path.with_name(f".{path.name}.discard-{os.getpid()}")
        remove(doomed)
        os.replace(path, doomed)
        remove(doomed)
    if backup is not None:
        os.replace(backup, path)


def _usable(path: Path, kind: str) -> bool:
    """Whether the output at `path` is one nalu can use: a run it can resume, a whole SavedModel."""
    if kind == "run":
        return (path / CHECKPOINT_DIR / STATE_FILE).is_file()
    return is_saved_model(path) and (path / META_FILE).is_file()


def _only_nalus(path: Path) -> bool:
    """Whether `path` is missing or holds nothing but what nalu writes in a run or a SavedModel."""
    if not path.exists():
        return True
    if not path.is_dir() or path.is_symlink():
        return False
    return all(entry.name in NALU_NAMES or ".tmp-" in entry.name or ".old-" in entry.name
               for entry in path.iterdir())


@contextlib.contextmanager
def _locked_dir(path: Path | None):
    """An exclusive flock on a directory, not waiting: yields True if taken, False if another process
    holds it, None if there is no such directory (or `path` is None, or `path` stopped naming the
    directory locked before the lock was taken: deleted by the last holder, perhaps made anew)."""
    if path is None:
        yield None
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        try:
            here = os.path.samestat(os.stat(path), os.fstat(fd))
        except FileNotFoundError:
            here = False
        yield True if here else None
    finally:
        os.close(fd)  # closing the last descriptor drops the lock


_NOTED: set[str] = set()


def _note(message: str) -> None:
    """One line on stderr, once per process (a command may check the same output twice)."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"nalu: note: {message}", file=sys.stderr)

