"""Callbacks on the trainer's evaluation events (the shape of keras.callbacks.Callback).

`RunWriter` is what makes a run directory out of a fit: at every evaluation it appends
the chosen restart's figures to metrics.jsonl, writes TensorBoard scalars and replaces the
checkpoint, then tells `on_progress` (the CLI's progress bar).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import tensorflow as tf

from nalu_cli.errors import NaluError
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
                 on_progress: Callable[[dict], None] | None = None):
        self.out, self.group, self.stopwatch = Path(out), group, stopwatch
        self.config, self.on_progress = config, on_progress  # the checkpoint carries the config that made it
        self.tensorboard = tf.summary.create_file_writer(str(self.out / TENSORBOARD_DIR))
        self.metrics = open(self.out / METRICS_FILE, "a")

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.metrics.close()
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
        self.metrics.write(to_json(entry) + "\n")
        self.metrics.flush()
        arrays, scalars = trainer.checkpoint().arrays_and_scalars()
        write_checkpoint(self.out / CHECKPOINT_DIR, arrays, {**scalars, "train_seconds": seconds, "config": self.config})
        with self.tensorboard.as_default(step=step):
            for key in TENSORBOARD_SCALARS:
                if entry[key] is not None and math.isfinite(entry[key]):
                    tf.summary.scalar(key, entry[key])
        if self.on_progress:
            self.on_progress({**entry, "total_steps": self.config["training"]["steps"]})


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines past the checkpoint (written after it, before a hard kill), and a last
    line a kill cut short; any other line that is not a metrics entry is one clear error."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
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
        if entry_step <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
