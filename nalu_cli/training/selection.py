"""Selection, on interpolation validation MSE only: plain numpy over every replica's figures.

At each evaluation every replica has candidates: its current weights and, where the
trainer makes them, their snapped form and the polished weights (and those snapped).
A replica's selected checkpoint is the candidate with the lowest interpolation MSE seen
so far; its extrapolation MSE is recorded, never compared. A replica is solved once its
selected checkpoint meets the success criterion, and stops there with early stopping;
restarts of one model stop together once their chosen member (lowest interpolation MSE)
is solved. No TensorFlow here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A replica whose chunk goes non-finite is restored with half the learning rate; after this
# many such events it is frozen at its last good state and reported as diverged.
MAX_DIVERGENCE_EVENTS = 5


@dataclass(frozen=True)
class Candidate:
    """Weights competing for selection at one evaluation, for every replica at once (numpy)."""

    interpolation: np.ndarray  # [R] MSE on the validation set: what selection compares
    extrapolation: np.ndarray  # [R] MSE on the test set: recorded only
    params: list  # one {name: [R, ...] array} per layer
    snapped: bool = False
    polished: bool = False

    @property
    def name(self) -> str:
        """'' for the current weights, else 'snapped', 'polished' or 'polished_snapped'."""
        return "_".join(kind for kind, on in (("polished", self.polished), ("snapped", self.snapped)) if on)

    def replica_params(self, r: int) -> list[dict]:
        return [{name: value[r] for name, value in layer.items()} for layer in self.params]


@dataclass
class ReplicaResult:
    """What training made of one replica: its selected checkpoint and when it was solved or stopped."""

    selected_step: int = 0
    selected_params: list | None = None
    interpolation_mse: float = math.inf
    extrapolation_mse: float = math.inf
    solved_at_step: int | None = None
    solved_at_seconds: float | None = None
    diverged_at_step: int | None = None
    stopped_at_step: int | None = None
    snapped: bool = False  # the selected checkpoint is the snapped (exact-valued) version of the weights
    polished: bool = False  # ... or the weights after the polish step


@dataclass
class ReplicaStatus:
    """Per replica: still training, learning-rate scale, non-finite chunks so far."""

    active: np.ndarray
    lr_scale: np.ndarray
    divergence_events: np.ndarray

    @classmethod
    def start(cls, replicas: int) -> "ReplicaStatus":
        return cls(np.ones(replicas, bool), np.ones(replicas, np.float32), np.zeros(replicas, np.int64))


def record_divergence(status: ReplicaStatus, finite: np.ndarray, results, step: int) -> None:
    """After a chunk: an active replica that went non-finite (and was rolled back) learns at half
    the rate from now on; after MAX_DIVERGENCE_EVENTS it stops, reported as diverged at `step`."""
    diverged = status.active & ~finite
    status.divergence_events += diverged
    status.lr_scale[diverged] *= 0.5
    gave_up = diverged & (status.divergence_events >= MAX_DIVERGENCE_EVENTS)
    status.active &= ~gave_up
    for r in np.flatnonzero(gave_up):
        results[r].diverged_at_step = step


def eligible(candidate: Candidate, active: bool) -> bool:
    """A stopped replica (solved, diverged, or done with its group) gets no new polished
    candidates, so it ends where it would have trained alone."""
    return active or not candidate.polished


def select(results: list[ReplicaResult], candidates: list[Candidate], active: np.ndarray, step: int) -> None:
    """Each replica keeps the candidate with the lowest interpolation MSE so far (in candidate order on ties)."""
    for r, result in enumerate(results):
        for candidate in candidates:
            interpolation = float(candidate.interpolation[r])
            if eligible(candidate, active[r]) and math.isfinite(interpolation) and interpolation < result.interpolation_mse:
                result.selected_step = step
                result.selected_params = candidate.replica_params(r)
                result.interpolation_mse = interpolation
                result.extrapolation_mse = float(candidate.extrapolation[r])
                result.snapped, result.polished = candidate.snapped, candidate.polished


def entries(results, candidates: list[Candidate], status: ReplicaStatus, losses: np.ndarray, step: int) -> list[dict]:
    """One metrics entry per replica: its loss, every eligible candidate's MSEs, its selected step."""
    rows = []
    for r, result in enumerate(results):
        row = {
            "step": step,
            "loss": float(losses[r]) if np.isfinite(losses[r]) else None,
            "divergence_events": int(status.divergence_events[r]),
        }
        for candidate in candidates:
            if eligible(candidate, status.active[r]):
                prefix = f"{candidate.name}_" if candidate.name else ""
                row[f"{prefix}interpolation_mse"] = float(candidate.interpolation[r])
                row[f"{prefix}extrapolation_mse"] = float(candidate.extrapolation[r])
        row["selected_step"] = result.selected_step
        rows.append(row)
    return rows


def mark_solved(results: list[ReplicaResult], thresholds: np.ndarray, step: int, seconds: float) -> None:
    """Solved: the model training would hand out now (the selected one) meets the criterion."""
    for result, threshold in zip(results, thresholds):
        if result.solved_at_step is None and result.extrapolation_mse < threshold:
            result.solved_at_step, result.solved_at_seconds = step, seconds


def chosen(results: list[ReplicaResult], group: list[int]) -> int:
    """The member of a group of restarts with the lowest interpolation MSE (selection never sees extrapolation)."""
    return min(group, key=lambda r: (results[r].interpolation_mse, r))


def stop(results, status: ReplicaStatus, thresholds, groups: list[list[int]], early_stop: bool, step: int) -> None:
    """With early_stop, solved replicas stop, and whole groups once their chosen member is solved;
    every replica not active any more gets its stopped-at step."""
    if early_stop:
        status.active &= ~np.array([r.extrapolation_mse < t for r, t in zip(results, thresholds)], dtype=bool)
        for group in groups:
            best = chosen(results, group)
            if results[best].extrapolation_mse < thresholds[best]:
                status.active[group] = False
    mark_stopped(results, status.active, step)


def mark_stopped(results: list[ReplicaResult], active: np.ndarray, step: int) -> None:
    for result, running in zip(results, active):
        if not running and result.stopped_at_step is None:
            result.stopped_at_step = step
