"""benchmarks/process_peak.py, which `make bench` measures `nalu train` and `nalu benchmark` with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "process_peak.py"

# A parent holding 150 MiB that starts a child holding 250 MiB; both hold it for 0.6 s, then exit 3.
TWO_PROCESSES = """
import subprocess, sys
held = b"x" * (150 << 20)
subprocess.run([sys.executable, "-c", "import time; held = b'x' * (250 << 20); time.sleep(0.6)"])
sys.exit(3)
"""


def measure(*command: str) -> dict:
    """The script as throughput.py runs it: a small process of its own (a child forked from this
    large test process would count this process's pages in its peak)."""
    completed = subprocess.run([sys.executable, str(SCRIPT), "--interval", "0.05", "--", *command],
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout)


def test_peak_memory_counts_every_process_of_the_command_and_the_exit_code_is_kept():
    figures = measure(sys.executable, "-c", TWO_PROCESSES)
    assert figures["exit_code"] == 3
    assert 250 <= figures["largest_process_peak_rss_mib"] < 300  # the child, as /usr/bin/time's %M
    assert 400 <= figures["tree_peak_rss_mib"] < 500  # parent and child at once
    assert 400 <= figures["tree_peak_pss_mib"] <= figures["tree_peak_rss_mib"]
    assert figures["wall_seconds"] >= 0.6


def test_no_command_is_one_line_and_exit_code_2():
    completed = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == ["process_peak.py: no command given (put it after --)"]
