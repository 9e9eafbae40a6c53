"""A benchmark's output directory: settings.json (what was run) and results.jsonl (one line a seed).

Lines are appended and fsynced as groups finish, so an interrupted benchmark keeps every
finished seed; a line cut short by a kill is dropped and that seed trains again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nalu_cli.errors import NaluError
from nalu_cli.rundir import atomic_write_text, to_json

RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "settings.json"


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


def start_output(out: Path, key: str, description: dict) -> None:

    if out.exists() and not out.is_dir():
        raise NaluError(f"{out} exists and is not a directory")
    if out.is_dir() and not (out / SETTINGS_FILE).exists() and any(out.iterdir()):
        raise NaluError(f"{out} is not a nalu benchmark directory; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SETTINGS_FILE).exists():
        atomic_write_text(out / SETTINGS_FILE, to_json({"key": key, **description}, indent=2) + "\n")


def append_results(out: Path, records: list[dict]) -> None:
    with open(out / RESULTS_FILE, "a") as handle:
        for record in records:
            handle.write(to_json(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
