"""Success rates over many seeds: a grid of ops x architectures x seeds, on local processes or Ray.

The unit of work is (op, architecture, group of seeds): the group trains as
replicas in one graph (see training.ReplicaTrainer), and every seed of it yields
one result line. Groups are fixed by seed index (seeds [0..K), [K..2K), ...), so
results do not depend on the backend, the number of workers, or on resuming an
interrupted benchmark: an unfinished group is retrained whole.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nalu_cli.config import Config, from_dict, parse_architecture, resolve
from nalu_cli.errors import NaluError
from nalu_cli.formatting import format_number
from nalu_cli.rundir import run_lock

RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "settings.json"
WILSON_Z = 1.959963984540054  # two-sided 95%


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (Wilson 1927)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def parse_seeds(text: str) -> list[int]:
    """'4' -> 0..3;  '10:20' -> 10..19;  '3,5,8' -> those."""
    try:
        if ":" in text:
            lo, hi = (int(part) for part in text.split(":"))
            seeds = list(range(lo, hi))
        elif "," in text:
            seeds = [int(part) for part in text.split(",")]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise NaluError(f"--seeds must be N, LO:HI or a comma list, got '{text}'") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise NaluError(f"--seeds must give distinct non-negative seeds, got '{text}'")
    return seeds


@dataclass(frozen=True)
class Cell:
    op: str
    unit: str
    config: dict  # resolved config (seed is replaced per replica)


def make_cells(ops: list[str], units: list[str], base_settings: dict, steps: int | None) -> list[Cell]:
    cells = []
    for op in ops:
        for unit in units:
            overrides = {"task": {"op": op}, "training": {"steps": steps}}
            if unit != "default":
                overrides["model"] = parse_architecture(unit)
            config = resolve(base_settings, overrides)
            cells.append(Cell(op=op, unit=unit if unit != "default" else config.model.name, config=config.to_dict()))
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


def run_group(work: dict) -> list[dict]:
    """Train one group of seeds of one cell; one result dict per seed. Runs in a worker process."""
    from nalu_cli._tf import import_tensorflow, use_one_thread

    tf = import_tensorflow()
    use_one_thread(tf)  # workers fill the cores; one thread each is also the fastest per model
    from nalu_cli.evaluation import finite_or_none
    from nalu_cli.training import Replica, ReplicaTrainer

    config: Config = from_dict(work["config"])
    restarts = config.model.restart_count
    replicas = [replica for seed in work["seeds"] for replica in Replica.with_restarts(config, seed)]
    groups = [list(range(i * restarts, (i + 1) * restarts)) for i in range(len(work["seeds"]))]
    trainer = ReplicaTrainer(config.model, config.training, replicas)
    training = config.training
    results = trainer.fit(training.steps, training.eval_every, training.early_stop, groups=groups)
    records = []
    for seed, group in zip(work["seeds"], groups):
        chosen = trainer.chosen(group)  # the restart with the lowest interpolation MSE is the model
        replica, threshold, result = replicas[chosen], trainer.thresholds[chosen], results[chosen]
        record = {
            "op": work["op"],
            "unit": work["unit"],
            "seed": seed,
            "group": list(work["seeds"]),
            "restarts": restarts,
            "chosen_restart": chosen - group[0],
            "success": bool(result.extrapolation_mse < threshold),
            "solved_at_step": result.solved_at_step,
            "solved_at_seconds": result.solved_at_seconds,
            "interpolation_mse": finite_or_none(result.interpolation_mse),
            "extrapolation_mse": finite_or_none(result.extrapolation_mse),
            "threshold": float(threshold),
            "sparsity_error": trainer.sparsity_error(result.selected_params),
            "selected_step": result.selected_step,
            "selected_snapped": result.snapped,
            "selected_polished": result.polished,
            "steps_trained": max(results[r].stopped_at_step for r in group),
            "diverged_at_step": result.diverged_at_step,
            "settings": work["settings"],
        }
        if work["protocol"] == "trask":
            record.update(_normalized_errors(config, replica.spec, trainer, result))
        records.append(record)
    return records


def _normalized_errors(config: Config, spec, trainer, result) -> dict:
    from nalu_cli import tasks
    from nalu_cli.evaluation import normalized_error, random_baseline_mse

    datasets = {"interpolation": tasks.validation_set(spec), "extrapolation": tasks.test_set(spec)}
    baseline = random_baseline_mse(config.model, spec, datasets)
    return {
        "normalized_interpolation": normalized_error(result.interpolation_mse, baseline["interpolation"]),
        "normalized_extrapolation": normalized_error(result.extrapolation_mse, baseline["extrapolation"]),
    }


# -- the results file -------------------------------------------------------------------------------


def load_results(out: Path, key: str) -> list[dict]:
    """Finished seeds from an earlier (possibly interrupted) run with the same settings."""
    settings_path = out / SETTINGS_FILE
    if not settings_path.exists():
        return []
    try:
        previous = json.loads(settings_path.read_text())["key"]
    except (ValueError, KeyError):
        raise NaluError(f"{settings_path} is corrupted; use another --out") from None
    if previous != key:
        raise NaluError(f"{out} holds results of a benchmark with other settings; use another --out")
    records = []
    results_path = out / RESULTS_FILE
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill: that seed runs again
    return records


def _start_output(out: Path, key: str, description: dict) -> None:
    from nalu_cli.rundir import atomic_write_text

    if out.exists() and not out.is_dir():
        raise NaluError(f"{out} exists and is not a directory")
    if out.is_dir() and not (out / SETTINGS_FILE).exists() and any(out.iterdir()):
        raise NaluError(f"{out} is not a nalu benchmark directory; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SETTINGS_FILE).exists():
        atomic_write_text(out / SETTINGS_FILE, json.dumps({"key": key, **description}, indent=2) + "\n")


def _append(out: Path, records: list[dict]) -> None:
    with open(out / RESULTS_FILE, "a") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# -- running the grid -------------------------------------------------------------------------------


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


def run_benchmark(
    ops: list[str],
    units: list[str],
    seeds: list[int],
    out: Path,
    base_settings: dict | None = None,
    steps: int | None = None,
    replicas: int = 8,
    protocol: str = "mj",
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    on_results: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Run (or resume) the grid; returns every result record for the requested cells and seeds."""
    if replicas < 1:
        raise NaluError(f"--replicas must be at least 1, got {replicas}")
    cells = make_cells(ops, units, base_settings or {}, steps)
    key = settings_key(cells, replicas, protocol)
    out = Path(out)
    wanted = {(cell.op, cell.unit, seed) for cell in cells for seed in seeds}
    records = [r for r in load_results(out, key) if (r["op"], r["unit"], r["seed"]) in wanted]
    records = list({(r["op"], r["unit"], r["seed"]): r for r in records}.values())
    _start_output(out, key, {"ops": ops, "units": units, "replicas": replicas, "protocol": protocol})
    if on_results and records:
        on_results(records)
    work = plan(cells, seeds, replicas, key, protocol, {(r["op"], r["unit"], r["seed"]) for r in records})
    runner = {"local": _run_local, "ray": _run_ray}.get(backend)
    if runner is None:
        raise NaluError(f"unknown backend '{backend}' (choose from local, ray)")
    have = {(r["op"], r["unit"], r["seed"]) for r in records}

    def collect(group_records: list[dict]) -> None:
        fresh = [r for r in group_records if (r["op"], r["unit"], r["seed"]) not in have]
        have.update((r["op"], r["unit"], r["seed"]) for r in fresh)
        _append(out, fresh)
        records.extend(fresh)
        if on_results:
            on_results(fresh)

    if work:
        with run_lock(out):
            runner(work, collect, workers or os.cpu_count() or 1, ray_address)
    return sorted(records, key=lambda r: (ops.index(r["op"]), _unit_order(units, cells, r["unit"]), r["seed"]))


def _unit_order(units: list[str], cells: list[Cell], unit: str) -> int:
    names = list(dict.fromkeys(cell.unit for cell in cells))
    return names.index(unit) if unit in names else len(names)


def _run_local(work: list[dict], collect, workers: int, _address) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: TensorFlow's runtime does not survive a fork.
    pool = ProcessPoolExecutor(max_workers=min(workers, len(work)), mp_context=multiprocessing.get_context("spawn"))
    futures = [pool.submit(run_group, item) for item in work]
    try:
        for future in as_completed(futures):
            collect(future.result())
    except BaseException:
        # Interrupted: stop the workers now rather than let them finish groups nobody will record.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_ray(work: list[dict], collect, workers: int, address: str | None) -> None:
    try:
        import ray
    except ImportError:
        raise NaluError("the Ray backend needs the ray extra: pip install 'nalu-cli[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(num_cpus=workers, log_to_driver=False, include_dashboard=False, logging_level="ERROR")
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise NaluError(f"cannot connect to Ray at {address or 'a new local cluster'}: {error}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_group)
        pending = [remote.remote(item) for item in work]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            collect(ray.get(ready[0]))
    finally:
        if started_here:
            ray.shutdown()


# -- tables -------------------------------------------------------------------------------------------


def summarize(records: list[dict]) -> list[dict]:
    """One row per (op, unit): success rate with Wilson interval, medians over successful seeds."""
    cells: dict[tuple, list[dict]] = {}
    for record in records:
        cells.setdefault((record["op"], record["unit"]), []).append(record)
    rows = []
    for (op, unit), group in cells.items():
        solved = [r for r in group if r["success"]]
        low, high = wilson_interval(len(solved), len(group))
        rows.append(
            {
                "op": op,
                "unit": unit,
                "seeds": len(group),
                "successes": len(solved),
                "success_rate": len(solved) / len(group),
                "wilson_low": low,
                "wilson_high": high,
                "median_solved_at_step": _median([r["solved_at_step"] for r in solved]),
                "median_seconds_to_solve": _median([r["solved_at_seconds"] for r in solved]),
                "median_sparsity_error": _median([r["sparsity_error"] for r in solved]),
                "median_extrapolation_mse": _median([r["extrapolation_mse"] for r in group], missing=math.inf),
                "median_normalized_interpolation": _median([r.get("normalized_interpolation") for r in group]),
                "median_normalized_extrapolation": _median([r.get("normalized_extrapolation") for r in group]),
            }
        )
    return rows


def _median(values, missing=None):
    """Median of the values, a missing (non-finite) one counting as `missing` (None: left out)."""
    present = [v if v is not None else missing for v in values]
    present = [v for v in present if v is not None]
    return statistics.median(present) if present else None


OP_SYMBOLS = {"add": "a+b", "sub": "a-b", "mul": "a*b", "div": "a/b", "square": "a^2", "sqrt": "sqrt(a)"}


def mj_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["op", "unit", "success", "95% CI", "solved at (median step)", "seconds to solve", "sparsity error",
              "extrapolation MSE"]
    body = [
        [
            OP_SYMBOLS.get(row["op"], row["op"]),
            row["unit"],
            f"{row['successes']}/{row['seeds']} ({100 * row['success_rate']:.0f}%)",
            f"{100 * row['wilson_low']:.0f}-{100 * row['wilson_high']:.0f}%",
            format_number(int(row["median_solved_at_step"])) if row["median_solved_at_step"] is not None else "-",
            format_number(row["median_seconds_to_solve"], digits=3),
            format_number(row["median_sparsity_error"], digits=3),
            format_number(row["median_extrapolation_mse"], digits=3),
        ]
        for row in rows
    ]
    return header, body


def trask_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Trask et al. Table 1 layout: normalised error (random = 100), interpolation and extrapolation."""
    units = list(dict.fromkeys(row["unit"] for row in rows))
    ops = list(dict.fromkeys(row["op"] for row in rows))
    by_cell = {(row["op"], row["unit"]): row for row in rows}
    header = ["split", "op", *units]
    body = []
    for split in ("interpolation", "extrapolation"):
        for op in ops:
            values = [by_cell.get((op, unit), {}).get(f"median_normalized_{split}") for unit in units]
            body.append([split, OP_SYMBOLS.get(op, op), *[f"{v:.1f}" if v is not None else "-" for v in values]])
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)
