"""`nalu benchmark`: success rates over seeds for a grid of ops x units, shown live as it fills in."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from nalu_cli.benchmark.grid import DEFAULT_REPLICAS
from nalu_cli.cli import render
from nalu_cli.cli.options import Backend, Protocol, TaskOption, overwrite_option
from nalu_cli.config import OPS
from nalu_cli.errors import NaluError


def _split(text: str) -> list[str]:
    """'add, mul,add' -> ['add', 'mul']: an entry given twice is one cell (and counts once in the progress)."""
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def benchmark(
    ops: Annotated[str, typer.Option(help="Comma-separated ops.")] = ",".join(OPS),
    units: Annotated[
        str, typer.Option(help="Comma-separated units or FIRST-SECOND architectures; 'default' is nalu train's model.")
    ] = "default",
    seeds: Annotated[str, typer.Option(help="N (seeds 0..N-1), LO:HI, or a comma list.")] = "10",
    steps: Annotated[Optional[int], typer.Option(help="Maximum training steps per seed.")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="YAML with any training setting.")] = None,
    task: TaskOption = None,
    out: Annotated[
        Optional[Path],
        typer.Option(help="Results directory; rerunning resumes it.",
                     show_default="runs/benchmark; recurrent: runs/benchmark-recurrent"),
    ] = None,
    replicas: Annotated[int, typer.Option(help="Seeds trained together in one graph (a group); a worker trains "
                                          "group after group, each to its slowest seed.")] = DEFAULT_REPLICAS,
    protocol: Annotated[
        Protocol, typer.Option(help="mj: success rates; trask: Table 1 normalised errors.")
    ] = Protocol.mj,
    backend: Annotated[Backend, typer.Option(help="local worker processes, or Ray.")] = Backend.local,
    ray_address: Annotated[
        Optional[str], typer.Option(help="Ray cluster: auto or HOST:PORT (default: start one here).")
    ] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel workers.", show_default="CPU count")] = None,
    as_markdown: Annotated[bool, typer.Option("--markdown", help="Print the final table as Markdown.")] = False,
    plot: Annotated[
        Optional[Path],
        typer.Option(help="Also draw the table: success rate per op with its interval, one colour per unit, "
                     "and the solved-at steps, to this .png/.svg/.pdf file (a finished --out: nothing trains)."),
    ] = None,
    overwrite: Annotated[bool, overwrite_option("--plot file (results are always kept)")] = False,
):
    """Success rates over seeds for a grid of ops x units (Madsen & Johansen criterion, Wilson 95% CI).

    --task recurrent (or task.kind in --config) benchmarks the recurrent task instead of the static one.
    """
    import time

    from nalu_cli.benchmark import parse_seeds, run_benchmark
    from nalu_cli.config_files import load_yaml

    op_list = _split(ops)
    for op in op_list:
        if op not in OPS:
            raise NaluError(f"unknown op '{op}' in --ops (choose from {', '.join(OPS)})")
    unit_list = _split(units)
    if not op_list or not unit_list:
        raise NaluError("--ops and --units must each name at least one entry")
    seed_list = parse_seeds(seeds)
    settings = load_yaml(config_file) if config_file else {}
    if workers is not None and workers < 1:
        raise NaluError(f"--workers must be at least 1, got {workers}")
    kind = task.value if task else None
    given = settings.get("task") if isinstance(settings.get("task"), dict) else {}
    kind_run = kind or given.get("kind") or "static"
    if out is None:
        out = Path("runs/benchmark-recurrent" if kind_run == "recurrent" else "runs/benchmark")
    if overwrite and plot is None:
        raise NaluError("--overwrite replaces a --plot file and needs --plot; a benchmark's results are never "
                        "replaced (use another --out to start afresh)")
    if plot is not None:
        from nalu_cli.plots import check_plot_path, require_matplotlib

        require_matplotlib()  # before any training, so a missing extra or a bad path is one line
        check_plot_path(plot, overwrite, made_before=out)
    from rich.live import Live

    records: list[dict] = []
    total = len(op_list) * len(unit_list) * len(seed_list)
    started = time.perf_counter()
    console = render.console()

    def live_table():
        caption = f"{len(records)}/{total} seeds, {time.perf_counter() - started:.0f} s"
        return _benchmark_table(records, protocol.value, caption)

    with Live(live_table(), console=console, refresh_per_second=2, transient=as_markdown) as live, _sigterm_interrupts():

        def on_results(fresh):
            records.extend(fresh)
            live.update(live_table())

        try:
            final = run_benchmark(
                op_list, unit_list, seed_list, out, base_settings=settings, steps=steps, replicas=replicas,
                protocol=protocol.value, backend=backend.value, workers=workers, ray_address=ray_address,
                on_results=on_results, kind=kind,
            )
        except KeyboardInterrupt:
            live.stop()
            print(f"interrupted: {len(records)} finished seeds are in {out}; rerun the same command to resume",
                  file=sys.stderr)
            raise typer.Exit(130) from None
        records[:] = final
        live.update(live_table())
    if as_markdown:
        from nalu_cli.benchmark import markdown, mj_table, summarize, trask_table

        table = trask_table if protocol is Protocol.trask else mj_table
        print(markdown(*table(summarize(records))))
    console.print(f"results: {out}/results.jsonl ({len(records)} seeds, {time.perf_counter() - started:.0f} s)")
    if plot is not None:
        from nalu_cli.benchmark import summarize
        from nalu_cli.plots import benchmark_plot

        print(f"plot: {benchmark_plot(summarize(records), plot, kind=kind_run, overwrite=overwrite)}")


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
    from nalu_cli.benchmark import mj_table, summarize, trask_table

    header, body = (trask_table if protocol == "trask" else mj_table)(summarize(records))
    return render.table(header, body, caption=caption)
