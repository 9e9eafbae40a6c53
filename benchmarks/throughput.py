"""Training speed and memory, side by side in one run: what `make bench` reports.

    make bench     # or: .venv/bin/python benchmarks/throughput.py [--parts single,sizes] [--repeats 5] [--json]

Parts (all by default; timed parts interleave their contenders --repeats times and report medians):
  single    the single-model training step, NAU -> NMU on a*b at batch 128, data drawn in-graph:
            nalu with `optimizer: adam` (the numpy reference's exact maths) and with split-adam
            (the default), against the hand-written numpy step (benchmarks/numpy_reference.py).
  sizes     the same model (split-adam) at input_size 100, 1,000 and 10,000: steps/s, and
            beside it the data generation alone (tasks.sample_batch_tf in a compiled loop).
  restarts  the default model's restarts per second: replica-steps/s of the trainer `nalu train`
            builds for one seed (replicas.members(config, [0]): NAU -> gated and NAU -> NaiNPU,
            6 restarts each); training steps only, not the evaluations and polish between them.
  solve     whole-process wall time and peak memory of `nalu train --op mul`, `--op div` and
            `--task recurrent --op mul` (seed 0, the default model, early stop), --solve-repeats
            runs each, interleaved.
  memory    peak memory of `nalu benchmark --seeds 2 --workers 2 --steps 2000` (all six ops), and of
            the same with `--task recurrent --ops add,mul`; and a 2,000-step NAU -> NMU `nalu train` at
            input_size 10,000: its wall time, peak RSS and the training's share.
  startup   `nalu --help` wall time, median of 5.
The in-process parts run TensorFlow on one thread (--threads), as `nalu train` runs one model;
`restarts` is also timed, each in a process of its own, as `nalu train` runs the default model
(a TF thread per architecture, up to the cores, the architectures stepped side by side) and on
TF's default thread pools.
Processes are measured by benchmarks/process_peak.py (wall time, peak RSS as /usr/bin/time,
and the process tree's summed RSS and PSS). Figures move with machine load: the 1-minute
load average is printed at the start and the end; quote ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy_reference  # noqa: E402

PARTS = ("single", "sizes", "restarts", "solve", "memory", "startup")
SIZES = (100, 1_000, 10_000)
BATCH = 128
RESTART_STEPS = 2_000  # per timed run of `restarts`
# Issue 15's measurements, the figures `sizes` is compared with.
ISSUE_SIZE_RATES = {100: 15_000, 1_000: 3_200, 10_000: 370}
TRAIN_LIMIT_MIB, BENCHMARK_LIMIT_MIB, NUMPY_RATIO_FLOOR = 1024, 2048, 1.5


# -- in-process training rates ----------------------------------------------------------------------
def nau_nmu_trainer(input_size: int = 100, optimizer: str = "split-adam"):
    """One NAU -> NMU model on a*b; small validation and test sets (only training is timed)."""
    from nalu_cli.config import resolve
    from nalu_cli.training import Replica, ReplicaTrainer

    task = {"op": "mul", "input_size": input_size, "validation_size": 1_000, "test_size": 1_000}
    training = {"snap_selection": False, "optimizer": optimizer}
    config = resolve({"task": task, "model": {"layers": ["nau", "nmu"]}, "training": training})
    trainer = ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, 0)])
    trainer.train(50)  # trace and compile outside the timed region
    return trainer


def default_model_members() -> list:
    """The members of the default model `nalu train --op mul --seed 0` trains."""
    from nalu_cli.config import resolve
    from nalu_cli.training.replicas import members

    return members(resolve({"task": {"op": "mul"}}), [0])[0]


def default_model_trainer():
    """What `nalu train --op mul --seed 0` trains: every restart of every member of the default model."""
    from nalu_cli.training import ReplicaTrainer

    trainer = ReplicaTrainer.of(default_model_members())
    trainer.train(50)
    return trainer


def data_only_loop(input_size: int):
    """run(n): n training batches of the a*b task drawn in one compiled loop, and nothing else."""
    import tensorflow as tf

    from nalu_cli import tasks
    from nalu_cli.config import resolve
    from nalu_cli.training import Replica

    replica = Replica.for_seed(resolve({"task": {"op": "mul", "input_size": input_size}}), 0)

    @tf.function(autograph=False, jit_compile=True)
    def draw(n):
        def body(step, total):
            x, y = tasks.sample_batch_tf(replica.spec, BATCH, replica.data_seed, step)
            return step + 1, total + tf.reduce_sum(x) + tf.reduce_sum(y)  # used, so nothing is skipped

        return tf.while_loop(lambda step, _: step < n, body, (tf.constant(0, tf.int64), tf.constant(0.0)))[1]

    def run(n: int):
        draw(tf.constant(n, tf.int64)).numpy()

    run(10)
    return run


def timed(run, steps: int):
    """A contender: () -> steps per second of run(steps)."""

    def rate() -> float:
        started = time.perf_counter()
        run(steps)
        return steps / (time.perf_counter() - started)

    return rate


def interleaved_medians(contenders: dict, repeats: int) -> dict:
    """{name: median rate} of contenders {name: () -> rate}, each timed once per round."""
    rates = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, rate in contenders.items():
            rates[name].append(rate())
    return {name: statistics.median(values) for name, values in rates.items()}


def single_part(args) -> dict:
    adam, split = nau_nmu_trainer(optimizer="adam"), nau_nmu_trainer()
    numpy_reference.run(200)  # warm numpy/BLAS
    medians = interleaved_medians(
        {
            "nalu_adam": timed(adam.train, args.steps),
            "nalu_split_adam": timed(split.train, args.steps),
            "numpy": lambda: numpy_reference.run(args.steps)["steps_per_second"],  # its loop alone, as nalu's train
        },
        args.repeats,
    )
    return {
        "nalu_adam_steps_per_second": round(medians["nalu_adam"]),
        "nalu_split_adam_steps_per_second": round(medians["nalu_split_adam"]),
        "numpy_steps_per_second": round(medians["numpy"]),
        "nalu_adam_over_numpy": round(medians["nalu_adam"] / medians["numpy"], 2),
    }


def sizes_part(args) -> dict:
    contenders = {}
    for size in SIZES:
        steps = max(50, 1_000_000 // size)  # about a second each at the issue's rates
        contenders[f"step_{size}"] = timed(nau_nmu_trainer(size).train, steps)
        contenders[f"data_{size}"] = timed(data_only_loop(size), steps)
    medians = interleaved_medians(contenders, args.repeats)
    rows = {}
    for size in SIZES:
        step, data = medians[f"step_{size}"], medians[f"data_{size}"]
        rows[str(size)] = {
            "steps_per_second": round(step),
            "data_only_batches_per_second": round(data),
            "step_microseconds": round(1e6 / step, 1),
            "step_ns_per_input_number": round(1e9 / step / (BATCH * size), 2),
            "data_share_of_step": round(step / data, 2),  # (1 / data) / (1 / step)
        }
    return {"by_input_size": rows}


THREAD_LABELS = {"one": "one thread", "architectures": "a thread per architecture", "pools": "TF thread pools"}


def restarts_part(args) -> dict:
    """On this process's threads, and (from one thread) as `nalu train` runs it and on TF's pools,
    each in a process of its own (TF's threads are set once per process)."""
    trainer = default_model_trainer()
    median = interleaved_medians({"portfolio": timed(trainer.train, RESTART_STEPS)}, args.repeats)["portfolio"]
    report = {
        "threads": args.threads,
        "default_model_replicas": len(trainer.replicas),
        "default_model_steps_per_second": round(median),
        "default_model_restart_steps_per_second": round(median * len(trainer.replicas)),
    }
    if args.threads == "one":
        for threads in ("architectures", "pools"):
            command = [sys.executable, __file__, "--parts", "restarts", "--threads", threads,
                       "--repeats", str(args.repeats), "--json"]
            other = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)["restarts"]
            report[f"{threads}_restart_steps_per_second"] = other["default_model_restart_steps_per_second"]
    return report


# -- whole processes ---------------------------------------------------------------------------------
def nalu_command() -> list[str]:
    """The `nalu` a user runs: the venv's script beside this Python, else `python -m nalu_cli`."""
    script = Path(sys.executable).with_name("nalu")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nalu_cli"]


def measure_process(command: list[str], xla_cache: str = "off") -> dict:
    """benchmarks/process_peak.py's figures for `command`, from a small process of its own, with the
    XLA cache (nalu_cli/xla_cache.py) in the directory `xla_cache`, or off: the cache in the user's
    home would make a figure depend on what ran before."""
    completed = subprocess.run(
        [sys.executable, str(HERE / "process_peak.py"), "--", *command], capture_output=True, text=True, check=True,
        env={**os.environ, "NALU_XLA_CACHE": xla_cache},
    )
    figures = json.loads(completed.stdout)
    if figures["exit_code"]:
        raise RuntimeError(f"{' '.join(command)} exited {figures['exit_code']}: {completed.stderr[-2000:]}")
    return figures


# The `nalu train` runs the solve part times: a label, and the arguments before --seed 0.
SOLVE_RUNS = {"mul": ("--op", "mul"), "div": ("--op", "div"), "recurrent mul": ("--task", "recurrent", "--op", "mul")}


def solve_part(args) -> dict:
    """Seed 0 of each run, `solve_repeats` times, with the XLA cache warm: a run of seed 1 before
    them compiled the graphs (the cache's entries serve any seed), as for a user's second run."""
    runs = {label: [] for label in SOLVE_RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "xla")
        for label in runs:
            measure_process([*nalu_command(), "train", *SOLVE_RUNS[label], "--seed", "1", "--steps", "1000",
                             "--out", str(Path(tmp) / f"{label.replace(' ', '-')}-warm-up")], xla_cache=cache)
        for repeat in range(args.solve_repeats):
            for label, done in runs.items():
                out = Path(tmp) / f"{label.replace(' ', '-')}-{repeat}"
                figures = measure_process([*nalu_command(), "train", *SOLVE_RUNS[label], "--seed", "0",
                                           "--out", str(out)], xla_cache=cache)
                summary = json.loads((out / "summary.json").read_text())
                done.append({**figures, **{key: summary[key] for key in
                                           ("success", "solved_at_step", "train_seconds", "polish_seconds")}})
    report = {}
    for label, done in runs.items():
        walls = [run["wall_seconds"] for run in done]
        report[label] = {
            "runs": len(done),
            "solved": sum(bool(run["success"]) for run in done),
            "solved_at_steps": list(dict.fromkeys(run["solved_at_step"] for run in done)),  # one, if reproducible
            "wall_seconds_median": round(statistics.median(walls), 1),
            "wall_seconds_range": [min(walls), max(walls)],
            "train_seconds_median": round(statistics.median(run["train_seconds"] for run in done), 1),
            "polish_seconds_median": round(statistics.median(run["polish_seconds"] for run in done), 1),
            "peak_rss_mib": max(run["largest_process_peak_rss_mib"] for run in done),
        }
    return {"time_to_solve": report,
            "nalu_train_peak_rss_mib": max(op_report["peak_rss_mib"] for op_report in report.values())}


# The `nalu benchmark` runs the memory part measures: a report key, and (its name in the verdict,
# the arguments after `benchmark`).
MEMORY_RUNS = {
    "nalu_benchmark_2_workers": ("2 workers", ("--seeds", "2", "--workers", "2", "--steps", "2000")),
    "nalu_benchmark_recurrent_2_workers": ("recurrent, 2 workers", ("--task", "recurrent", "--ops", "add,mul",
                                                                    "--seeds", "2", "--workers", "2", "--steps", "2000")),
}


# A run at a large input: what its fixed parts cost (setup, the evaluation sets, writing) beside its
# training (issue 15: "a run's fixed costs must not grow with the input size").
LARGE_INPUT_SIZE = 10_000
LARGE_INPUT_RUN = ("--unit", "nau-nmu", "--op", "mul", "--steps", "2000")


def memory_part(args) -> dict:
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, (_, arguments) in MEMORY_RUNS.items():
            figures = measure_process([*nalu_command(), "benchmark", *arguments, "--out", str(Path(tmp) / key)])
            report[key] = {name: figures[name] for name in
                           ("wall_seconds", "tree_peak_rss_mib", "tree_peak_pss_mib", "largest_process_peak_rss_mib")}
        config, out = Path(tmp) / "large.yaml", Path(tmp) / "large"
        config.write_text(f"task: {{input_size: {LARGE_INPUT_SIZE}}}\n")
        figures = measure_process([*nalu_command(), "train", "--config", str(config), *LARGE_INPUT_RUN, "--out", str(out)])
        summary = json.loads((out / "summary.json").read_text())
        report["large_input_train"] = {"wall_seconds": figures["wall_seconds"],
                                       "peak_rss_mib": figures["largest_process_peak_rss_mib"],
                                       "train_seconds": summary["train_seconds"]}
    return report


def startup_part(args) -> dict:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([*nalu_command(), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return {"nalu_help_seconds": round(statistics.median(times), 3)}


RUNNERS = {"single": single_part, "sizes": sizes_part, "restarts": restarts_part, "solve": solve_part,
           "memory": memory_part, "startup": startup_part}


# -- report ------------------------------------------------------------------------------------------
def grid(rows: list[tuple], align: str) -> list[str]:
    """Rows of cells as aligned text; `align` has an l or r per column."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(align))]
    pad = {"l": str.ljust, "r": str.rjust}
    return ["  ".join(pad[align[i]](cell, widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def verdict(met: bool, target: str) -> str:
    return f"target {target}: {'met' if met else 'NOT MET'}"


def lines(report: dict) -> list[str]:
    """The report as `make bench` prints it."""
    out = []
    if "single" in report:
        single = report["single"]
        ratio = single["nalu_adam_over_numpy"]
        out += ["", "Single-model step, NAU -> NMU on a*b, batch 128, data drawn in the step:"] + grid([
            ("  nalu, `optimizer: adam` (the reference's maths)", f"{single['nalu_adam_steps_per_second']:,} steps/s"),
            ("  nalu, split-adam (the default)", f"{single['nalu_split_adam_steps_per_second']:,} steps/s"),
            ("  numpy reference (benchmarks/numpy_reference.py)", f"{single['numpy_steps_per_second']:,} steps/s"),
            ("  nalu adam / numpy", f"{ratio:.2f}x", verdict(ratio >= NUMPY_RATIO_FLOOR, f">= {NUMPY_RATIO_FLOOR}x")),
        ], "lrl")
    if "sizes" in report:
        rows = [("  input_size", "steps/s", "data alone", "step ns per", "data alone", "issue 15"),
                ("", "", "(batches/s)", "input number", "/ step time", "measured")]
        for size, row in report["sizes"]["by_input_size"].items():
            rows.append((f"  {int(size):,}", f"{row['steps_per_second']:,}", f"{row['data_only_batches_per_second']:,}",
                         f"{row['step_ns_per_input_number']:.2f}", f"{row['data_share_of_step']:.2f}",
                         f"{ISSUE_SIZE_RATES[int(size)]:,}"))
        out += ["", "The same model (split-adam) by input size:"] + grid(rows, "lrrrrr")
    if "restarts" in report:
        restarts = report["restarts"]
        out += ["", f"Default model, its {restarts['default_model_replicas']} restarts of one seed "
                    "(training steps only): "
                    f"{restarts['default_model_restart_steps_per_second']:,} restart-steps/s "
                    f"({restarts['default_model_steps_per_second']:,} steps/s), "
                    f"{THREAD_LABELS[restarts['threads']]}"]
        if "architectures_restart_steps_per_second" in restarts:
            out.append(f"  as `nalu train` runs it, a thread per architecture (a process of its own, after): "
                       f"{restarts['architectures_restart_steps_per_second']:,} restart-steps/s")
        if "pools_restart_steps_per_second" in restarts:
            out.append(f"  on TF's thread pools (a process of its own, after): "
                       f"{restarts['pools_restart_steps_per_second']:,} restart-steps/s")
    if any(part in report for part in ("solve", "memory", "startup")):
        rows = [("  command", "wall time", "peak RSS", "")]
        for label, solve in report.get("solve", {}).get("time_to_solve", {}).items():
            low, high = solve["wall_seconds_range"]
            steps = ", ".join(f"{step:,}" if step is not None else "-" for step in solve["solved_at_steps"])
            rows.append((f"  nalu train {' '.join(SOLVE_RUNS[label])} --seed 0", f"{solve['wall_seconds_median']} s",
                         f"{solve['peak_rss_mib']:,} MiB",
                         f"median of {solve['runs']} ({low}-{high} s), XLA cache warm; solved "
                         f"{solve['solved']}/{solve['runs']}, at step {steps}; polish {solve['polish_seconds_median']} s"))
        memory = report.get("memory", {})
        benchmarks = [(key, memory[key]) for key in MEMORY_RUNS if key in memory]  # not the large-input run
        for key, bench in benchmarks:
            rows.append((f"  nalu benchmark {' '.join(MEMORY_RUNS[key][1])}", f"{bench['wall_seconds']} s",
                         f"{bench['tree_peak_rss_mib']:,} MiB",
                         f"all processes (PSS {bench['tree_peak_pss_mib']:,} MiB; largest process "
                         f"{bench['largest_process_peak_rss_mib']:,} MiB)"))
        if "large_input_train" in memory:
            large = memory["large_input_train"]
            rows.append((f"  nalu train {' '.join(LARGE_INPUT_RUN)} (input_size {LARGE_INPUT_SIZE:,})",
                         f"{large['wall_seconds']} s", f"{large['peak_rss_mib']:,} MiB",
                         f"training {large['train_seconds']} s of it"))
        if "startup" in report:
            rows.append(("  nalu --help", f"{report['startup']['nalu_help_seconds']} s", "", "median of 5"))
        out += ["", "Whole processes:"] + grid(rows, "lrrl")
        if "solve" in report:
            peak = report["solve"]["nalu_train_peak_rss_mib"]
            out.append(f"  nalu train peak RSS {peak:,} MiB: {verdict(peak < TRAIN_LIMIT_MIB, '< 1 GiB')}")
        for key, bench in benchmarks:
            peak = bench["tree_peak_rss_mib"]
            out.append(f"  nalu benchmark ({MEMORY_RUNS[key][0]}) peak RSS, all processes, {peak:,} MiB: "
                       f"{verdict(peak < BENCHMARK_LIMIT_MIB, '< 2 GiB')}")
    return out


def parse_parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        print(f"throughput.py: --parts takes a comma list of {', '.join(PARTS)}; got {text!r}", file=sys.stderr)
        sys.exit(2)
    return [part for part in PARTS if part in parts]  # in the order they are reported


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the interleaved timings")
    parser.add_argument("--steps", type=int, default=10_000, help="steps per timed run of `single`")
    parser.add_argument("--solve-repeats", type=int, default=3, help="`nalu train` runs per op (solve)")
    parser.add_argument("--threads", choices=("one", "architectures", "pools"), default="one",
                        help="TensorFlow's threads for the timed models (one: as `nalu train` runs a single model; "
                             "architectures: as it runs the default model)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    parts = parse_parts(args.parts)

    started, load_before = time.perf_counter(), os.getloadavg()[0]
    if {"single", "sizes", "restarts"} & set(parts):
        from nalu_cli._tf import import_tensorflow, use_threads

        tf = import_tensorflow()
        if args.threads == "one":  # as `nalu train` runs one model (pools: TF's default thread pools)
            use_threads(tf)
        elif args.threads == "architectures":  # as `nalu train` runs the default model
            from nalu_cli.training.run import train_threads

            use_threads(tf, train_threads(default_model_members()))
    report = {part: RUNNERS[part](args) for part in parts}
    report["machine"] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "load_1min_start_end": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "bench_seconds": round(time.perf_counter() - started),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    machine = report["machine"]
    print(f"make bench, {machine['date']}: {machine['cpus']} CPUs, 1-minute load {machine['load_1min_start_end'][0]} "
          f"at the start and {machine['load_1min_start_end'][1]} at the end; {machine['bench_seconds']} s; "
          f"rates are medians of {args.repeats} interleaved rounds")
    print("\n".join(lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
