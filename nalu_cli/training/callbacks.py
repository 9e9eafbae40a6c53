"""Callbacks on the trainer's evaluation events (the shape of keras.callbacks.Callback).

`RunWriter` is what makes a run directory out of a fit: at every evaluation it appends
the chosen restart's figures to metrics.jsonl, writes TensorBoard scalars and replaces the
checkpoint, then tells `on_progress` (the CLI's progress bar).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import tensorflow as tf

from nalu_cli import __version__, faults
from nalu_cli._tf import tensorflow_writes
from nalu_cli.errors import NaluError, as_write_error
from nalu_cli.rundir import CHECKPOINT_DIR, METRICS_FILE, TENSORBOARD_DIR, atomic_write_text, to_json
from nalu_cli.training.checkpoint import write_checkpoint

TENSORBOARD_SCALARS = ("loss", "interpolation_mse", "extrapolation_mse")


class Callback:
    """Hooks the trainer calls; override the ones you need."""

    def on_evaluation(self, trainer, entries: list[dict]) -> None:
        """After each evaluation (step 0 included): `entries` holds one metrics dict per replica."""


class Stopwatch:
    """A run's training seconds across resumes: those of earlier processes plus this one's."""

    def __init__(self, previous_seconds: float = 0.0):
        self.previous_seconds = previous_seconds
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return self.previous_seconds + time.perf_counter() - self.started


class RunWriter(Callback):
    """Writes a run directory as training goes: metrics.jsonl, TensorBoard, the checkpoint.

    `group` is the run's restarts: each line is the figures of the one chosen so far (lowest
    interpolation MSE). A context manager: the files are closed however the fit ends.
    """

    def __init__(self, out: Path, group: list[int], stopwatch: Stopwatch, config: dict,
                 on_progress: Callable[[dict], None] | None = None, on_checkpoint: Callable[[], None] | None = None,
                 members: list[dict] | None = None):
        self.out, self.group, self.stopwatch = Path(out), group, stopwatch
        self.config, self.on_progress = config, on_progress  # the checkpoint carries the config that made it
        self.members = members  # and, if given, each architecture's settings (run.member_settings)
        self.on_checkpoint = on_checkpoint  # told after each checkpoint is written
        with tensorflow_writes(self.out / TENSORBOARD_DIR):
            self.tensorboard = tf.summary.create_file_writer(str(self.out / TENSORBOARD_DIR))
        self.metrics = open(self.out / METRICS_FILE, "a")

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, kind, error, trace) -> None:
        failures = []
        for close in (self.metrics.close, self._close_tensorboard):
            try:
                close()
            except (OSError, NaluError) as failure:
                failures.append(failure)
        if failures and kind is None:  # after an error, that one is reported (closing on a full disk fails too)
            raise as_write_error(failures[0], self.out) or failures[0]

    def _close_tensorboard(self) -> None:
        with tensorflow_writes(self.out / TENSORBOARD_DIR):
            self.tensorboard.close()

    def on_evaluation(self, trainer, entries: list[dict]) -> None:
        chosen, seconds = trainer.chosen(self.group), self.stopwatch.seconds()
        step = trainer.step
        entry = {
            **entries[chosen],
            **({"restart": chosen} if len(self.group) > 1 else {}),
            "success_threshold": float(trainer.thresholds[chosen]),
            "elapsed_seconds": round(seconds, 4),
            "steps_per_second": step / (seconds - trainer.polish_seconds) if step else 0.0,
        }
        start = os.fstat(self.metrics.fileno()).st_size  # each line is flushed: the file's end
        try:
            self.metrics.write(to_json(entry) + "\n")
            self.metrics.flush()
        except OSError as error:
            raise as_write_error(error, self.out / METRICS_FILE) or error from None
        faults.reached("metrics-line", self.out / METRICS_FILE, start)
        arrays, scalars = trainer.checkpoint().arrays_and_scalars()
        write_checkpoint(self.out / CHECKPOINT_DIR, arrays, {**scalars, "train_seconds": seconds, "config": self.config,
                                                             "nalu_version": __version__,
                                                             **({"members": self.members} if self.members else {})})
        if self.on_checkpoint:
            self.on_checkpoint()
        with tensorflow_writes(self.out / TENSORBOARD_DIR), self.tensorboard.as_default(step=step):
            for key in TENSORBOARD_SCALARS:
                if entry[key] is not None and math.isfinite(entry[key]):
                    tf.summary.scalar(key, entry[key])
        if self.on_progress:
            self.on_progress({**entry, "total_steps": self.config["training"]["steps"]})


def truncate_metrics(path: Path, step: int | None) -> None:
    """Rewrite metrics.jsonl with only the lines `kept_metrics` keeps."""
    if path.exists():
        atomic_write_text(path, "".join(line + "\n" for line in kept_metrics(path, step)))


def kept_metrics(path: Path, step: int | None) -> list[str]:
    """The metrics lines up to the checkpoint at `step` (None: no checkpoint, none): lines written
    after it (before a hard kill) go, and so does a last line a kill cut short. Any other line that
    is not a metrics entry, or a file that no longer reaches the checkpoint's step, is one error."""
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            entry_step = entry["step"]
        except (ValueError, KeyError, TypeError):
            if number == len(lines):
                break  # torn by a kill mid-write: the checkpoint is older than this line anyway
            raise NaluError(f"{path} line {number} is not a metrics entry; restore the file or "
                            "start the run again with --overwrite") from None
        if step is not None and entry_step <= step:
            kept.append(line)
    last = json.loads(kept[-1])["step"] if kept else None
    if step is not None and last != step:  # each checkpoint is written after its metrics line
        reached = f"ends at step {last:,}" if kept else "has no entries"
        raise NaluError(f"{path} {reached} but the run's checkpoint is at step {step:,}: lines were lost; restore "
                        "the file or start the run again with --overwrite")
    return kept
