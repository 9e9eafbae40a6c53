"""`nalu eval`, `nalu extrapolate` and `nalu inspect`: reports on a trained model, as tables or JSON."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from nalu_cli._tf import import_tensorflow
from nalu_cli.cli import render
from nalu_cli.cli.options import JsonOption, ModelPathArg, overwrite_option
from nalu_cli.errors import NaluError
from nalu_cli.formatting import format_number, format_range
from nalu_cli.rundir import to_json


def eval_command(path: ModelPathArg, as_json: JsonOption = False):
    """Interpolation and extrapolation error, Trask's normalised error, and the success criterion.

    Recurrent models: interpolation on sequences of the training length, extrapolation on longer ones.
    """
    import_tensorflow()
    from nalu_cli.evaluation import evaluate

    report = evaluate(path)
    if as_json:
        print(to_json(report, indent=2))
        return
    recurrent = report["task"].get("kind") == "recurrent"
    length = ["length"] if recurrent else []
    header = ["split", "range", *length, "MSE", "threshold", "below", "normalised (random=100)"]
    rows = [
        [
            split,
            format_range(report["task"][f"{split}_range"]),
            *([f"T={report[split]['length']:,}"] if recurrent else []),
            format_number(report[split]["mse"]),
            format_number(report[split]["threshold"]),
            format_number(report[split]["below_threshold"]),
            format_number(report[split]["normalized_error"]),
        ]
        for split in ("interpolation", "extrapolation")
    ]
    console = render.console()
    console.print(render.table(header, rows, title=f"{report['task']['formula']}  ({report['path']})"))
    extrapolation = report["extrapolation"]
    relation = "below" if report["success"] else "not below"
    verdict = "[bold green]SUCCESS[/]" if report["success"] else "[bold red]FAILURE[/]"
    console.print(
        f"{verdict}: extrapolation MSE {format_number(extrapolation['mse'])} is {relation} the threshold "
        f"{format_number(extrapolation['threshold'])}, the MSE of a near-perfect solution "
        f"(eps=1e-5; Madsen & Johansen 2020)"
    )


def extrapolate(
    path: ModelPathArg,
    ranges: Annotated[
        Optional[list[str]],
        typer.Option("--range", help="Input range LO:HI (repeatable; use --range=-6:-2 for negatives)."),
    ] = None,
    lengths: Annotated[
        Optional[list[str]],
        typer.Option(
            "--length",
            help="Recurrent models: sequence lengths T, comma-separated (default 10,100,1000,10000; "
            "with --range only: the test length).",
        ),
    ] = None,
    samples: Annotated[
        Optional[int],
        typer.Option(help="Samples per row.", show_default="10,000; recurrent: 1,000 sequences"),
    ] = None,
    as_json: JsonOption = False,
    plot: Annotated[
        Optional[Path],
        typer.Option(help="Also draw error against input magnitude (recurrent: sequence length), log-log, "
                     "to this .png file."),
    ] = None,
    overwrite: Annotated[bool, overwrite_option("--plot file")] = False,
):
    """Error as inputs leave the training range (default: the extrapolation range scaled 1x to 1000x).

    Recurrent models: error as sequences grow longer than the training ones (default T = 10, 100,
    1000, 10000 on the extrapolation range); one row per range and length.
    """
    from nalu_cli.evaluation import parse_cli_range, parse_lengths

    parsed_lengths = parse_lengths(lengths) if lengths else None  # before any work, so a bad one is one line
    if samples is not None and samples < 1:
        raise NaluError(f"--samples must be at least 1, got {samples}")
    parsed = [parse_cli_range(text) for text in ranges] if ranges else None
    if plot is not None:
        from nalu_cli.plots import check_plot_path, require_matplotlib

        require_matplotlib()  # before any work, so a missing extra or an existing file is one line
        check_plot_path(plot, overwrite)
    import_tensorflow()
    from nalu_cli.evaluation import extrapolate as run_extrapolate

    report = run_extrapolate(path, parsed, samples=samples, lengths=parsed_lengths)
    recurrent = report["task"].get("kind") == "recurrent"
    if plot is not None:
        from nalu_cli.plots import extrapolation_plot, length_plot

        report["plot"] = str((length_plot if recurrent else extrapolation_plot)(report, plot, overwrite=overwrite))
    if as_json:
        print(to_json(report, indent=2))
        return
    header = ["range", *(["length"] if recurrent else []), "MSE", "relative error", "threshold", "success"]
    rows = [
        [
            format_range(row["range"]),
            *([f"T={row['length']:,}"] if recurrent else []),
            "overflow" if row["overflow"] else format_number(row["mse"]),
            "overflow" if row["overflow"] else format_number(row["relative_error"]),
            format_number(row["threshold"]),
            format_number(row["success"]),
        ]
        for row in report["ranges"]
    ]
    task = report["task"]
    title = f"{task['formula']}: trained on {format_range(task['interpolation_range'])}"
    if recurrent:
        title += f", T={task['length']:,}"
    render.console().print(render.table(header, rows, title=title))
    if plot is not None:
        print(f"plot: {report['plot']}")


def inspect(
    path: ModelPathArg,
    snap: Annotated[
        bool, typer.Option("--snap", help="Round weights and gates to their exact values; save if not worse.")
    ] = False,
    out: Annotated[Optional[Path], typer.Option(help="Where --snap writes the snapped SavedModel (+ model.keras).")] = None,
    overwrite: Annotated[bool, overwrite_option("SavedModel at --out")] = False,
    tolerance: Annotated[float, typer.Option(help="List weights further than this from their exact value.")] = 1e-4,
    as_json: JsonOption = False,
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
        from nalu_cli.outputs import check_apart, check_output

        check_output(out, overwrite, kind="SavedModel")  # before any work, so a refusal is one line
        check_apart(path, out)
    import_tensorflow()
    from nalu_cli.inspection import inspect as run_inspect
    from nalu_cli.inspection import snap as run_snap

    report = run_inspect(path, tolerance=tolerance)
    if snap:
        report["snap"] = run_snap(path, out, overwrite=overwrite)
    if as_json:
        print(to_json(report, indent=2))
    else:
        _print_inspection(report)
    if snap and not report["snap"]["saved"]:
        raise typer.Exit(1)


def _print_inspection(report: dict, shown: int = 10):
    units = report["model"]["units"]
    recurrent = report["task"].get("kind") == "recurrent"
    kind = ", recurrent" if recurrent else ""
    print(f"model:    {units[0] if units[0] == units[1] else '-'.join(units)}{kind} ({report['path']})")
    gate_text = lambda output: (  # noqa: E731
        f"  (gate {output['gate']:.3g}: {output['path']} path)" if output["gate"] is not None else ""
    )
    for layer in report["layers"][:-1]:
        if layer.get("recurrent"):  # the cell's step, then the last state's closed form if it has one
            for j, output in enumerate(layer["outputs"]):
                start = format_number(output["initial_state"])
                print(f"          {output['step']}, h_0[{j}] = {start}{gate_text(output)}")
            for j, output in enumerate(layer["outputs"]):
                if output["expression"] is not None:
                    print(f"          h_T[{j}] = {output['expression']}")
            continue
        for j, output in enumerate(layer["outputs"]):
            print(f"          {layer['name']}[{j}] = {output['expression']}{gate_text(output)}")
    final = report["layers"][-1]["outputs"][0] if report["layers"] else None
    if final is not None and final["gate"] is not None:
        print(f"          output gate {final['gate']:.3g}: {final['path']} path")
    if final is not None and report["unreadable"] and recurrent and len(report["layers"]) == len(units):
        print(f"          y = {final['expression']}")  # over the last state h_T, which has no closed form
    print(f"learned:  {report['expression'] or report['unreadable']}")
    if report["simplified"] and report["simplified"] != report["expression"]:
        print(f"          {report['simplified'].replace('y =', '=', 1)}")
    print(f"task:     {report['true_expression']}")
    print(f"matches:  {'yes' if report['matches'] else 'no'}")
    print(f"sparsity error: {format_number(report['sparsity_error'])} (max over weights of min(|W|, |1 - |W||))")
    deviating = report["deviating_weights"]
    print(f"weights off their exact values by more than {report['tolerance']:g}: {len(deviating)} of {report['weights_total']}")
    width = max([12, *(len(row["weight"]) for row in deviating[:shown])])  # "initial_state[0]" is longer
    for row in deviating[:shown]:
        value, exact = format_number(row["value"], digits=6), format_number(row["exact"])
        print(f"  {row['layer']} {row['weight']:<{width}} {value:>12} -> {exact}")
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
    if far.get("length") is not None:
        where = f"T = {far['length']:,} steps on the extrapolation range"
    else:
        exponent = round(math.log10(far["factor"]))
        factor = f"10^{exponent}" if 10.0**exponent == far["factor"] else f"{far['factor']:g}"
        where = f"{factor}x the extrapolation range"
    print(
        f"          relative error at {where}, {format_range(far['range'])}: "
        f"{format_number(far['relative_error_before'])} -> {format_number(far['relative_error_after'])} ({precision})"
    )
    if result["saved"]:
        print(f"saved:    {result['files']['savedmodel']} (SavedModel), {result['files']['keras']}")
    else:
        print("snapping made the interpolation error worse; nothing saved", file=sys.stderr)
