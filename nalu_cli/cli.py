"""The `nalu` command line: thin Typer wrappers around plain functions that return data.

TensorFlow is imported inside the commands that need it, never at import time,
so `nalu --help` stays fast. Errors a user can cause become one line on stderr
and exit code 2 (set NALU_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException

from nalu_cli import __version__
from nalu_cli._tf import import_tensorflow
from nalu_cli.config import OPS, UNITS
from nalu_cli.errors import NaluError
from nalu_cli.formatting import format_number, format_range


class NaluGroup(TyperGroup):
    """Turns user errors (NaluError, bad flags) into one line on stderr and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NaluError as error:
            if os.environ.get("NALU_DEBUG"):
                raise
            _fail(str(error))
        except TyperException as error:  # bad flags and arguments (typer's own click exceptions)
            if type(error).__name__ == "NoArgsIsHelpError":
                print(error.format_message())
                sys.exit(0)
            _fail(error.format_message(), code=error.exit_code)
        except Abort:
            _fail("aborted", code=130)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int = 2):
    print(f"nalu: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


app = typer.Typer(
    cls=NaluGroup,
    help="Train, evaluate, extrapolate and export neural arithmetic units (NAC, NALU, ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help imports rich.markdown and markdown_it, 0.25 s against
    # 0.11 s for `nalu --help` on this machine (median of 15). Commands still print with Rich.
    rich_markup_mode=None,
)

Op = Enum("Op", {op: op for op in OPS}, type=str)


def _version(value: bool):
    if value:
        print(f"nalu {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
):
    pass


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


@app.command()
def train(
    config_file: Annotated[Optional[Path], typer.Option("--config", help="YAML config; flags override it.")] = None,
    op: Annotated[Optional[Op], typer.Option(help="Arithmetic operation to learn.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Maximum training steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for slices, data and initialisation.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training batch size.")] = None,
    unit: Annotated[
        Optional[str], typer.Option(help=f"Unit for both layers, or FIRST-SECOND (nau-nmu). Units: {', '.join(UNITS)}.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory.", show_default="runs/OP-UNIT-seedSEED")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory at --out.")] = False,
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue an interrupted run directory (only --steps may change).")
    ] = None,
):
    """Train a model on the static arithmetic task; write a run directory with SavedModel checkpoints.

    Ctrl-C or SIGTERM ends the current chunk, checkpoints, and exits 130; --resume RUN continues.
    """
    from nalu_cli.config import load_yaml, parse_architecture, resolve
    from nalu_cli.rundir import CONFIG_FILE, check_output

    if resume is not None:
        given = [name for name, value in (("--config", config_file), ("--op", op), ("--seed", seed), ("--lr", lr),
                 ("--batch-size", batch_size), ("--unit", unit), ("--out", out)) if value is not None]
        if given or overwrite:
            raise NaluError(f"--resume continues a run as it was configured; drop {', '.join(given) or '--overwrite'}")
        if not (resume / CONFIG_FILE).is_file():
            raise NaluError(f"{resume} is not a nalu run directory (no {CONFIG_FILE})")
        config = resolve(load_yaml(resume / CONFIG_FILE), {"training": {"steps": steps}})
        out = resume
    else:
        settings = load_yaml(config_file) if config_file else {}
        config = resolve(
            settings,
            {
                "task": {"op": op.value if op else None},
                "model": parse_architecture(unit) if unit else {},
                "training": {"steps": steps, "learning_rate": lr, "batch_size": batch_size},
                "seed": seed,
            },
        )
        out = out or Path("runs") / f"{config.task.op}-{config.model.name}-seed{config.seed}"
        check_output(out, overwrite, kind="run")  # before any output, so a refusal is one line
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    import_tensorflow()
    from nalu_cli import training

    console = _console(stderr=True)
    verb = "resuming" if resume else "training"
    console.print(f"{verb} [bold]{config.model.name}[/] on [bold]{config.task.op}[/] (seed {config.seed}) -> {out}")
    columns = (
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        BarColumn(bar_width=12),
        TextColumn("loss {task.fields[loss]} interp {task.fields[interp]} extrap {task.fields[extrap]}"),
        TextColumn("{task.fields[events]}{task.fields[speed]} steps/s ETA"),
        TimeRemainingColumn(compact=True),
    )
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
    _print_train_summary(summary, out)
    if summary["stop_reason"] == "interrupted":
        print(f"interrupted at step {summary['steps_trained']:,}; continue with: nalu train --resume {out}",
              file=sys.stderr)
        raise typer.Exit(130)


@contextlib.contextmanager
def _graceful_stop():
    """First Ctrl-C / SIGTERM: finish the current chunk, then stop cleanly. A second Ctrl-C: stop now."""
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
    console = _console()
    console.print(table)
    console.print(f"run directory: {out}")


@app.command("eval")
def eval_command(
    path: Annotated[Path, typer.Argument(help="Run directory or nalu SavedModel.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Interpolation and extrapolation error, Trask's normalised error, and the success criterion."""
    import_tensorflow()
    from nalu_cli.evaluation import evaluate

    report = evaluate(path)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{report['task']['formula']}  ({report['path']})")
    for column in ("split", "range", "MSE", "threshold", "below", "normalised (random=100)"):
        table.add_column(column)
    for split, range_key in (("interpolation", "interpolation_range"), ("extrapolation", "extrapolation_range")):
        row = report[split]
        table.add_row(
            split,
            format_range(report["task"][range_key]),
            format_number(row["mse"]),
            format_number(row["threshold"]),
            format_number(row["below_threshold"]),
            format_number(row["normalized_error"]),
        )
    console = _console()
    console.print(table)
    extrapolation = report["extrapolation"]
    relation = "below" if report["success"] else "not below"
    verdict = "[bold green]SUCCESS[/]" if report["success"] else "[bold red]FAILURE[/]"
    console.print(
        f"{verdict}: extrapolation MSE {format_number(extrapolation['mse'])} is {relation} the threshold "
        f"{format_number(extrapolation['threshold'])}, the MSE of a near-perfect solution "
        f"(eps=1e-5; Madsen & Johansen 2020)"
    )


@app.command()
def extrapolate(
    path: Annotated[Path, typer.Argument(help="Run directory or nalu SavedModel.")],
    ranges: Annotated[
        Optional[list[str]],
        typer.Option("--range", help="Input range LO:HI (repeatable; use --range=-6:-2 for negatives)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[
        Optional[Path], typer.Option(help="Also draw error against input magnitude (log-log) to this .png file.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --plot file.")] = False,
):
    """Error as inputs leave the training range (default: the extrapolation range scaled 1x to 1000x)."""
    if plot is not None:
        from nalu_cli.plots import check_plot_path, require_matplotlib

        require_matplotlib()  # before any work, so a missing extra or an existing file is one line
        check_plot_path(plot, overwrite)
    import_tensorflow()
    from nalu_cli.evaluation import extrapolate as run_extrapolate
    from nalu_cli.evaluation import parse_cli_range

    parsed = [parse_cli_range(text) for text in ranges] if ranges else None
    report = run_extrapolate(path, parsed)
    if plot is not None:
        from nalu_cli.plots import extrapolation_plot

        report["plot"] = str(extrapolation_plot(report, plot, overwrite=overwrite))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{report['task']['formula']}: trained on {format_range(report['task']['interpolation_range'])}")
    for column in ("range", "MSE", "relative error", "threshold", "success"):
        table.add_column(column)
    for row in report["ranges"]:
        table.add_row(
            format_range(row["range"]),
            "overflow" if row["overflow"] else format_number(row["mse"]),
            "overflow" if row["overflow"] else format_number(row["relative_error"]),
            format_number(row["threshold"]),
            format_number(row["success"]),
        )
    _console().print(table)
    if plot is not None:
        print(f"plot: {report['plot']}")


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Run directory or nalu SavedModel.")],
    snap: Annotated[
        bool, typer.Option("--snap", help="Round weights and gates to their exact values; save if not worse.")
    ] = False,
    out: Annotated[Optional[Path], typer.Option(help="Where --snap writes the snapped SavedModel (+ model.keras).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing SavedModel at --out.")] = False,
    tolerance: Annotated[float, typer.Option(help="List weights further than this from their exact value.")] = 1e-4,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """The learned formula over input slices, its weights off {-1, 0, 1}, and whether it is the task's formula.

    With --snap --out DIR: the model with every weight at its exact value, kept only if its
    interpolation error does not grow (exit code 1 and nothing saved otherwise).
    """
    if snap and out is None:
        raise NaluError("--snap needs --out DIR for the snapped model")
    if out is not None and not snap:
        raise NaluError("--out is only used with --snap")
    if snap:
        from nalu_cli.rundir import check_output

        check_output(out, overwrite, kind="SavedModel")  # before any work, so a refusal is one line
    import_tensorflow()
    from nalu_cli.inspection import inspect as run_inspect
    from nalu_cli.inspection import snap as run_snap

    report = run_inspect(path, tolerance=tolerance)
    if snap:
        report["snap"] = run_snap(path, out, overwrite=overwrite)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_inspection(report)
    if snap and not report["snap"]["saved"]:
        raise typer.Exit(1)


def _print_inspection(report: dict, shown: int = 10):
    units = report["model"]["units"]
    print(f"model:    {units[0] if units[0] == units[1] else '-'.join(units)} ({report['path']})")
    for layer in report["layers"][:-1]:
        for j, output in enumerate(layer["outputs"]):
            gate = f"  (gate {output['gate']:.3g}: {output['path']} path)" if output["gate"] is not None else ""
            print(f"          {layer['name']}[{j}] = {output['expression']}{gate}")
    final = report["layers"][-1]["outputs"][0] if report["layers"] else None
    if final is not None and final["gate"] is not None:
        print(f"          output gate {final['gate']:.3g}: {final['path']} path")
    print(f"learned:  {report['expression'] or report['unreadable']}")
    if report["simplified"] and report["simplified"] != report["expression"]:
        print(f"          {report['simplified'].replace('y =', '=', 1)}")
    print(f"task:     {report['true_expression']}")
    print(f"matches:  {'yes' if report['matches'] else 'no'}")
    print(f"sparsity error: {format_number(report['sparsity_error'])} (max over weights of min(|W|, |1 - |W||))")
    deviating = report["deviating_weights"]
    print(f"weights off their exact values by more than {report['tolerance']:g}: {len(deviating)} of {report['weights_total']}")
    for row in deviating[:shown]:
        print(f"  {row['layer']} {row['weight']:<12} {format_number(row['value'], digits=6):>12} -> {format_number(row['exact'])}")
    if len(deviating) > shown:
        print(f"  ... and {len(deviating) - shown} more (--json lists them all)")
    if not report["snappable"]:
        print(f"cannot snap {report['cannot_snap']}")
    if "snap" not in report:
        return
    result = report["snap"]
    far = result["far"]
    kept = "not worse: kept" if result["accepted"] else "WORSE: rejected"
    print(
        f"snapped:  interpolation MSE {format_number(result['interpolation_mse_before'])} -> "
        f"{format_number(result['interpolation_mse_after'])} ({kept})"
    )
    precision = "at float precision" if far["exact"] else f"above float precision ({far['float_precision']:g})"
    exponent = round(math.log10(far["factor"]))
    factor = f"10^{exponent}" if 10.0**exponent == far["factor"] else f"{far['factor']:g}"
    print(
        f"          relative error at {factor}x the extrapolation range, {format_range(far['range'])}: "
        f"{format_number(far['relative_error_before'])} -> {format_number(far['relative_error_after'])} ({precision})"
    )
    if result["saved"]:
        print(f"saved:    {result['files']['savedmodel']} (SavedModel), {result['files']['keras']}")
    else:
        print("snapping made the interpolation error worse; nothing saved", file=sys.stderr)


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    out: Annotated[
        Optional[Path], typer.Option(help="Image file (.png, .svg or .pdf).", show_default="RUN/training_curves.png")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing image at --out.")] = False,
):
    """Training curves: loss, interpolation and extrapolation MSE, and the success threshold."""
    from nalu_cli.plots import training_plot

    print(f"plot: {training_plot(run, out, overwrite=overwrite)}")


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="Run directory (or a nalu SavedModel).")],
    out: Annotated[Path, typer.Option(help="Output SavedModel directory (other formats go inside it).")],
    formats: Annotated[
        Optional[list[str]],
        typer.Option("--format", help="savedmodel (always), keras, tflite, onnx; repeatable."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export at --out.")] = False,
):
    """Write a SavedModel that plain TensorFlow can load and serve (and .keras / .tflite / .onnx)."""
    import_tensorflow()
    from nalu_cli.export import export as run_export

    result = run_export(path, out, formats or ["savedmodel"], overwrite=overwrite)
    for kind, file in result["files"].items():
        print(f"{kind:>10}: {file}")


@app.command()
def predict(
    path: Annotated[Path, typer.Argument(help="Run directory or nalu SavedModel.")],
    inputs: Annotated[Path, typer.Argument(help=".npy or CSV file, one sample of input_size numbers per row.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
):
    """Predictions for the rows of an input file (one number per line)."""
    import_tensorflow()
    from nalu_cli.export import predict as run_predict

    predictions = run_predict(path, inputs)
    if as_json:
        print(json.dumps([float(value) for value in predictions]))
    else:
        print("\n".join(repr(float(value)) for value in predictions))


class Protocol(str, Enum):
    mj = "mj"
    trask = "trask"


class Backend(str, Enum):
    local = "local"
    ray = "ray"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@app.command()
def benchmark(
    ops: Annotated[str, typer.Option(help="Comma-separated ops.")] = ",".join(OPS),
    units: Annotated[
        str, typer.Option(help="Comma-separated units or FIRST-SECOND architectures; 'default' is nalu train's model.")
    ] = "default",
    seeds: Annotated[str, typer.Option(help="N (seeds 0..N-1), LO:HI, or a comma list.")] = "10",
    steps: Annotated[Optional[int], typer.Option(help="Maximum training steps per seed.")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="YAML with any training setting.")] = None,
    out: Annotated[Path, typer.Option(help="Results directory; rerunning resumes it.")] = Path("runs/benchmark"),
    replicas: Annotated[int, typer.Option(help="Seeds trained together in one graph.")] = 8,
    protocol: Annotated[Protocol, typer.Option(help="mj: success rates; trask: Table 1 normalised errors.")] = Protocol.mj,
    backend: Annotated[Backend, typer.Option(help="local worker processes, or Ray.")] = Backend.local,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster: auto or HOST:PORT (default: start one here).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel workers.", show_default="CPU count")] = None,
    as_markdown: Annotated[bool, typer.Option("--markdown", help="Print the final table as Markdown.")] = False,
):
    """Success rates over seeds for a grid of ops x units (Madsen & Johansen criterion, Wilson 95% CI)."""
    import time

    from nalu_cli.benchmark import parse_seeds, run_benchmark
    from nalu_cli.config import OPS as KNOWN_OPS
    from nalu_cli.config import load_yaml

    op_list = _split(ops)
    for op in op_list:
        if op not in KNOWN_OPS:
            raise NaluError(f"unknown op '{op}' in --ops (choose from {', '.join(KNOWN_OPS)})")
    unit_list = _split(units)
    if not op_list or not unit_list:
        raise NaluError("--ops and --units must each name at least one entry")
    seed_list = parse_seeds(seeds)
    settings = load_yaml(config_file) if config_file else {}
    if workers is not None and workers < 1:
        raise NaluError(f"--workers must be at least 1, got {workers}")
    from rich.live import Live

    records: list[dict] = []
    total = len(op_list) * len(unit_list) * len(seed_list)
    started = time.perf_counter()
    console = _console()

    def render():
        return _benchmark_table(records, protocol.value, f"{len(records)}/{total} seeds, {time.perf_counter() - started:.0f} s")

    with Live(render(), console=console, refresh_per_second=2, transient=as_markdown) as live, _sigterm_interrupts():

        def on_results(fresh):
            records.extend(fresh)
            live.update(render())

        try:
            final = run_benchmark(
                op_list, unit_list, seed_list, out, base_settings=settings, steps=steps, replicas=replicas,
                protocol=protocol.value, backend=backend.value, workers=workers, ray_address=ray_address,
                on_results=on_results,
            )
        except KeyboardInterrupt:
            live.stop()
            print(f"interrupted: {len(records)} finished seeds are in {out}; rerun the same command to resume",
                  file=sys.stderr)
            raise typer.Exit(130) from None
        records[:] = final
        live.update(render())
    if as_markdown:
        from nalu_cli.benchmark import markdown, mj_table, summarize, trask_table

        table = trask_table if protocol is Protocol.trask else mj_table
        print(markdown(*table(summarize(records))))
    console.print(f"results: {out}/results.jsonl ({len(records)} seeds, {time.perf_counter() - started:.0f} s)")


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (kill, a scheduler's stop) ends the command like Ctrl-C does: cleanly, saying how to resume."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _benchmark_table(records, protocol: str, caption: str):
    from rich.table import Table

    from nalu_cli.benchmark import mj_table, summarize, trask_table

    header, body = (trask_table if protocol == "trask" else mj_table)(summarize(records))
    table = Table(caption=caption)
    for column in header:
        table.add_column(column)
    for row in body:
        table.add_row(*row)
    return table


def main():
    app()
