"""The run directory and the files in it; atomic writes; telling a run from a SavedModel.

Layout of a run directory:
    config.yaml      the resolved config that made the run
    metrics.jsonl    one JSON object per evaluation
    model.keras      the selected checkpoint (lowest interpolation validation MSE)
    saved_model/     the same checkpoint as a TensorFlow SavedModel (serving_default: x -> y)
    summary.json     final figures: selected step, errors, success, speed
    tensorboard/     TensorBoard scalars
    checkpoint/      the full training state after the last evaluation (for --resume)
A SavedModel written by nalu carries `assets.extra/nalu.json` (task spec and model
config), so eval and extrapolate need nothing else. No TensorFlow import here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nalu_cli import faults
from nalu_cli.errors import WRITE_ERRNOS, NaluError, WriteError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoint"
LOCK_FILE = ".lock"
STATE_FILE = "state.json"  # in CHECKPOINT_DIR: written last, so a checkpoint exists once it does
META_FILE = Path("assets.extra") / "nalu.json"
SAVED_MODEL_PB = "saved_model.pb"
# Every name nalu (and TensorFlow for it) writes at the top of an exported SavedModel.
SAVED_MODEL_NAMES = frozenset({
    SAVED_MODEL_PB, "variables", "assets", "assets.extra", "fingerprint.pb", KERAS_FILE, "model.tflite", "model.onnx",
})
# Every name nalu writes at the top of a run directory or an exported SavedModel.
NALU_NAMES = SAVED_MODEL_NAMES | {
    CONFIG_FILE, METRICS_FILE, SAVED_MODEL_DIR, SUMMARY_FILE, TENSORBOARD_DIR, CHECKPOINT_DIR, LOCK_FILE,
    "training_curves.png",
}
INPUT_NAME = "x"
OUTPUT_NAME = "y"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling, then rename over `path`: readers see old or new, never half."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        faults.reached(f"text:{Path(path).name}", tmp)


@contextlib.contextmanager
def atomic_path(path: Path, directory: bool = False):
    """Yield a temporary sibling path to write a file or directory into; move it into place on success.

    A file replaces the old one in one rename; a directory is exchanged with the old one in one
    step (Linux renameat2), so a kill leaves the old or the new at `path`, never neither.
    With `directory`, the temporary is made here, an empty directory, and an flock on it is held
    until it is in place: a kill leaves it unlocked, which is how `outputs.recover` knows it is
    abandoned (its pid could be reused; the kernel drops the lock however the writer dies).
    """
    path = Path(path)
    # Keep the suffix: some writers (keras' .save) insist on it.
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    held = None
    try:
        with _named_failures(path):
            remove(tmp)
            held = _locked_new_dir(tmp) if directory else None
        try:
            with _named_failures(path):
                yield tmp
        except BaseException:
            with contextlib.suppress(OSError):  # best effort: the place may refuse this too
                remove(tmp)
            raise
        with _named_failures(path):
            _into_place(tmp, path)
    finally:
        if held is not None:
            os.close(held)  # drops the lock


def _locked_new_dir(path: Path) -> int:
    """Make the directory `path` and hold an exclusive flock on it; returns the descriptor (closing it
    drops the lock). `outputs.recover` in another process may delete the directory in the instant
    before it is locked: it is made again until the one locked is the one at `path`."""
    for _ in range(100):
        os.mkdir(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a recover deletes it
        try:
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise OSError(errno.EAGAIN, "another process kept deleting it", str(path))


@contextlib.contextmanager
def _named_failures(path: Path):
    """A failed write (disk full, read-only, ...) as a WriteError naming `path`, not a temporary sibling."""
    try:
        yield
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        raise WriteError(f"cannot write {path}: {error.strerror}") from None


def _into_place(tmp: Path, path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        if _exchange(tmp, path):
            faults.reached(f"exchanged:{path.name}")
            remove(tmp)  # the old one, now
            return
        old = path.with_name(f".{path.name}.old-{os.getpid()}")  # no exchange: finish_interrupted_writes finds it
        os.replace(path, old)
        faults.reached(f"moved-aside:{path.name}")
        os.replace(tmp, path)
        remove(old)
        return
    os.replace(tmp, path)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if libc.renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def restore_replaced(path: Path) -> None:
    """A directory `atomic_path` was replacing without an exchange, when a kill came between its
    two renames: the old one back at `path` (call with the directory's writer lock held)."""
    path = Path(path)
    if not path.exists():
        for old in sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*")):
            os.replace(old, path)
            return


# What the process holding a run's lock (train, resume) writes there, each with `atomic_path`.
RUN_WRITES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, KERAS_FILE, SAVED_MODEL_DIR, CHECKPOINT_DIR)


def is_temporary(entry: str, name: str) -> bool:
    """Whether `entry` is a temporary `atomic_path` makes to replace `name`: `.STEM.tmp-PID.SUFFIX`
    (the new one) or `.NAME.old-PID` (the old one, where it cannot exchange)."""
    stem, suffix = Path(name).stem, Path(name).suffix
    return bool(re.fullmatch(rf"\.{re.escape(stem)}\.tmp-\d+{re.escape(suffix)}|\.{re.escape(name)}\.old-\d+", entry))


def finish_interrupted_writes(run_dir: Path) -> None:
    """Complete the writes a killed run process left half done in `run_dir`: a directory killed
    between its two renames gets its old version back (`restore_replaced`; resume makes the new one
    again: it redoes the steps after the old checkpoint, and saves the model at its end), and the
    temporaries of its writes go (a new checkpoint or model not yet in place, an old one exchanged
    out but not yet deleted). Call it holding the run's lock: then nothing alive writes these names."""
    run_dir = Path(run_dir)
    for name in (SAVED_MODEL_DIR, CHECKPOINT_DIR):
        restore_replaced(run_dir / name)
    for entry in sorted(run_dir.iterdir()):
        if any(is_temporary(entry.name, name) for name in RUN_WRITES):
            remove(entry)


def remove(path: Path) -> None:
    """Delete a file or a directory tree; nothing if it is not there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def new_run_dir(out: Path, config_text: str):
    """Create the run directory `out` whole (config.yaml, an empty metrics.jsonl, its lock held for
    the block): made in a temporary sibling and renamed into place, so there is never a directory
    at `out` that nalu could neither resume nor overwrite. `out` must not exist."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    remove(tmp)
    made = _locked_new_dir(tmp)  # `recover` deletes an empty one only once this lock is free
    try:
        with run_lock(tmp):  # the lock file moves with the directory, still locked
            os.close(made)
            made = None
            faults.reached("run-begun")
            atomic_write_text(tmp / CONFIG_FILE, config_text)
            (tmp / METRICS_FILE).touch()
            try:
                os.rename(tmp, out)
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                raise NaluError(f"{out} already exists; pass --overwrite to replace it") from None
            faults.reached("run-created")
            yield
    finally:
        if made is not None:
            os.close(made)
        remove(tmp)  # left only if the rename did not happen


def read_run_config(run_dir: Path, steps: int | None = None):
    """The config a run was made with (config.yaml), `steps` replacing its step budget if given.

    config.yaml is written whole (atomically), but a disk or a copy can cut it short: if it is
    the beginning of the config the run's checkpoint carries, that config is the run's. Any other
    problem is one error naming the file.
    """
    from nalu_cli.config import resolve
    from nalu_cli.config_files import parse_yaml

    path = Path(run_dir) / CONFIG_FILE
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise NaluError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    whole = _checkpoint_config_text(Path(run_dir))
    if whole is not None and text != whole and whole.startswith(text):
        text = whole
    try:
        return resolve(parse_yaml(text, path), {"training": {"steps": steps}})
    except NaluError as error:
        raise NaluError(f"{path}: {error}; put it back, or start the run again with --overwrite") from None


def _checkpoint_config_text(run_dir: Path) -> str | None:
    """config.yaml as the run's checkpoint says it was, or None (no checkpoint, or one without a config)."""
    from nalu_cli.config import resolve
    from nalu_cli.config_files import dump_yaml

    try:
        saved = json.loads((run_dir / CHECKPOINT_DIR / STATE_FILE).read_text())["config"]
        return dump_yaml(resolve(saved))
    except (OSError, ValueError, KeyError, TypeError, NaluError):
        return None


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / METRICS_FILE).exists()


def is_saved_model(path: Path) -> bool:
    return (path / SAVED_MODEL_PB).is_file()


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold an exclusive lock on an output directory (run or benchmark): a second writer is refused, not interleaved."""
    handle = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise NaluError(f"{out} is being written by another nalu process") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def is_locked(path: Path) -> bool:
    """Whether a nalu process holds the run directory's lock right now."""
    lock = Path(path) / LOCK_FILE
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@dataclass
class ModelSource:
    """Where a trained model lives: its SavedModel, its metadata, and its run directory if any."""

    saved_model: Path
    meta: dict
    run_dir: Path | None = None


def resolve_source(path: Path) -> ModelSource:
    """A run directory or a bare SavedModel written by nalu, or a clear error."""
    from nalu_cli.outputs import recover

    path = Path(path)
    recover(path)  # a run or SavedModel a killed nalu was replacing
    if not path.exists():
        raise NaluError(f"no such file or directory: {path}")
    if not path.is_dir():
        raise NaluError(f"{path} is not a directory (expected a run directory or a SavedModel)")
    if is_run_dir(path):
        saved_model = path / SAVED_MODEL_DIR
        if not is_saved_model(saved_model):
            summary = path / SUMMARY_FILE
            if summary.is_file() and '"selected_step": null' in summary.read_text():
                raise NaluError(f"run {path} has no model: none of its evaluations had a finite interpolation MSE "
                                f"(see {summary})")
            raise NaluError(f"run {path} has no SavedModel yet ({saved_model} is missing)")
        return ModelSource(saved_model, read_meta(saved_model, path), run_dir=path)
    if is_saved_model(path):
        return ModelSource(path, read_meta(path))
    raise NaluError(f"{path} is neither a nalu run directory nor a SavedModel")


def read_meta(saved_model: Path, run_dir: Path | None = None) -> dict:
    """The task spec and model config a nalu SavedModel carries (`run_dir`: the run it belongs to)."""
    meta_path = saved_model / META_FILE
    if not meta_path.is_file():
        raise NaluError(f"SavedModel {saved_model} carries no task spec ({META_FILE} missing); "
                        "export it with `nalu export`")
    try:
        meta = json.loads(meta_path.read_text())
        meta["task"]["op"]
    except (ValueError, KeyError, TypeError):
        fix = rewrite_hint(run_dir) if run_dir else "export the model again (nalu export RUN --out DIR --overwrite)"
        raise NaluError(f"task spec {meta_path} is damaged; {fix}") from None
    return meta


def rewrite_hint(run_dir: Path) -> str:
    """What to do about a damaged file a run writes from its checkpoint (its model, summary)."""
    return f"`nalu train --resume {run_dir}` writes it again from the run's checkpoint"


def jsonable(value):
    """`value` as JSON can hold it: inf and NaN (which JSON lacks) become null, numpy scalars plain numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and type(value).__module__ == "numpy":  # a numpy scalar, without importing numpy
        return jsonable(value.item())
    return value


def to_json(value, indent: int | None = None) -> str:
    """JSON text of `value` with inf and NaN as null: strict JSON, which any parser reads."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)


def read_json(path: Path, fix: str = "") -> dict:
    """A JSON object from a file, or one error naming it (and `fix`, what to do about damage)."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NaluError(f"missing file: {path}") from None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise NaluError(f"{path} is damaged (not a JSON object){'; ' + fix if fix else ''}")
    return value
