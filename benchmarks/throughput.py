"""Training throughput, side by side in one run: nalu's step, a hand-written numpy step, and replicas.

    make bench            # or: .venv/bin/python benchmarks/throughput.py [--repeats 5]

Trains the same two-layer NAU -> NMU model on the multiplication task at batch 128:
  1. nalu's own training step (ReplicaTrainer, one model; data drawn in-graph) with
     `optimizer: adam`, the reference's exact maths; nalu's default split-adam is timed too,
  2. the numpy reference (benchmarks/numpy_reference.py: forward, backward, Adam, clipping),
  3. nalu's replica trainer at R = 32 (32 models in one graph),
interleaving the three `--repeats` times and printing medians and ratios. Then the
start-up and memory figures: `nalu --help` wall time (median of 5) and the peak RSS of
a `nalu train` process. Figures move with machine load; quote ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy_reference  # noqa: E402


def nalu_trainer(replicas: int, optimizer: str = "adam"):
    """NAU -> NMU on a*b. `adam` is the numpy reference's exact step; nalu's default,
    split-adam, is timed separately (it does more work per step)."""
    from nalu_cli.config import resolve
    from nalu_cli.training import Replica, ReplicaTrainer

    training = {"snap_selection": False, "optimizer": optimizer}
    config = resolve({"task": {"op": "mul"}, "model": {"layers": ["nau", "nmu"]}, "training": training})
    trainer = ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, s) for s in range(replicas)])
    trainer.train(50)  # trace the graph outside the timed region
    return trainer


def time_trainer(trainer, steps: int) -> float:
    started = time.perf_counter()
    trainer.train(steps)
    return steps / (time.perf_counter() - started)


def help_seconds(repeats: int = 5) -> float:
    nalu = Path(sys.executable).with_name("nalu")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([str(nalu), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


MEASURE_CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def train_peak_rss_mib(steps: int = 20_000) -> float:
    """Peak resident memory of a real `nalu train --op mul` process.

    Measured through a small intermediate Python: a child forked straight from this
    (large) process would count this process's pages in its own peak until it execs.
    """
    nalu = Path(sys.executable).with_name("nalu")
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(nalu), "train", "--op", "mul", "--steps", str(steps), "--out", str(Path(tmp) / "run")]
        completed = subprocess.run(
            [sys.executable, "-c", MEASURE_CHILD, *command], check=True, capture_output=True, text=True
        )
    return int(completed.stdout.strip()) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4000, help="steps per timed single-model run")
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from nalu_cli._tf import import_tensorflow

    import_tensorflow()
    single = nalu_trainer(1)
    single_split = nalu_trainer(1, "split-adam")
    many = nalu_trainer(args.replicas)
    numpy_reference.run(200)  # warm numpy/BLAS
    replica_steps = max(100, args.steps // 8)
    rates = {"nalu": [], "nalu_split_adam": [], "numpy": [], "replicas": []}
    for _ in range(args.repeats):
        rates["nalu"].append(time_trainer(single, args.steps))
        rates["nalu_split_adam"].append(time_trainer(single_split, args.steps))
        rates["numpy"].append(numpy_reference.run(args.steps)["steps_per_second"])
        rates["replicas"].append(args.replicas * time_trainer(many, replica_steps))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    report = {
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
        "date": time.strftime("%Y-%m-%d"),
        "repeats": args.repeats,
        "nalu_steps_per_second": round(medians["nalu"]),
        "nalu_split_adam_steps_per_second": round(medians["nalu_split_adam"]),
        "numpy_steps_per_second": round(medians["numpy"]),
        f"replicas_{args.replicas}_model_steps_per_second": round(medians["replicas"]),
        "nalu_over_numpy": round(medians["nalu"] / medians["numpy"], 3),
        f"replicas_{args.replicas}_over_nalu_single": round(medians["replicas"] / medians["nalu"], 2),
        "benchmark_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "nalu_help_seconds": round(help_seconds(), 3),
        "nalu_train_peak_rss_mib": round(train_peak_rss_mib()),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    width = max(len(key) for key in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
