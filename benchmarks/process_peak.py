"""Run a command and report, as /usr/bin/time does, its wall time and peak memory, worker processes included.

    python benchmarks/process_peak.py [--interval 0.1] -- nalu benchmark --workers 2 ...

Prints one JSON object: `wall_seconds`; `largest_process_peak_rss_mib`, the peak resident
memory of the largest single process of the command's tree (getrusage's ru_maxrss over the
waited-for descendants, /usr/bin/time's %M); `tree_peak_rss_mib`, the largest sum of the
tree's resident memory at one instant, sampled from /proc every `--interval` seconds (pages
shared between processes, TensorFlow's libraries, count once per process, as in `top`: an
upper bound on what the tree holds); `tree_peak_pss_mib`, the same sum of proportional set
sizes (a shared page split among its sharers: what the tree takes from the machine);
`exit_code`. The command's output is discarded unless it fails (then its last lines go to stderr).

Run it as its own small process (throughput.py does): a child forked straight from a large
process counts that process's pages in its own peak until it execs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone, or not ours to read
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and parentheses


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process now, KiB: PSS charges each shared page to its sharers in equal parts."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
    except (OSError, KeyError, ValueError):  # gone, or not ours to read
        return 0, 0


def tree_memory_kib(root: int) -> tuple[int, int]:
    """The summed (RSS, PSS) of `root` and every process descended from it, now."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = parent_of(int(entry))
            if parent is not None:
                parents[int(entry)] = parent
    children = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        rss, pss = (total + value for total, value in zip((rss, pss), memory_kib(pid)))
        stack.extend(children.get(pid, ()))
    return rss, pss


def measure(command: list[str], interval: float = 0.1) -> dict:
    """Run `command` to its end (output to a temporary file) and return its figures."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        rss_peak = pss_peak = 0
        while process.poll() is None:
            rss, pss = tree_memory_kib(process.pid)
            rss_peak, pss_peak = max(rss_peak, rss), max(pss_peak, pss)
            time.sleep(interval)
        wall = time.perf_counter() - started
        if process.returncode:
            output.seek(0)
            sys.stderr.write(output.read().decode(errors="replace")[-3000:])
    return {
        "wall_seconds": round(wall, 2),
        "largest_process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "tree_peak_rss_mib": round(rss_peak / 1024),
        "tree_peak_pss_mib": round(pss_peak / 1024),
        "exit_code": process.returncode,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples of the tree's memory")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("process_peak.py: no command given (put it after --)", file=sys.stderr)
        return 2
    print(json.dumps(measure(command, args.interval)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
