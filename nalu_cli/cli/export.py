"""`nalu plot`, `nalu export` and `nalu predict`: files made from a run, and predictions from a model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from nalu_cli._tf import import_tensorflow
from nalu_cli.cli.options import ModelPathArg, overwrite_option


def plot(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    out: Annotated[
        Optional[Path], typer.Option(help="Image file (.png, .svg or .pdf).", show_default="RUN/training_curves.png")
    ] = None,
    overwrite: Annotated[bool, overwrite_option("image at --out")] = False,
):
    """Training curves: loss, interpolation and extrapolation MSE, and the success threshold."""
    from nalu_cli.plots import training_plot

    print(f"plot: {training_plot(run, out, overwrite=overwrite)}")


def export(
    path: Annotated[Path, typer.Argument(help="Run directory (or a nalu SavedModel).")],
    out: Annotated[Path, typer.Option(help="Output SavedModel directory (other formats go inside it).")],
    formats: Annotated[
        Optional[list[str]],
        typer.Option("--format", help="savedmodel (always), keras, tflite (static models only), onnx; repeatable."),
    ] = None,
    overwrite: Annotated[bool, overwrite_option("export at --out")] = False,
):
    """Write a SavedModel that plain TensorFlow can load and serve (and .keras / .tflite / .onnx)."""
    import_tensorflow()
    from nalu_cli.export import export as run_export

    result = run_export(path, out, formats or ["savedmodel"], overwrite=overwrite)
    for kind, file in result["files"].items():
        print(f"{kind:>10}: {file}")


def predict(
    path: ModelPathArg,
    inputs: Annotated[
        Path,
        typer.Argument(help=".npy or CSV file, one sample of input_size numbers per row; recurrent models: "
                       ".npy of sequences [N, T, input_size]."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
):
    """Predictions for the rows (recurrent models: the sequences) of an input file, one number per line."""
    import_tensorflow()
    import numpy as np

    from nalu_cli.export import predict as run_predict
    from nalu_cli.rundir import to_json

    predictions = run_predict(path, inputs)
    if as_json:
        print(to_json([float(value) for value in predictions]))
    else:
        print("\n".join(repr(float(value)) for value in predictions))
    overflowing = int(np.sum(~np.isfinite(predictions)))
    if overflowing:
        shown = "null" if as_json else "inf or nan"
        print(f"nalu: note: {overflowing} of {len(predictions)} predictions overflow float32 (printed as {shown})",
              file=sys.stderr)
