"""Record short runs' metrics at every evaluation, to pin training behaviour across refactors.

    .venv/bin/python benchmarks/record_golden_runs.py tests/data/golden_runs.json

Each case is a config (named units, one restart or a few) trained by `nalu_cli.training.train`;
its metrics.jsonl and summary are stored. tests/test_golden_runs.py retrains every case and
compares: same selected step, success and stop reason, and the same losses and
interpolation/extrapolation MSEs at every evaluation, to float round-off. Rerun this only when
a change is meant to alter training, and say so in its commit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

# Short runs over the trainer's paths: plain NAU (early stop on success), NAU -> NMU with
# split-adam, NALU with plain Adam (non-finite rollback), the polish step, and restarts
# trained as one group (the chosen restart).
CASES = {
    "nau_add": {"task": {"op": "add", "input_size": 20}, "model": {"unit": "nau"},
                "training": {"steps": 3000, "eval_every": 500}, "seed": 0},
    "nau_nmu_mul": {"task": {"op": "mul", "input_size": 20}, "model": {"layers": ["nau", "nmu"]},
                    "training": {"steps": 2000, "eval_every": 500, "early_stop": False}, "seed": 1},
    "nalu_mul_adam": {"task": {"op": "mul", "input_size": 20}, "model": {"unit": "nalu"},
                      "training": {"steps": 2000, "eval_every": 500, "optimizer": "adam", "learning_rate": 0.05},
                      "seed": 2},
    "nau_nainpu_div_polish": {"task": {"op": "div", "input_size": 20}, "model": {"layers": ["nau", "nainpu"]},
                              "training": {"steps": 2000, "eval_every": 500, "polish_every": 1000,
                                           "polish_iterations": 30, "early_stop": False}, "seed": 0},
    "default_sub_restarts": {"task": {"op": "sub", "input_size": 20}, "model": {"restarts": 3},
                             "training": {"steps": 1500, "eval_every": 500}, "seed": 3},
    "nau_nmu_mul_hidden_split": {"task": {"op": "mul", "input_size": 20}, "model": {"layers": ["nau", "nmu"]},
                                 "training": {"steps": 2000, "eval_every": 500, "early_stop": False,
                                              "hidden_split_start": 500}, "seed": 1},
}
# Figures that depend on the machine's speed, not on the maths.
TIMING_KEYS = {"elapsed_seconds", "steps_per_second", "train_seconds", "wall_seconds", "polish_seconds",
               "solved_at_seconds"}


def run_case(settings: dict, out: Path) -> dict:
    from nalu_cli import training
    from nalu_cli.config import resolve

    summary = training.train(resolve(settings), out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    strip = lambda entry: {k: v for k, v in entry.items() if k not in TIMING_KEYS}  # noqa: E731
    return {"summary": strip(summary), "metrics": [strip(entry) for entry in metrics]}


def main(argv: list[str]) -> int:
    from nalu_cli._tf import import_tensorflow

    import_tensorflow()
    recorded = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in CASES.items():
            recorded[name] = {"settings": settings, **run_case(settings, Path(tmp) / name)}
            print(name, recorded[name]["summary"]["selected_step"], recorded[name]["summary"]["success"])
    Path(argv[0]).write_text(json.dumps(recorded, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
