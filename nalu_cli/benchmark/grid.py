"""The grid of a benchmark: which cells (op x architecture) and which groups of seeds to train.

A cell holds its resolved config; a work item is one group of seeds of one cell, trained
as replicas in one graph. `settings_key` says which earlier results are comparable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from nalu_cli.config import SEED_LIMIT, parse_architecture, resolve
from nalu_cli.errors import NaluError


# More seeds than anyone trains in one benchmark, few enough to hold as a list.
MAX_SEEDS = 100_000
# Seeds a group (`--replicas`): a group trains until its slowest seed is done, so small groups waste
# less, and a worker's next group of the cell reuses its graphs (architecture.Graphs). The default
# table (`nalu benchmark --seeds 20`, two workers) took 280 s in groups of 8, 268 s of 4, 239 s of 2,
# 240 s of 1, every number the same (README, "Speed and memory").
DEFAULT_REPLICAS = 2


def parse_seeds(text: str) -> list[int]:
    """'4' -> 0..3;  '10:20' -> 10..19;  '3,5,8' -> those."""
    try:
        if ":" in text:
            lo, hi = (int(part) for part in text.split(":"))
            bounds = range(lo, hi)
        elif "," in text:
            bounds = [int(part) for part in text.split(",")]
        else:
            bounds = range(int(text))
    except ValueError:
        raise NaluError(f"--seeds must be N, LO:HI or a comma list, got '{text}'") from None
    if not bounds:
        raise NaluError(f"--seeds must give at least one seed, got '{text}'")
    # A range's ends and length, not its elements: '0:5000000000' is refused without counting to five billion.
    lowest, highest = (bounds[0], bounds[-1]) if isinstance(bounds, range) else (min(bounds), max(bounds))
    if lowest < 0 or highest >= SEED_LIMIT:
        raise NaluError(f"--seeds must give distinct seeds in [0, 2^32), got '{text}'")
    if len(bounds) > MAX_SEEDS:
        raise NaluError(f"--seeds gives {len(bounds):,} seeds; at most {MAX_SEEDS:,} at a time")
    seeds = list(bounds)
    if len(set(seeds)) != len(seeds):
        raise NaluError(f"--seeds must give distinct seeds in [0, 2^32), got '{text}'")
    return seeds


@dataclass(frozen=True)
class Cell:
    op: str
    unit: str
    config: dict  # resolved config (seed is replaced per replica)


def make_cells(
    ops: list[str], units: list[str], base_settings: dict, steps: int | None, kind: str | None = None
) -> list[Cell]:
    """One cell per (op, unit), named by the unit as given: results are keyed by (op, unit, seed),
    so two cells must never share a name ('default' is nau-gated with restarts, not `nau-gated`).

    `kind` (static or recurrent; None: as base_settings say) overrides task.kind in every cell."""
    cells = []
    for op in dict.fromkeys(ops):
        for unit in dict.fromkeys(units):
            overrides = {"task": {"op": op, "kind": kind}, "training": {"steps": steps}}
            if unit != "default":
                overrides["model"] = parse_architecture(unit)
            config = resolve(base_settings, overrides)
            cells.append(Cell(op=op, unit=unit, config=config.to_dict()))
    return cells


def settings_key(cells: list[Cell], replicas: int, protocol: str) -> str:
    """What makes two benchmarks' results comparable line for line.

    nalu's version is part of it: a release that trains differently (a new default optimiser,
    a unit's initialisation) must not resume, and silently mix with, an older run's results.
    """
    from nalu_cli import __version__

    blob = json.dumps(
        {"cells": [c.config for c in cells], "replicas": replicas, "protocol": protocol, "nalu": __version__},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(cells: list[Cell], seeds: list[int], replicas: int, key: str, protocol: str, done: set) -> list[dict]:
    """Work items for every group with a seed not yet in the results."""
    groups = [tuple(seeds[i : i + replicas]) for i in range(0, len(seeds), replicas)]
    work = []
    for cell in cells:
        for group in groups:
            if all((cell.op, cell.unit, seed) in done for seed in group):
                continue
            work.append(
                {"op": cell.op, "unit": cell.unit, "seeds": group, "config": cell.config,
                 "settings": key, "protocol": protocol}
            )
    return work
