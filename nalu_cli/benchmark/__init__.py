"""Success rates over many seeds: a grid of ops x architectures x seeds, on local processes or Ray.

The unit of work is (op, architecture, group of seeds): the group trains as
replicas in one graph (see training.ReplicaTrainer), and every seed of it yields
one result line. Groups are fixed by seed index (seeds [0..K), [K..2K), ...), so
results do not depend on the backend, the number of workers, or on resuming an
interrupted benchmark: an unfinished group is retrained whole.

Layout: grid.py (cells, seed groups, the settings key), worker.py (what a worker trains),
runners.py (local processes, Ray), results.py (the output directory), tables.py (summaries).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from nalu_cli.benchmark.grid import DEFAULT_REPLICAS, Cell, make_cells, parse_seeds, plan, settings_key
from nalu_cli.benchmark.results import (
    RESULTS_FILE,
    SETTINGS_FILE,
    append_results,
    load_results,
    repair_results,
    start_output,
)
from nalu_cli.benchmark.runners import RUNNERS
from nalu_cli.benchmark.tables import markdown, mj_table, summarize, trask_table, wilson_interval
from nalu_cli.benchmark.worker import run_group
from nalu_cli import magnitudes
from nalu_cli.config import from_dict
from nalu_cli.errors import NaluError, WriteError, as_write_error
from nalu_cli.outputs import check_writable
from nalu_cli.rundir import run_lock

__all__ = [
    "RESULTS_FILE",
    "SETTINGS_FILE",
    "Cell",
    "load_results",
    "make_cells",
    "markdown",
    "mj_table",
    "parse_seeds",
    "plan",
    "run_benchmark",
    "run_group",
    "settings_key",
    "summarize",
    "trask_table",
    "wilson_interval",
]


def run_benchmark(
    ops: list[str],
    units: list[str],
    seeds: list[int],
    out: Path,
    base_settings: dict | None = None,
    steps: int | None = None,
    replicas: int = DEFAULT_REPLICAS,
    protocol: str = "mj",
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    on_results: Callable[[list[dict]], None] | None = None,
    kind: str | None = None,
) -> list[dict]:
    """Run (or resume) the grid; returns every result record for the requested cells and seeds.

    `kind` (static or recurrent) overrides task.kind of base_settings."""
    if replicas < 1:
        raise NaluError(f"--replicas must be at least 1, got {replicas}")
    cells = make_cells(ops, units, base_settings or {}, steps, kind)
    for cell in cells:
        magnitudes.check_config(from_dict(cell.config), seeds)  # targets float32 cannot train on: before any work
    key = settings_key(cells, replicas, protocol)
    out = Path(out)
    wanted = {(cell.op, cell.unit, seed) for cell in cells for seed in seeds}
    records = list({cell_seed(r): r for r in load_results(out, key) if cell_seed(r) in wanted}.values())
    start_output(out, key, {"ops": ops, "units": units, "replicas": replicas, "protocol": protocol})
    if on_results and records:
        on_results(records)
    have = {cell_seed(r) for r in records}
    work = plan(cells, seeds, replicas, key, protocol, have)
    runner = RUNNERS.get(backend)
    if runner is None:
        raise NaluError(f"unknown backend '{backend}' (choose from local, ray)")

    def collect(group_records: list[dict]) -> None:
        fresh = [r for r in group_records if cell_seed(r) not in have]
        have.update(cell_seed(r) for r in fresh)
        try:
            append_results(out, fresh)
        except (OSError, WriteError) as error:
            failure = as_write_error(error, out / RESULTS_FILE)
            if failure is None:
                raise
            raise NaluError(f"{failure}; the seeds finished before are kept: rerun the same command "
                            "to resume once the disk has room or the place is writable") from None
        records.extend(fresh)
        if on_results:
            on_results(fresh)

    if work:
        check_writable(out)  # results will be appended: a read-only place or a full disk is one line now
        with run_lock(out):
            repair_results(out)  # a line a kill cut short, before anything is appended to it
            runner(work, collect, workers or os.cpu_count() or 1, ray_address)
    return sorted(records, key=lambda r: (ops.index(r["op"]), units.index(r["unit"]), r["seed"]))


def cell_seed(record: dict) -> tuple:
    """What a result line is keyed by: its cell (op, unit as given) and seed."""
    return record["op"], record["unit"], record["seed"]
