"""`nalu train`: a run directory from a config, with a progress bar and a graceful stop."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from nalu_cli._tf import import_tensorflow
from nalu_cli.cli import render
from nalu_cli.cli.options import Op, TaskOption, overwrite_option
from nalu_cli.config import UNITS
from nalu_cli.errors import NaluError
from nalu_cli.formatting import format_number


def train(
    config_file: Annotated[Optional[Path], typer.Option("--config", help="YAML config; flags override it.")] = None,
    op: Annotated[Optional[Op], typer.Option(help="Arithmetic operation to learn.")] = None,
    task: TaskOption = None,
    steps: Annotated[Optional[int], typer.Option(help="Maximum training steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for slices, data and initialisation.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training batch size.")] = None,
    unit: Annotated[
        Optional[str], typer.Option(help=f"Unit for both layers, or FIRST-SECOND (nau-nmu). Units: {', '.join(UNITS)}.")
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Run directory.", show_default="runs/OP-UNIT-seedSEED; recurrent: runs/recurrent-OP-UNIT-seedSEED"
        ),
    ] = None,
    overwrite: Annotated[bool, overwrite_option("run directory at --out")] = False,
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue an interrupted run directory (only --steps may change).")
    ] = None,
):
    """Train a model on the static or recurrent arithmetic task; write a run directory with SavedModel checkpoints.

    Ctrl-C or SIGTERM stops within about a second, keeping the last checkpoint, and exits 130;
    a second Ctrl-C stops at once. --resume RUN continues (also after kill -9).
    """
    from nalu_cli.config import parse_architecture, resolve
    from nalu_cli.config_files import load_yaml
    from nalu_cli.outputs import check_output, check_writable, recover
    from nalu_cli.rundir import CONFIG_FILE, read_run_config

    if resume is not None:
        given = [name for name, value in (("--config", config_file), ("--op", op), ("--task", task), ("--seed", seed),
                 ("--lr", lr), ("--batch-size", batch_size), ("--unit", unit), ("--out", out)) if value is not None]
        if given or overwrite:
            raise NaluError(f"--resume continues a run as it was configured; drop {', '.join(given) or '--overwrite'}")
        recover(resume)  # a run a killed `nalu train --overwrite` was replacing
        if not (resume / CONFIG_FILE).is_file():
            raise NaluError(f"{resume} is not a nalu run directory (no {CONFIG_FILE})")
        config = read_run_config(resume, steps)
        check_writable(resume)
        out = resume
    else:
        settings = load_yaml(config_file) if config_file else {}
        config = resolve(
            settings,
            {
                "task": {"op": op.value if op else None, "kind": task.value if task else None},
                "model": parse_architecture(unit) if unit else {},
                "training": {"steps": steps, "learning_rate": lr, "batch_size": batch_size},
                "seed": seed,
            },
        )
        out = out or default_run_dir(config)
        from nalu_cli.magnitudes import check_config

        check_config(config)  # before any output, so a refusal is one line
        check_output(out, overwrite, kind="run")
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from nalu_cli import tasks, thresholds

    thresholds.prefetch_threshold(tasks.TaskSpec.from_config(config.task, config.seed))  # beside the import
    import_tensorflow()
    from nalu_cli import training

    console = render.console(stderr=True)
    verb = "resuming" if resume else "training"
    task_name = config.task.op
    if config.task.kind == "recurrent":
        task_name = f"recurrent {config.task.op} (T={config.task.length})"
    console.print(f"{verb} [bold]{config.model.name}[/] on [bold]{task_name}[/] (seed {config.seed}) -> {out}")
    columns = (
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        BarColumn(bar_width=12),
        TextColumn("loss {task.fields[loss]} interp {task.fields[interp]} extrap {task.fields[extrap]}"),
        TextColumn("{task.fields[events]}{task.fields[speed]} steps/s ETA"),
        TimeRemainingColumn(compact=True),
    )
    try:
        with Progress(*columns, console=console) as progress, _graceful_stop() as stop_requested:
            bar = progress.add_task(
                "train", total=config.training.steps, loss="-", interp="-", extrap="-", speed="-", events=""
            )

            def on_progress(entry: dict):
                events = entry.get("divergence_events", 0)
                progress.update(
                    bar,
                    completed=entry["step"],
                    loss=format_number(entry["loss"], digits=3),
                    interp=format_number(entry["interpolation_mse"], digits=3),
                    extrap=format_number(entry["extrapolation_mse"], digits=3),
                    speed=f"{entry['steps_per_second']:,.0f}",
                    events=f"[yellow]{events} divergence(s) restored[/] " if events else "",
                )

            if resume:
                summary = training.resume(resume, steps, on_progress=on_progress, should_stop=stop_requested)
            else:
                summary = training.train(config, out, overwrite, on_progress=on_progress, should_stop=stop_requested)
            progress.update(bar, completed=summary["steps_trained"])
    except KeyboardInterrupt:  # a second Ctrl-C: no summary, no SavedModel of this process
        if overwrite:
            print(f"stopped at once; {out} is the run it replaced, as it was", file=sys.stderr)
        else:
            print(f"stopped at once; continue from the last checkpoint with: nalu train --resume {out}",
                  file=sys.stderr)
        raise typer.Exit(130) from None
    _print_train_summary(summary, out)
    if summary["stop_reason"] == "interrupted":
        print(f"interrupted at step {summary['steps_trained']:,}; continue with: nalu train --resume {out}",
              file=sys.stderr)
        raise typer.Exit(130)


def default_run_dir(config) -> Path:
    """runs/OP-UNIT-seedSEED; a recurrent run's name starts with its kind, so the two never collide."""
    prefix = "" if config.task.kind == "static" else f"{config.task.kind}-"
    return Path("runs") / f"{prefix}{config.task.op}-{config.model.name}-seed{config.seed}"


@contextlib.contextmanager
def _graceful_stop():
    """First Ctrl-C / SIGTERM: stop at the trainer's next call (step.CALL_SECONDS), checkpointed.
    A second Ctrl-C: stop now."""
    requested = []

    def handler(signum, frame):
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_train_summary(summary: dict, out: Path):
    from rich.table import Table

    table = Table(title=f"{summary['formula']}  ({summary['unit']}, seed {summary['seed']})", show_header=False)
    rows = [
        ("steps trained", f"{summary['steps_trained']:,} ({summary['stop_reason']})"),
        ("selected step (lowest interpolation MSE)", summary["selected_step"]),
        ("selected weights snapped to exact values", summary["selected_snapped"]),
        ("selected weights polished (Levenberg-Marquardt)", summary["selected_polished"]),
        ("interpolation MSE", summary["interpolation_mse"]),
        ("extrapolation MSE", summary["extrapolation_mse"]),
        ("success threshold", summary["success_threshold"]),
        ("success", summary["success"]),
        ("solved at step", summary["solved_at_step"]),
        ("training speed (steps/s, polish excluded)", summary["steps_per_second"]),
        ("polish step time (s)", summary["polish_seconds"]),
        ("wall time (s)", summary["wall_seconds"]),
    ]
    for name, value in rows:
        table.add_row(name, format_number(value))
    console = render.console()
    console.print(table)
    console.print(f"run directory: {out}")
