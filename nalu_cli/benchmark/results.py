"""A benchmark's output directory: settings.json (what was run) and results.jsonl (one line a seed).

Lines are appended and fsynced as groups finish, so an interrupted benchmark keeps every
finished seed. A last line cut short by a kill is left out (that seed trains again) and cut
from the file before the next line is appended; any other line that is not a result is an
error. A damaged settings.json is written again if every result line carries these settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nalu_cli.errors import NaluError
from nalu_cli.outputs import check_writable
from nalu_cli.rundir import atomic_write_text, to_json

RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "settings.json"
RECORD_KEYS = ("op", "unit", "seed")  # what a result line is keyed by


def load_results(out: Path, key: str) -> list[dict]:
    """Finished seeds from an earlier (possibly interrupted) run with the same settings."""
    settings_path = out / SETTINGS_FILE
    if not settings_path.exists():
        return []
    records = _read_results(out / RESULTS_FILE)
    previous = _settings_key(out)
    if previous is None:  # damaged: each result line names the settings it was trained with
        previous = key if all(record.get("settings") == key for record in records) else None
    if previous != key:
        raise NaluError(f"{out} holds results of a benchmark with other settings; use another --out")
    return records


def _settings_key(out: Path) -> str | None:
    try:
        return json.loads((out / SETTINGS_FILE).read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    records = []
    for number, line in lines:
        try:
            record = json.loads(line)
            [record[name] for name in RECORD_KEYS]
        except (ValueError, KeyError, TypeError):
            if number == lines[-1][0]:
                break  # cut short by a kill: that seed trains again
            raise NaluError(f"{path} line {number} is not a result; restore the file, or delete the line "
                            "to train that seed again") from None
        records.append(record)
    return records


def start_output(out: Path, key: str, description: dict) -> None:
    if out.exists() and not out.is_dir():
        raise NaluError(f"{out} exists and is not a directory")
    if out.is_dir() and not (out / SETTINGS_FILE).exists() and any(out.iterdir()):
        raise NaluError(f"{out} is not a nalu benchmark directory; use another --out")
    if out.is_dir() and _settings_key(out) == key:
        return  # nothing to write yet: a finished benchmark shows its table from a read-only place too
    check_writable(out)  # before any work, so a read-only place or a full disk is one line
    out.mkdir(parents=True, exist_ok=True)
    # missing, or damaged (load_results found the result lines to be of these settings)
    atomic_write_text(out / SETTINGS_FILE, to_json({"key": key, **description}, indent=2) + "\n")


def repair_results(out: Path) -> None:
    """Make results.jsonl end with a whole line: a last line a kill cut short is cut off (its seed
    trains again), a whole one missing only its newline gets it. Call with the benchmark's lock held."""
    path = out / RESULTS_FILE
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        record = json.loads(data[start:])
        [record[name] for name in RECORD_KEYS]
    except (ValueError, KeyError, TypeError):
        os.truncate(path, start)
        return
    with open(path, "ab") as handle:
        handle.write(b"\n")


def append_results(out: Path, records: list[dict]) -> None:
    with open(out / RESULTS_FILE, "a") as handle:
        for record in records:
            handle.write(to_json(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
