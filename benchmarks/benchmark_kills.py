"""`nalu benchmark` stopped hard or by signal: its processes' fate, and the rerun's results.

`benchmark_part` runs the local backend's cases (2 workers; SIGKILL, Ctrl-C, SIGTERM). Its
helpers (`descendants`, `alive`, `comparable`) also serve benchmarks/ray_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

NALU = [sys.executable, "-m", "nalu_cli"]
# 8 groups of one seed, 2 workers: about ten seconds of work, killed once the first results are in.
CONFIG = "task: {input_size: 20}\ntraining: {eval_every: 500, early_stop: false}\n"
GRID = ["--ops", "mul,sub", "--units", "nau-nmu", "--seeds", "4", "--replicas", "1", "--steps", "6000"]


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (children, their children, ...)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running (an exited process waiting to be reaped, a zombie, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as handle:
            return handle.read().replace("\0", " ").strip()
    except OSError:
        return ""


def comparable(path: Path) -> list[dict]:
    """A benchmark's results without wall-clock seconds, which no two runs share."""
    records = [json.loads(line) for line in (path / "results.jsonl").read_text().splitlines()]
    return sorted(({k: v for k, v in r.items() if k != "solved_at_seconds"} for r in records),
                  key=lambda r: (r["op"], r["unit"], r["seed"]))


def wait_gone(pids: set[int], limit: float) -> tuple[float | None, set[int]]:
    """Seconds until none of `pids` is alive (None if some still are after `limit`), and those left."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        left = {pid for pid in pids if alive(pid)}
        if not left:
            return time.perf_counter() - started, set()
        time.sleep(0.05)
    return None, {pid for pid in pids if alive(pid)}


def interactive():
    """In the child: Ctrl-C as in a terminal (a process started in the background ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_midway(args: list[str], out: Path, how: str, env: dict | None = None) -> list[str]:
    """Start `nalu benchmark`, stop it `how` once its first result is in, and watch its processes."""
    process = subprocess.Popen([*NALU, *args, "--out", str(out)], start_new_session=True, preexec_fn=interactive,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while not (results.exists() and results.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    everyone = descendants(process.pid) | {process.pid}
    finished = len(results.read_text().splitlines()) if results.exists() else 0
    if how == "SIGKILL":
        os.kill(process.pid, signal.SIGKILL)
    elif how == "a worker SIGKILLed":  # the out-of-memory killer's choice
        os.kill(min(pid for pid in everyone if "spawn_main" in command_line(pid)), signal.SIGKILL)
    elif how == "Ctrl-C":
        os.killpg(process.pid, signal.SIGINT)  # a terminal sends it to the whole foreground group
    else:
        os.kill(process.pid, signal.SIGTERM)
    gone_after, left = wait_gone(everyone, 60)  # seconds from the signal; a zombie counts as gone
    _, err = process.communicate()
    last = err.strip().splitlines()[-1][:90] if err.strip() else ""
    return [how, f"{finished}", f"{process.returncode}", f"{len(everyone)}",
            f"{gone_after:.2f}" if gone_after is not None else f"{len(left)} alive at 60 s",
            "yes" if "Traceback" in err else "no", last]


def benchmark_part(root: Path, backend_args: tuple = ("--workers", "2")) -> tuple[list[str], list[list[str]]]:
    config = root / "bench.yaml"
    config.write_text(CONFIG)
    args = ["benchmark", *GRID, "--config", str(config), *backend_args]
    whole = root / "bench-whole"
    done = subprocess.run([*NALU, *args, "--out", str(whole)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    rows = []
    for how in ("SIGKILL", "Ctrl-C", "SIGTERM", "a worker SIGKILLed"):
        out = root / f"bench-{how}"
        row = stop_midway(args, out, how)
        rerun = subprocess.run([*NALU, *args, "--out", str(out)], capture_output=True, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        row.insert(-1, "equal" if rerun.returncode == 0 and comparable(out) == comparable(whole)
                   else f"DIFFERS (exit {rerun.returncode})")
        rows.append(row)
    header = ["stop", "results in", "exit code", "processes (main, workers, ...)", "all gone after (s)",
              "traceback", "rerun vs uninterrupted", "last line on stderr"]
    return header, rows
