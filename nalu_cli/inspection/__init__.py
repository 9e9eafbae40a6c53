"""Reading what a trained model computes, and snapping it to exact arithmetic (`nalu inspect`).

A unit that has learned a*b holds weights at -1, 0 and 1 (gates at 0 and 1) that spell
out the formula. `inspect` reads them as an expression over input slices and compares
it with the task's true formula as algebra, not as text; `snap` moves every weight to its
exact value, keeps the result only if the interpolation validation error does not grow,
and measures the error 10^6 times beyond the extrapolation range (a recurrent model: on
sequences of 10,000 steps), where only exact arithmetic survives. A recurrent model reads
as sums over the steps, sum_t, when its cell is an exact accumulator.

    loading.py    a run or SavedModel as a Keras model, its unit layers and their weights
    algebra.py    terms, canonical forms, expression text; the task's formula as algebra
    reading.py    each unit's exact weights, the expression they compute, the weights off them
    report.py     inspect
    snapping.py   snap
"""

from nalu_cli.inspection.algebra import canon_text, true_canon
from nalu_cli.inspection.report import DEVIATION_TOLERANCE, inspect
from nalu_cli.inspection.snapping import (
    FAR_FACTOR,
    FAR_LENGTH,
    FAR_SAMPLES,
    FAR_SEQUENCES,
    FLOAT_PRECISION,
    MSE_RELATIVE_SLACK,
    MSE_ROUNDING_NOISE,
    snap,
)

__all__ = [
    "DEVIATION_TOLERANCE",
    "FAR_FACTOR",
    "FAR_LENGTH",
    "FAR_SAMPLES",
    "FAR_SEQUENCES",
    "FLOAT_PRECISION",
    "MSE_RELATIVE_SLACK",
    "MSE_ROUNDING_NOISE",
    "canon_text",
    "inspect",
    "snap",
    "true_canon",
]
