"""Pictures: extrapolation error against input magnitude (or sequence length), a run's training curves,
and a benchmark's success rates with the steps its seeds were solved at.

matplotlib is an optional extra (`pip install 'nalu-cli[plot]'`), imported only here and
only when a plot is asked for, with the non-interactive Agg backend. Figures have a fixed
size in pixels (FIGURE_SIZE at DPI) so they line up in reports.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nalu_cli.errors import NaluError
from nalu_cli.outputs import check_writable, recover
from nalu_cli.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    atomic_path,
    is_run_dir,
    read_json,
    read_run_config,
    rewrite_hint,
)

FIGURE_SIZE = (8.0, 5.0)  # inches
DPI = 100  # so a figure is 800 x 500 pixels
FORMATS = ("png", "svg", "pdf")
TRAINING_PLOT_FILE = "training_curves.png"
# Log axes cannot show 0: an exact (zero) error is drawn at this floor and labelled so.
ERROR_FLOOR = 1e-16
FLOAT32_EPS = 2.0**-23  # relative rounding of one float32 operation: an exact model's error is about this


def require_matplotlib():
    """pyplot on the Agg backend, or the one-line install hint."""
    try:
        import matplotlib
    except ImportError:
        raise NaluError("plotting needs the plot extra: pip install 'nalu-cli[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_plot_path(path: Path, overwrite: bool, made_before: Path | None = None) -> str:
    """The format to write `path` in; refuses an existing file unless `overwrite`.

    `made_before`: a directory the command creates before it draws (a benchmark's --out), so the
    plot may go in it while it does not exist yet."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        endings = [f".{f}" for f in FORMATS]
        raise NaluError(f"plot file {path} must end in {', '.join(endings[:-1])} or {endings[-1]}")
    if path.is_dir():
        raise NaluError(f"{path} is a directory; give a file name for the plot")
    if path.exists() and not overwrite:
        raise NaluError(f"{path} already exists; pass --overwrite to replace it")
    made_by_then = made_before is not None and path.parent.absolute() == Path(made_before).absolute()
    if not path.parent.is_dir() and not made_by_then:
        raise NaluError(f"cannot write {path}: directory {path.parent} does not exist")
    check_writable(path.parent)
    return suffix


def _save(plt, figure, path: Path, overwrite: bool) -> Path:
    file_format = check_plot_path(path, overwrite)
    try:
        with atomic_path(Path(path)) as tmp:
            figure.savefig(tmp, format=file_format, dpi=DPI)
    finally:
        plt.close(figure)
    return Path(path)


def _magnitudes(intervals) -> tuple[float, float]:
    """The smallest and largest |x| over a union of intervals."""
    low = min(0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)) for lo, hi in intervals)
    high = max(max(abs(lo), abs(hi)) for lo, hi in intervals)
    return low, high


def extrapolation_plot(report: dict, path: Path, overwrite: bool = False) -> Path:
    """Relative error against input magnitude (log-log), one bar per range, the training range shaded.

    `report` is what `evaluation.extrapolate` returns.
    """
    plt = require_matplotlib()
    check_plot_path(path, overwrite)
    task = report["task"]
    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    train_low, train_high = _magnitudes(task["interpolation_range"])
    spans, centres, errors, overflowed, exact = [], [], [], [], False
    for row in report["ranges"]:
        low, high = _magnitudes(row["range"])
        low = low if low > 0 else high / 10  # a range reaching 0 starts one decade below its top
        if row["overflow"] or row["relative_error"] is None:
            overflowed.append(math.sqrt(low * high))
            continue
        error = row["relative_error"]
        exact |= error < ERROR_FLOOR
        spans.append((low, high))
        centres.append(math.sqrt(low * high))
        errors.append(max(error, ERROR_FLOOR))
    axes.axvspan(train_low if train_low > 0 else train_high / 10, train_high, color="tab:green", alpha=0.2,
                 label="training (interpolation) range")
    if errors:
        axes.hlines(errors, [s[0] for s in spans], [s[1] for s in spans], color="tab:blue", linewidth=3, alpha=0.5)
        axes.plot(centres, errors, "o-", color="tab:blue", label="relative error sqrt(MSE / mean(y²))")
    axes.axhline(FLOAT32_EPS, color="grey", linestyle=":", linewidth=1, label="float32 precision (2^-23)")
    # Whole decades, at least one apart, so the axis always has labelled powers of ten.
    shown = [*errors, FLOAT32_EPS]
    low, high = math.floor(math.log10(min(shown))), math.ceil(math.log10(max(shown)))
    axes.set_ylim(10.0**low, 10.0 ** max(high, low + 1))
    for index, centre in enumerate(overflowed):
        axes.axvline(centre, color="tab:red", linestyle=":", label="overflow" if index == 0 else None)
    title = f"y = {task['formula']}: error as inputs leave the training range"
    return _finish_error_plot(plt, figure, axes, exact, "input magnitude |x|", title, path, overwrite)


def length_plot(report: dict, path: Path, overwrite: bool = False) -> Path:
    """A recurrent model's relative error against sequence length (log-log), one line per input range,
    the training length marked. `report` is what `evaluation.extrapolate` returns for a recurrent model.
    """
    plt = require_matplotlib()
    check_plot_path(path, overwrite)
    task = report["task"]
    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    by_range: dict[str, list] = {}
    for row in report["ranges"]:
        by_range.setdefault(json.dumps(row["range"]), []).append(row)
    shown, exact, overflow_labelled = [], False, False
    for index, (key, rows) in enumerate(by_range.items()):
        color = f"C{index % 10}"
        label = " u ".join(f"U[{lo:g}, {hi:g}]" for lo, hi in json.loads(key))
        points = [(row["length"], row["relative_error"]) for row in rows
                  if not row["overflow"] and row["relative_error"] is not None]
        if points:
            errors = [max(error, ERROR_FLOOR) for _, error in points]
            exact |= any(error < ERROR_FLOOR for _, error in points)
            shown += errors
            axes.plot([length for length, _ in points], errors, "o-", color=color, label=f"relative error on {label}")
        for row in rows:
            if row["overflow"] or row["relative_error"] is None:
                axes.axvline(row["length"], color=color, linestyle=":", label=None if overflow_labelled else "overflow")
                overflow_labelled = True
    axes.axvline(task["length"], color="tab:green", linewidth=2, alpha=0.5,
                 label=f"training length T={task['length']:,}")
    axes.axhline(FLOAT32_EPS, color="grey", linestyle=":", linewidth=1, label="float32 precision (2^-23)")
    shown.append(FLOAT32_EPS)
    # Whole decades, with room above the largest error (a failed model sits just below 1).
    low, high = math.floor(math.log10(min(shown))), math.ceil(math.log10(max(shown)) + 0.1)
    axes.set_ylim(10.0**low, 10.0 ** max(high, low + 1))
    title = f"y = {task['formula']}\nerror as sequences grow longer than in training"
    return _finish_error_plot(plt, figure, axes, exact, "sequence length T (steps)", title, path, overwrite)


def _finish_error_plot(plt, figure, axes, exact: bool, xlabel: str, title: str, path: Path, overwrite: bool) -> Path:
    """Log-log axes, the line where exact (zero) errors are drawn, labels, legend; the file written."""
    axes.set_xscale("log")
    axes.set_yscale("log")
    if exact:
        axes.axhline(ERROR_FLOOR, color="grey", linestyle="--", linewidth=1, label=f"exact (0, drawn at {ERROR_FLOOR:g})")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("relative error")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    return _save(plt, figure, path, overwrite)


def read_metrics(run_dir: Path) -> list[dict]:
    """A run's metrics entries. A last line cut short (a run being written, or killed) is left out;
    any other line that is not an entry is one error."""
    path = Path(run_dir) / METRICS_FILE
    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    entries = []
    for number, line in lines:
        try:
            entry = json.loads(line)
            entry["step"]
        except (ValueError, KeyError, TypeError):
            if number == lines[-1][0]:
                break
            raise NaluError(f"{path} line {number} is not a metrics entry; restore the file") from None
        entries.append(entry)
    return entries


def _title(run_dir: Path) -> str:
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        summary = read_json(summary_path, rewrite_hint(run_dir))
        return f"y = {summary['formula']}  ({summary['unit']}, seed {summary['seed']})"
    from nalu_cli import tasks

    resolved = read_run_config(run_dir)
    spec = tasks.TaskSpec.from_config(resolved.task, resolved.seed)
    return f"y = {spec.formula()}  ({resolved.model.name}, seed {resolved.seed}, in progress)"


def training_plot(run_dir: Path, path: Path | None = None, overwrite: bool = False) -> Path:
    """Loss, interpolation and extrapolation MSE against step (log scale), the success threshold,
    the selected checkpoint and the step the run was solved at. Default file: RUN/training_curves.png."""
    run_dir = Path(run_dir)
    recover(run_dir)  # a run a killed `nalu train --overwrite` was replacing
    if not run_dir.exists():
        raise NaluError(f"no such file or directory: {run_dir}")
    if not is_run_dir(run_dir):
        raise NaluError(f"{run_dir} is not a nalu run directory (no {CONFIG_FILE} and {METRICS_FILE})")
    path = Path(path) if path is not None else run_dir / TRAINING_PLOT_FILE
    plt = require_matplotlib()
    check_plot_path(path, overwrite)
    entries = read_metrics(run_dir)
    if not entries:
        raise NaluError(f"run {run_dir} has no metrics yet")
    summary = read_json(run_dir / SUMMARY_FILE, rewrite_hint(run_dir)) if (run_dir / SUMMARY_FILE).is_file() else {}
    steps = [entry["step"] for entry in entries]

    def series(key):
        return [_positive_or_nan(entry.get(key)) for entry in entries]

    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    axes.plot(steps, series("loss"), ".-", color="tab:grey", label="training MSE (mean since the last evaluation)")
    axes.plot(steps, series("interpolation_mse"), ".-", color="tab:blue", label="interpolation MSE (validation)")
    axes.plot(steps, series("extrapolation_mse"), ".-", color="tab:orange", label="extrapolation MSE (test)")
    threshold = next((e["success_threshold"] for e in reversed(entries) if e.get("success_threshold")), None)
    if threshold:
        axes.axhline(threshold, color="tab:red", linestyle="--", label=f"success threshold {threshold:.3g}")
    if summary.get("selected_step") is not None:
        axes.axvline(summary["selected_step"], color="tab:blue", linestyle=":", label="selected checkpoint")
    if summary.get("solved_at_step") is not None:
        axes.axvline(summary["solved_at_step"], color="tab:green", linestyle="-.", label="solved")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("MSE")
    axes.set_title(_title(run_dir))
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    return _save(plt, figure, path, overwrite)


def _positive_or_nan(value) -> float:
    """Log axes: missing, non-finite or non-positive values are gaps."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return math.nan
    return float(value)


def benchmark_plot(rows: list[dict], path: Path, kind: str = "static", overwrite: bool = False) -> Path:
    """A benchmark's table as a picture; `rows` are what `benchmark.summarize` returns (see benchmark_figure)."""
    plt = require_matplotlib()
    check_plot_path(path, overwrite)
    return _save(plt, benchmark_figure(plt, rows, kind), path, overwrite)


def benchmark_figure(plt, rows: list[dict], kind: str = "static"):
    """Two panels in the manner of Madsen & Johansen's figures, one colour per unit, units side by side
    within each op (ops in the table's order): the success rate with its Wilson 95% interval, and the
    step each successful seed was solved at (a short line at the median the table prints)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    from nalu_cli.ops import SYMBOLS

    ops = list(dict.fromkeys(row["op"] for row in rows))
    units = list(dict.fromkeys(row["unit"] for row in rows))
    width = 0.8 / len(units)  # of one unit's slot within an op
    solved_any = any(row["solved_at_steps"] for row in rows)
    figure, (rates, steps) = plt.subplots(1, 2, figsize=FIGURE_SIZE, dpi=DPI)
    for index, unit in enumerate(units):
        color = f"C{index % 10}"
        cells = [row for row in rows if row["unit"] == unit]
        xs = [ops.index(row["op"]) + (index - (len(units) - 1) / 2) * width for row in cells]
        rate = [row["success_rate"] for row in cells]
        below = [row["success_rate"] - row["wilson_low"] for row in cells]
        above = [row["wilson_high"] - row["success_rate"] for row in cells]
        rates.errorbar(xs, rate, yerr=[below, above], fmt="o", color=color, capsize=3, label=unit)
        for x, row in zip(xs, cells):
            solved = row["solved_at_steps"]
            if not solved:
                continue
            # Spread across the slot by the golden ratio: deterministic, and no false trend with the step.
            spread = [x + width * 0.6 * ((i * 0.6180339887) % 1 - 0.5) for i in range(len(solved))]
            steps.plot(spread, solved, "o", color=color, alpha=0.6, markersize=4, gid=f"solved {row['op']} {unit}")
            steps.hlines(row["median_solved_at_step"], x - width * 0.4, x + width * 0.4, color=color, linewidth=2,
                         gid=f"median {row['op']} {unit}")
    for axes in (rates, steps):
        axes.set_xticks(range(len(ops)), [SYMBOLS.get(op, op) for op in ops])
        axes.set_xlim(-0.5, len(ops) - 0.5)
        axes.grid(True, axis="y", alpha=0.3)
    rates.set_ylim(-0.03, 1.03)
    rates.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    rates.set_title("success rate (Wilson 95% interval)", fontsize="medium")
    steps.set_title("solved at step (each successful seed)", fontsize="medium")
    steps.set_ylim(bottom=0)
    if not solved_any:
        steps.set_yticks([])
        steps.text(0.5, 0.5, "no seed was solved", transform=steps.transAxes, ha="center", va="center",
                   color="grey")
    else:
        steps.yaxis.set_major_formatter(FuncFormatter(lambda step, _: f"{step:,.0f}"))
    counts = sorted({row["seeds"] for row in rows})
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    figure.suptitle(f"nalu benchmark, {kind} task: {seeds} seeds per op and unit")
    handles, labels = rates.get_legend_handles_labels()
    if solved_any:
        handles.append(Line2D([], [], color="grey", linewidth=2))
        labels.append("median solved-at step")
    figure.legend(handles, labels, loc="lower center", ncol=min(len(handles), 5), frameon=False)
    rows_of_legend = math.ceil(len(handles) / 5)
    figure.tight_layout(rect=(0, 0.06 * rows_of_legend, 1, 1))
    return figure
