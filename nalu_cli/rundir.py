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
import fcntl
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nalu_cli.errors import NaluError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoint"
LOCK_FILE = ".lock"
META_FILE = Path("assets.extra") / "nalu.json"
SAVED_MODEL_PB = "saved_model.pb"
INPUT_NAME = "x"
OUTPUT_NAME = "y"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling, then rename over `path`: readers see old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary sibling path to write a file or directory into; move it into place on success."""
    path = Path(path)
    # Keep the suffix: some writers (keras' .save) insist on it.
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / METRICS_FILE).exists()


def is_saved_model(path: Path) -> bool:
    return (path / SAVED_MODEL_PB).is_file()


def check_output(path: Path, overwrite: bool, kind: str) -> None:
    """Refuse an existing output unless --overwrite, and never replace something nalu did not write."""
    path = Path(path)
    if not path.exists():
        if path.parent.exists() and not path.parent.is_dir():
            raise NaluError(f"cannot create {path}: {path.parent} is not a directory")
        return
    if not overwrite:
        raise NaluError(f"{path} already exists; pass --overwrite to replace it")
    if not path.is_dir():
        raise NaluError(f"{path} exists and is not a directory; refusing to replace it")
    ours = is_run_dir(path) if kind == "run" else is_saved_model(path)
    if not ours and any(path.iterdir()):
        raise NaluError(f"{path} is not a nalu {kind} directory; refusing to overwrite it")
    if kind == "run" and is_locked(path):
        raise NaluError(f"{path} is being written by another nalu process")


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


def prepare_output(path: Path, overwrite: bool, kind: str) -> Path | None:
    """`check_output`, then move an old output aside and return where it went (or None).

    Restore it with `restore_backup` if the new write fails; `discard_backup` once it succeeds.
    """
    path = Path(path)
    check_output(path, overwrite, kind)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return None
    backup = path.with_name(f".{path.name}.backup-{os.getpid()}")
    _remove(backup)
    os.replace(path, backup)
    return backup


def restore_backup(path: Path, backup: Path | None) -> None:
    if backup is None:
        return
    _remove(Path(path))
    os.replace(backup, path)


def discard_backup(backup: Path | None) -> None:
    if backup is not None:
        _remove(backup)


@dataclass
class ModelSource:
    """Where a trained model lives: its SavedModel, its metadata, and its run directory if any."""

    saved_model: Path
    meta: dict
    run_dir: Path | None = None


def resolve_source(path: Path) -> ModelSource:
    """A run directory or a bare SavedModel written by nalu, or a clear error."""
    path = Path(path)
    if not path.exists():
        raise NaluError(f"no such file or directory: {path}")
    if not path.is_dir():
        raise NaluError(f"{path} is not a directory (expected a run directory or a SavedModel)")
    if is_run_dir(path):
        saved_model = path / SAVED_MODEL_DIR
        if not is_saved_model(saved_model):
            raise NaluError(f"run {path} has no SavedModel yet ({saved_model} is missing)")
        return ModelSource(saved_model, read_meta(saved_model), run_dir=path)
    if is_saved_model(path):
        return ModelSource(path, read_meta(path))
    raise NaluError(f"{path} is neither a nalu run directory nor a SavedModel")


def read_meta(saved_model: Path) -> dict:
    meta_path = saved_model / META_FILE
    if not meta_path.is_file():
        raise NaluError(f"SavedModel {saved_model} carries no task spec ({META_FILE} missing); "
                        "export it with `nalu export`")
    try:
        meta = json.loads(meta_path.read_text())
        meta["task"]["op"]
    except (ValueError, KeyError, TypeError):
        raise NaluError(f"task spec {meta_path} is corrupted") from None
    return meta


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


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NaluError(f"missing file: {path}") from None
    except ValueError:
        raise NaluError(f"corrupted JSON file: {path}") from None
