"""`nalu export` killed (SIGKILL at a NALU_FAULT point), then what a user would do next.

`export_part` exports a short run, fresh and over an older export (--overwrite), from the run and
from a bare SavedModel (a copy), killed at `saved-model` (the SavedModel written in its temporary
directory beside the output; @2000: its saved_model.pb cut there) or `keras` (model.keras written
as a temporary inside the new export). The next commands are `nalu eval OUT` or the export again;
the export they end on must equal an uninterrupted one (the SavedModel's outputs on fixed inputs,
model.keras weights, its task spec), or be the older export back byte for byte, with nothing of the
dead process left beside or in it (a backup nalu names in one line excepted).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
from fault_injection import leftovers, nalu, same, tree

# A short run to export (two of them: the older export is another seed's).
CONFIG = "task: {{op: add, input_size: 10}}\nmodel: {{unit: nac}}\ntraining: {{steps: 500}}\nseed: {seed}\n"
# (name, NALU_FAULT of the first command, --overwrite of an older export, source "run" or "saved model",
#  the commands after it: "eval" or "export")
CASES = [
    ("saved_model.pb cut at byte 2,000", "saved-model@2000", False, "run", ["export"]),
    ("SavedModel whole in its temporary, then `nalu eval`", "saved-model", False, "run", ["eval", "export"]),
    ("copying a bare SavedModel, the copy whole", "saved-model", False, "saved model", ["export"]),
    ("model.keras written inside the new export", "keras", False, "run", ["export", "export --overwrite"]),
    ("--overwrite: saved_model.pb cut at byte 2,000", "saved-model@2000", True, "run", ["eval", "export --overwrite"]),
    ("--overwrite: model.keras inside the new export", "keras", True, "run", ["eval", "export --overwrite"]),
]


def exported(path: Path) -> dict:
    """What must match: the SavedModel's outputs on fixed inputs, model.keras weights, the task spec."""
    import tensorflow as tf

    from nalu_cli.export import load_keras_model
    from nalu_cli.model import get_params

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    inputs = np.random.default_rng(0).uniform(-5, 5, (256, 10)).astype(np.float32)
    keras = path / "model.keras"
    return {"saved_model": signature(x=tf.constant(inputs))["y"].numpy(),
            "model.keras": get_params(load_keras_model(keras)) if keras.exists() else None,
            "task spec": json.loads((path / "assets.extra" / "nalu.json").read_text())}


def export_part(root: Path) -> tuple[list[list[str]], bool]:
    run, old_run = root / "export-run", root / "export-old-run"
    for out, seed in ((run, 1), (old_run, 2)):
        config = root / f"export-seed{seed}.yaml"
        config.write_text(CONFIG.format(seed=seed))
        done = nalu(["train", "--config", config, "--out", out])
        assert done.returncode == 0, done.stderr
    reference, old_export = root / "export-reference", root / "export-old"
    for source, out in ((run, reference), (old_run, old_export)):
        done = nalu(["export", source, "--out", out, "--format", "keras"])
        assert done.returncode == 0, done.stderr
    want, rows, passed = exported(reference), [], True
    for number, (name, fault, overwrite, source, then) in enumerate(CASES):
        out = root / f"export{number}"
        if overwrite:
            shutil.copytree(old_export, out)
        pristine = tree(out) if overwrite else None
        given = run if source == "run" else reference
        formats = ["--format", "keras"] if source == "run" else []
        first = nalu(["export", given, "--out", out, *formats, *(["--overwrite"] if overwrite else [])], fault)
        steps = [f"killed: {', '.join(leftovers(out)) or 'nothing left'}" if first.returncode == -signal.SIGKILL
                 else f"NOT KILLED (exit {first.returncode})"]
        ok, notes = first.returncode == -signal.SIGKILL, ""
        for command in then:
            extra = ["--overwrite"] if command.endswith("--overwrite") else []
            args = ["eval", out] if command == "eval" else ["export", given, "--out", out, *formats, *extra]
            result = nalu(args)
            notes += "".join(line for line in result.stderr.splitlines(True) if line.startswith("nalu: note:"))
            said = " (a note)" if "nalu: note:" in result.stderr else ""
            steps.append(f"`nalu {command}` exit {result.returncode}{said}: {', '.join(leftovers(out)) or 'nothing left'}")
            if command == "eval" and overwrite and out.is_dir() and tree(out) == pristine:
                break  # the older export is back: the user has what they had
        if out.is_dir() and overwrite and tree(out) == pristine:
            verdict = "the older export back, byte-identical"
        elif out.is_dir():
            got = exported(out)
            differing = [key for key in want if not same(got[key], want[key])]
            verdict = "equal to the uninterrupted export" if not differing else f"DIFFERS: {', '.join(differing)}"
            ok &= not differing
        else:
            verdict, ok = "NO EXPORT", False
        left = [n for n in leftovers(out) if not (".backup-" in n and "is the earlier SavedModel" in notes)]
        kept = [n for n in leftovers(out) if n not in left]
        if left:
            verdict, ok = verdict + f"; LEFT {', '.join(left)}", False
        if kept:
            verdict += f" (the older one kept as {kept[0]}, named in a note)"
        rows.append([name, fault, " -> ".join(steps), verdict])
        passed &= ok
        print(f"  {name}: {verdict}", file=sys.stderr, flush=True)
    return rows, passed
