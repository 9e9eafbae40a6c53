"""The training checkpoint: everything needed to continue a run exactly, as arrays and scalars.

    checkpoint/state.npz   weights, optimiser moments, selected weights, replica status
    checkpoint/state.json  step, polish time, every replica's result, train_seconds, the config, nalu_version,
                           each architecture's settings (members)

Keys: "{params,m,v,mc,vc}/{layer}/{weight}" (a portfolio's architectures' layers numbered on from
one to the next), "selected/{replica}/{layer}/{weight}" (the layers of the replica's architecture),
"active", "lr_scale", "divergence_events". The directory is replaced whole (rundir.atomic_path):
a crash leaves the old checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nalu_cli import faults
from nalu_cli.errors import NaluError
from nalu_cli.rundir import STATE_FILE, atomic_path, to_json
from nalu_cli.training.selection import ReplicaResult, ReplicaStatus

ARRAYS_FILE, SCALARS_FILE = "state.npz", STATE_FILE  # state.json last: a checkpoint exists once it does


@dataclass
class Checkpoint:
    """A trainer's state in numpy: `trees` holds params and moments, each one {name: array} per layer."""

    trees: dict  # "params", "m", "v", "mc", "vc" -> [{name: [R, ...] array}]
    status: ReplicaStatus
    results: list
    step: int
    polish_seconds: float

    def arrays_and_scalars(self) -> tuple[dict, dict]:
        arrays = {}
        for kind, tree in self.trees.items():
            for index, layer in enumerate(tree):
                for name, value in layer.items():
                    arrays[f"{kind}/{index}/{name}"] = value
        for r, result in enumerate(self.results):
            for index, layer in enumerate(result.selected_params or []):
                for name, value in layer.items():
                    arrays[f"selected/{r}/{index}/{name}"] = value
        arrays["active"] = self.status.active.copy()
        arrays["lr_scale"] = self.status.lr_scale.copy()
        arrays["divergence_events"] = self.status.divergence_events.copy()
        scalars = {
            "step": self.step,
            "polish_seconds": self.polish_seconds,
            "results": [{k: v for k, v in vars(result).items() if k != "selected_params"} for result in self.results],
        }
        return arrays, scalars

    @classmethod
    def from_arrays_and_scalars(cls, arrays: dict, scalars: dict, like: dict, selected_like: list) -> "Checkpoint":
        """Rebuild a checkpoint; `like` gives the trees' structure (the trainer's own, fresh) and
        `selected_like[r]` that of replica r's weights (its architecture's layers)."""
        trees = {}
        for kind, tree in like.items():
            keys = [f"{kind}/{i}/{name}" for i, layer in enumerate(tree) for name in layer]
            missing = [key for key in keys if key not in arrays]
            if missing:
                raise NaluError(f"checkpoint has no {missing[0]}: it was written by another nalu version or optimizer")
            trees[kind] = [{name: arrays[f"{kind}/{i}/{name}"] for name in layer} for i, layer in enumerate(tree)]
        status = ReplicaStatus(
            arrays["active"].astype(bool), arrays["lr_scale"].astype(np.float32), arrays["divergence_events"].astype(np.int64)
        )
        results = []
        for r, fields in enumerate(scalars["results"]):
            result = ReplicaResult(**{k: (math.inf if v is None and k.endswith("_mse") else v) for k, v in fields.items()})
            prefix = f"selected/{r}/"
            if any(key.startswith(prefix) for key in arrays):
                result.selected_params = [
                    {name: arrays[f"{prefix}{index}/{name}"] for name in layer} for index, layer in enumerate(selected_like[r])
                ]
            results.append(result)
        return cls(trees, status, results, int(scalars["step"]), float(scalars.get("polish_seconds", 0.0)))


def write_checkpoint(path: Path, arrays: dict, scalars: dict) -> None:
    """Atomically replace the checkpoint directory: a crash leaves the old one or the new one, whole."""
    with atomic_path(path, directory=True) as tmp:
        np.savez(tmp / ARRAYS_FILE, **arrays)
        faults.reached("checkpoint-arrays", tmp / ARRAYS_FILE)
        (tmp / SCALARS_FILE).write_text(to_json(scalars))
        faults.reached("checkpoint-scalars", tmp / SCALARS_FILE)


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    try:
        with np.load(path / ARRAYS_FILE) as data:
            arrays = {key: data[key] for key in data.files}
        scalars = json.loads((path / SCALARS_FILE).read_text())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise NaluError(f"checkpoint {path} is unreadable ({error}); "
                        "start the run again with --overwrite") from None
    return arrays, scalars


def has_checkpoint(path: Path) -> bool:
    return (Path(path) / SCALARS_FILE).is_file()
