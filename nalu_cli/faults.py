"""Named points where nalu can be made to die as `kill -9` would, to prove what it leaves is usable.

    NALU_FAULT=POINT[:N][@BYTES] nalu train ...   (or nalu export ...)

The process SIGKILLs itself the N-th time (default: the first) it reaches POINT. With
@BYTES, the file just written there is first cut to BYTES bytes of what that write added:
the disk as a kill in the middle of the write leaves it. benchmarks/fault_injection.py kills
real `nalu train` processes at these points and checks that `--resume` ends where an
uninterrupted run does, or that an `--overwrite` killed part-way leaves the old run as it was;
its export part kills `nalu export` at `saved-model` and `keras`.
Unset (always, outside that script), a point costs one environment lookup.

Points (each right after what its name says):
    chunk-call             a compiled call of a chunk of steps (mid-chunk)
    metrics-line           a line appended to metrics.jsonl (before its checkpoint)
    checkpoint-arrays      checkpoint state.npz written, in the temporary directory
    checkpoint-scalars     checkpoint state.json written, in the temporary directory
    saved-model            the SavedModel written (or, exporting a bare SavedModel, copied), in the
                           temporary directory (@BYTES: its saved_model.pb)
    keras                  model.keras written, as a temporary file
    text:NAME              a temporary copy of NAME (summary.json, metrics.jsonl, config.yaml) written
    exchanged:NAME         a directory NAME (checkpoint, saved_model) exchanged with its new version,
                           the old one not yet deleted from the temporary name
    moved-aside:NAME       the same where the system cannot exchange: the old NAME renamed aside,
                           the new one not yet in its place
    run-begun              a new run's temporary directory made and locked, nothing in it yet
    run-created            a new run directory in place (config.yaml, empty metrics.jsonl), before training
    backup                 `--overwrite`: the old output moved aside, the new one not begun
    commit                 `--overwrite`: the new output usable (a run: its first checkpoint), the old not yet deleted
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

ENV = "NALU_FAULT"
_reached: Counter = Counter()


def reached(point: str, path: Path | None = None, start: int = 0) -> None:
    """Die here if NALU_FAULT names `point` and this is its N-th arrival. `path` is the file
    just written (from byte `start` on, for an append), for @BYTES."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, cut = spec.partition("@")
    target, _, count = name.rpartition(":")
    if not count.isdigit():
        target, count = name, "1"
    if target != point:
        return
    _reached[point] += 1
    if _reached[point] != int(count):
        return
    if cut and path is not None:
        os.truncate(path, min(start + int(cut), os.path.getsize(path)))
    kill()


def kill() -> None:
    """What a fault does: SIGKILL, which runs no cleanup at all."""
    os.kill(os.getpid(), signal.SIGKILL)
