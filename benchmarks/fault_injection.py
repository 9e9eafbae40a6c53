"""Kill or stop `nalu train` (and `nalu export`, `nalu benchmark`) anywhere, check nothing is lost: a table a part.

    .venv/bin/python benchmarks/fault_injection.py [--only TEXT ...] [--parts train,signals,cost,export,benchmark]

train      `nalu train` is killed at the named points of nalu_cli/faults.py (NALU_FAULT; some
           cut the file just written at a byte), at times, and twice (its resume killed too),
           in a fresh run and in an `--overwrite` of an older run. Then, as a user would: a
           killed `--overwrite` is looked at with `nalu eval`, which must find the old run
           restored byte for byte or the new one; a run directory is continued with
           `nalu train --resume` until it finishes (where none appeared, the first command runs
           again). Every finished run must equal an uninterrupted one bit for bit: metrics.jsonl
           and summary.json (timings aside), the model.keras weights, the SavedModel's outputs on
           fixed inputs, the final checkpoint's arrays and scalars; and nothing of the dead
           processes may be left in or beside it (a backup nalu names in one line excepted).
           Cases marked "no exchange" run where directories cannot be swapped in one step
           (renameat2 unavailable): a directory is replaced in two renames.
signals    Ctrl-C, SIGTERM and two Ctrl-C of `nalu train` with eval_every 400,000 (a chunk of
           about 10 s), 2 s into its first chunk: seconds from the signal to summary.json and to
           the process's exit, its exit code, and whether the run can be resumed.
cost       training speed (NAU -> NMU, 200,000 steps, in this process) with a chunk cut into
           calls of about step.CALL_SECONDS, so that Ctrl-C is answered, against one compiled
           call for the whole chunk: 5 runs each, interleaved.
export     `nalu export` killed mid-write, fresh and in an --overwrite, then `nalu eval` or the
           export again (export_kills.py).
benchmark  `nalu benchmark` with 2 local workers, stopped hard or by signal (benchmark_kills.py).

Each process imports TensorFlow (about 3.5 s), so the whole takes minutes; tests/ holds the
fast in-process checks. Seconds and speeds move with the machine's load. Exits 1 if any case
differs (signals: a stop that is not exit 130 with a resumable run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

NALU = [sys.executable, "-m", "nalu_cli"]
# The same command where renameat2 cannot exchange two directories (some file systems): two renames.
NALU_NO_EXCHANGE = [sys.executable, "-c", "import sys; import nalu_cli.rundir as r; r._exchange = lambda a, b: False; "
                    "sys.argv[0] = 'nalu'; from nalu_cli.cli import main; main()"]
# The default model (2 restarts) on a*b, a polish every 1,000 steps: 7 evaluations and checkpoints.
CONFIG = """\
task: {op: mul, input_size: 20}
model: {restarts: 2}
training: {steps: 3000, eval_every: 500, early_stop: false, polish_every: 1000, polish_iterations: 30}
seed: 4
"""
# The run an --overwrite replaces: another seed, shorter.
OLD_CONFIG = CONFIG.replace("seed: 4", "seed: 5").replace("steps: 3000", "steps: 1000")
TIMING = {"elapsed_seconds", "steps_per_second", "train_seconds", "wall_seconds", "polish_seconds",
          "solved_at_seconds"}


@dataclass
class Case:
    """The kills in turn: a NALU_FAULT for the first command, then one for each command after it,
    until they run out and the last one finishes. A number: SIGKILL that many seconds after the run
    directory appears (in an --overwrite: after the old one is moved aside; for a later command:
    after it starts). ("Ctrl-C", s): SIGINT s seconds after the first metrics line (the run stops
    and saves its model, so that its resume replaces them)."""

    kills: list
    overwrite: bool = False
    no_exchange: bool = False


CASES = {
    "mid-chunk (1st call)": Case(["chunk-call:1"]),
    "mid-chunk (later call)": Case(["chunk-call:6"]),
    "new run's temporary directory, only its .lock": Case(["run-begun"]),
    "new run directory in place, before training": Case(["run-created"]),
    "before the first checkpoint": Case(["metrics-line:1"]),
    "metrics line torn at byte 40": Case(["metrics-line:3@40"]),
    "first checkpoint's state.npz at byte 1000": Case(["checkpoint-arrays:1@1000"]),
    "state.npz at byte 5000": Case(["checkpoint-arrays:3@5000"]),
    "state.json at byte 10": Case(["checkpoint-scalars:3@10"]),
    "checkpoint exchanged, the old not yet deleted": Case(["exchanged:checkpoint:2"]),
    "old checkpoint aside, new not in place (no exchange)": Case(["moved-aside:checkpoint:2"], no_exchange=True),
    "final saved_model.pb at byte 2000": Case(["saved-model@2000"]),
    "final model.keras at byte 100": Case(["keras@100"]),
    "final summary.json written, not renamed": Case(["text:summary.json"]),
    "resume killed truncating metrics.jsonl": Case(["chunk-call:6", "text:metrics.jsonl"]),
    "resume killed in its first chunk": Case(["exchanged:checkpoint:2", "chunk-call:1"]),
    "Ctrl-C, resume killed with the old saved_model exchanged": Case([("Ctrl-C", 0.3), "exchanged:saved_model"]),
    "Ctrl-C, resume killed with the old saved_model aside (no exchange)":
        Case([("Ctrl-C", 0.3), "moved-aside:saved_model"], no_exchange=True),
    "Ctrl-C, resume killed writing model.keras": Case([("Ctrl-C", 0.3), "keras@100"]),
    "at 0.5 s": Case([0.5]),
    "at 2 s": Case([2.0]),
    "at 4 s": Case([4.0]),
    "at 6 s": Case([6.0]),
    "at 2 s, its resume at 5 s": Case([2.0, 5.0]),
    "--overwrite: old run moved aside": Case(["backup"], overwrite=True),
    "--overwrite: new run's temporary directory": Case(["run-begun"], overwrite=True),
    "--overwrite: new run in place, before training": Case(["run-created"], overwrite=True),
    "--overwrite: first checkpoint's state.json at byte 10": Case(["checkpoint-scalars:1@10"], overwrite=True),
    "--overwrite: first checkpoint in place, old not yet deleted": Case(["commit"], overwrite=True),
    "--overwrite: second checkpoint (old deleted)": Case(["checkpoint-arrays:2"], overwrite=True),
    "--overwrite: 0.5 s after the old run moved aside": Case([0.5], overwrite=True),
    "--overwrite: 2 s after the old run moved aside": Case([2.0], overwrite=True),
}


def nalu(args: list, fault: str | None = None, after: float | None = None, sig: int = signal.SIGKILL,
         ready=None, no_exchange: bool = False) -> subprocess.CompletedProcess:
    """Run nalu; with `after`, send it `sig` that many seconds after `ready()` first says yes (or
    after the start)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if fault:
        env["NALU_FAULT"] = fault
    command = [*(NALU_NO_EXCHANGE if no_exchange else NALU), *map(str, args)]
    if after is None:
        return subprocess.run(command, env=env, capture_output=True, text=True)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while ready is not None and process.poll() is None and not ready():
        time.sleep(0.01)
    try:
        process.wait(after)
    except subprocess.TimeoutExpired:
        process.send_signal(sig)
    out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def has_content(path: Path) -> bool:
    """A file with something in it."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def tree(path: Path) -> dict:
    """Every file under `path` (its lock aside) and its hash."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


def leftovers(run: Path) -> list[str]:
    """Temporaries and backups of nalu processes in and beside `run`, with their pids as PID."""
    inside = [p.name for p in run.iterdir() if re.search(r"\.(tmp|old)-\d", p.name)] if run.is_dir() else []
    beside = [p.name for p in run.parent.glob(f".{run.name}.*")]
    return sorted(re.sub(r"-\d+", "-PID", name) for name in inside + beside)


def found(result: subprocess.CompletedProcess, seconds: float, run: Path) -> str:
    """What a command left: how it ended, the run's last metrics step, any leftovers."""
    if result.returncode == -signal.SIGKILL:
        ending = f"killed at {seconds:.1f} s"
    else:
        ending = f"exit {result.returncode} at {seconds:.1f} s"
    if not run.is_dir():
        state = "no run directory"
    elif not (run / "metrics.jsonl").exists():
        state = "no metrics.jsonl"
    else:
        state, torn = "no metrics line", ""
        for line in reversed((run / "metrics.jsonl").read_text().splitlines()):
            try:
                state = f"step {json.loads(line)['step']:,}{torn}"
                break
            except (ValueError, KeyError):
                torn = " + a torn line"
    left = leftovers(run)
    return f"{ending}: {state}" + (f"; {', '.join(left)}" if left else "")


def run_files(run: Path) -> dict:
    """What must match: metrics and summary without timings, model.keras weights, the SavedModel's
    outputs on fixed inputs, the checkpoint's arrays and scalars."""
    import tensorflow as tf

    from nalu_cli.export import load_keras_model
    from nalu_cli.model import get_params
    from nalu_cli.training import read_checkpoint

    def strip(entry: dict) -> dict:
        return {k: v for k, v in entry.items() if k not in TIMING}

    arrays, scalars = read_checkpoint(run / "checkpoint")
    signature = tf.saved_model.load(str(run / "saved_model")).signatures["serving_default"]
    inputs = np.random.default_rng(0).uniform(1, 6, (256, 20)).astype(np.float32)
    return {
        "metrics": [strip(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()],
        "summary": strip(json.loads((run / "summary.json").read_text())),
        "model.keras": get_params(load_keras_model(run / "model.keras")),
        "saved_model": signature(x=tf.constant(inputs))["y"].numpy(),
        "checkpoint": (arrays, strip(scalars)),
    }


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return a == b


def run_case(root: Path, number: int, case: Case, config: Path, old_run: Path | None, want: dict) -> tuple[str, bool]:
    """Kill, then go on as a user would; returns (what each command left, verdict) and whether it passed."""
    run = root / f"case{number}"
    first = ["train", "--config", config, "--out", run]
    pristine = None
    if case.overwrite:
        shutil.copytree(old_run, run)
        pristine = tree(run)
        first.append("--overwrite")
    ends, args, notes = [], first, ""
    for index, kill in enumerate([*case.kills, None]):
        fault = kill if isinstance(kill, str) else None
        after, sig = (kill, signal.SIGKILL) if isinstance(kill, float) else (None, signal.SIGKILL)
        ready = None
        if index == 0:  # the first command: timed from the run directory's appearance, or the old one's move
            ready = (lambda: any(root.glob(f".{run.name}.backup-*"))) if case.overwrite else run.is_dir
        if isinstance(kill, tuple):
            (_, after), sig = kill, signal.SIGINT
            ready = lambda: has_content(run / "metrics.jsonl")  # noqa: E731
        started = time.perf_counter()
        result = nalu(args, fault, after, sig, ready, case.no_exchange)
        ends.append(found(result, time.perf_counter() - started, run))
        notes += "".join(line for line in result.stderr.splitlines(True) if line.startswith("nalu: note:"))
        if result.returncode not in (0, 130, -signal.SIGKILL):
            return f"{' -> '.join(ends)} | FAILED: {result.stderr.strip().splitlines()[-1][:100]}", False
        if kill is not None and result.returncode == 0:
            if fault:  # a point never reached tests nothing
                return f"{' -> '.join(ends)} | FAILED: {fault} never reached", False
            ends[-1] += " (finished before the kill)"
            break
        if kill is None:
            break
        if case.overwrite and index == 0:  # look first, as a user would: is the old run back?
            looked = nalu(["eval", run])
            notes += "".join(line for line in looked.stderr.splitlines(True) if line.startswith("nalu: note:"))
            said = "a note" if "nalu: note:" in looked.stderr else "no note"
            ends.append(f"`nalu eval` exit {looked.returncode}, {said}")
            if run.is_dir() and tree(run) == pristine:
                left = leftovers(run)
                ok = not left
                return (f"{' -> '.join(ends)} | the old run restored, byte-identical"
                        + (f"; LEFT {', '.join(left)}" if left else ""), ok)
        args = ["train", "--resume", run] if run.is_dir() else first
    got = run_files(run)
    differing = [key for key in want if not same(got[key], want[key])]
    left = [name for name in leftovers(run) if not (".backup-" in name and "is the earlier run" in notes)]
    kept = [name for name in leftovers(run) if name not in left]
    verdict = "equal to the uninterrupted run" if not differing else f"DIFFERS: {', '.join(differing)}"
    if left:
        verdict += f"; LEFT {', '.join(left)}"
    if kept:
        verdict += f" (the old run kept as {kept[0]}, named in a note)"
    return f"{' -> '.join(ends)} | {verdict}", not differing and not left


def train_part(root: Path, only: list[str] | None) -> tuple[list[list[str]], bool]:
    config, old_config = root / "config.yaml", root / "old.yaml"
    config.write_text(CONFIG)
    old_config.write_text(OLD_CONFIG)
    reference, old_run, control = root / "uninterrupted", root / "old-run", root / "control"
    for out, conf in ((reference, config), (old_run, old_config), (control, config)):
        done = nalu(["train", "--config", conf, "--out", out])
        assert done.returncode == 0, done.stderr
    want = run_files(reference)
    rows, passed = [], True
    control_equal = all(same(a, b) for a, b in zip(run_files(control).values(), want.values()))
    rows.append(["no kill (a second uninterrupted run)", "-", "finished",
                 "equal to the uninterrupted run" if control_equal else "DIFFERS"])
    passed &= control_equal
    for number, (name, case) in enumerate(CASES.items()):
        if only and not any(text in name for text in only):
            continue
        outcome, ok = run_case(root, number, case, config, old_run, want)
        processes, verdict = outcome.split(" | ")
        kills = ", ".join(str(k if not isinstance(k, tuple) else f"{k[0]} at {k[1]} s") for k in case.kills)
        rows.append([name, kills, processes, verdict])
        passed &= ok
        print(f"  {name}: {verdict}", file=sys.stderr, flush=True)
    return rows, passed


# eval_every 400,000: a chunk of about 10 s on this machine.
BIG_CONFIG = """\
task: {op: mul, input_size: 20}
model: {layers: [nau, nmu]}
training: {steps: 4000000, eval_every: 400000, early_stop: false}
"""
SIGNALS = {"Ctrl-C": [signal.SIGINT], "SIGTERM": [signal.SIGTERM], "Ctrl-C twice, 0.1 s apart": [signal.SIGINT] * 2}


def signals_part(root: Path) -> tuple[list[list[str]], bool]:
    """Each of SIGNALS sent to `nalu train` 2 s into its first 400,000-step chunk (after the step-0
    evaluation's metrics line): seconds to summary.json and to exit, exit code, resumable."""
    config = root / "big.yaml"
    config.write_text(BIG_CONFIG)
    rows, passed = [], True
    for number, (name, signals) in enumerate(SIGNALS.items()):
        run = root / f"big{number}"
        process = subprocess.Popen([*NALU, "train", "--config", config, "--out", run],
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while process.poll() is None and not has_content(run / "metrics.jsonl"):
            time.sleep(0.02)
        time.sleep(2.0)  # well inside the first chunk
        sent = time.perf_counter()
        for sig in signals:
            process.send_signal(sig)
            time.sleep(0.1)
        summary_at = None
        while process.poll() is None:
            if summary_at is None and (run / "summary.json").exists():
                summary_at = time.perf_counter() - sent
            time.sleep(0.01)
        exited = time.perf_counter() - sent
        _, err = process.communicate()
        last = err.strip().splitlines()[-1] if err.strip() else ""
        resumable = (run / "checkpoint" / "state.json").exists()
        passed &= process.returncode == 130 and resumable
        rows.append([name, f"{summary_at:.2f}" if summary_at is not None else "-", f"{exited:.2f}",
                     str(process.returncode), "yes" if resumable else "no", last[:90]])
        print(f"  {name}: exit {process.returncode} after {exited:.2f} s", file=sys.stderr, flush=True)
    return rows, passed


def cost_part(repeats: int = 5, steps: int = 200_000) -> list[list[str]]:
    """Steps/s of a chunk of `steps` as one compiled call against calls of about step.CALL_SECONDS,
    `repeats` runs of each, interleaved (the machine's load moves both alike)."""
    import statistics

    from nalu_cli.config import resolve
    from nalu_cli.training import Replica, ReplicaTrainer
    from nalu_cli.training.step import CALL_SECONDS

    config = resolve({"task": {"op": "mul"}, "model": {"layers": ["nau", "nmu"]}})
    trainer = ReplicaTrainer(config.model, config.training, [Replica.for_seed(config, 0)])
    runner = trainer.architectures[0].chunk
    paced = runner._pace
    trainer.train(20_000)  # compiled, and the calls sized
    sized, calls = runner.call_steps, []
    split = f"calls of about {CALL_SECONDS} s"
    rates = {"one call": [], split: []}

    def counted(done, seconds):
        calls[-1] += 1
        paced(done, seconds)

    for _ in range(repeats):
        for name, pace, call_steps in (("one call", lambda done, seconds: None, steps), (split, counted, sized)):
            runner._pace, runner.call_steps = pace, call_steps
            calls.append(0)
            started = time.perf_counter()
            trainer.train(steps)
            rates[name].append(steps / (time.perf_counter() - started))
            if pace is counted:
                sized = runner.call_steps
    split_calls = calls[1::2]
    return [[name, f"{statistics.median(values):,.0f}", f"{min(values):,.0f}-{max(values):,.0f}",
             "1" if name == "one call" else f"{statistics.median(split_calls):.0f}"] for name, values in rates.items()]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="train")
    parser.add_argument("--only", action="append", help="train only the cases whose name holds this (repeatable)")
    args = parser.parse_args(argv)
    parts, passed = args.parts.split(","), True
    from nalu_cli._tf import import_tensorflow

    import_tensorflow()  # quietly, as nalu does
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "train" in parts:
            started = time.perf_counter()
            rows, passed = train_part(root, args.only)
            print(f"\n`nalu train` killed with SIGKILL, then continued until it finished "
                  f"({time.perf_counter() - started:.0f} s)\n")
            print(table(["case", "NALU_FAULT or kill", "what each process left", "result"], rows))
        if "signals" in parts:
            rows, ok = signals_part(root)
            print("\n`nalu train` with eval_every 400,000 (a chunk of about 10 s), signalled 2 s into its first chunk\n")
            print(table(["signal", "summary.json after (s)", "exit after (s)", "exit code", "resumable", "last line"],
                        rows))
            passed &= ok
        if "cost" in parts:
            print("\nNAU -> NMU on a*b, 200,000 steps: one compiled call, or calls of about step.CALL_SECONDS "
                  "(5 runs each, interleaved)\n")
            print(table(["calls", "median steps/s", "range", "calls per 200,000 steps"], cost_part()))
        if "export" in parts:
            from export_kills import export_part

            rows, ok = export_part(root)
            print("\n`nalu export` killed with SIGKILL, then what a user does next\n")
            print(table(["case", "NALU_FAULT", "what each command left", "result"], rows))
            passed &= ok
        if "benchmark" in parts:
            from benchmark_kills import benchmark_part

            header, rows = benchmark_part(root)
            print("\n`nalu benchmark` with 2 local workers\n")
            print(table(header, rows))
            passed &= all(row[-2] == "equal" for row in rows)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
