"""Values float32 cannot represent: known from the config, refused up front (tests/test_bad_input.py
has the messages); what is not known up front (every evaluation overflowing) ends without a crash."""

import json

import numpy as np
import pytest

from nalu_cli import magnitudes, tasks
from nalu_cli.evaluation import relative_error
from tests.conftest import invoke


def spec(op, subsets, intervals, kind="static", length=None):
    return tasks.TaskSpec(op=op, input_size=12, subsets=subsets, interpolation_range=intervals,
                          extrapolation_range=intervals, seed=0, kind=kind, length=length, extrapolation_length=length)


def extreme_input(task, intervals, sign):
    """The input that makes y largest (sign 1) or most negative (-1) for the sum ops, or largest in |y|
    for products: every entry at the end of the range that pushes y that way."""
    lowest, highest = intervals[0][0], intervals[-1][1]
    x = np.full(task.shape(), max(lowest, highest, key=abs))
    if task.op in ("add", "sub"):
        (a0, a1), (b0, b1) = task.subsets
        for i in range(task.input_size):
            weight = (a0 <= i < a1) + (1 if task.op == "add" else -1) * (b0 <= i < b1)
            x[..., i] = highest if weight * sign > 0 else lowest
    return x[None]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "square", "sqrt", "div"])
@pytest.mark.parametrize("kind, length", [("static", None), ("recurrent", 7)])
def test_the_target_bound_is_reached_by_an_input_and_never_passed(op, kind, length):
    intervals = ((1.0, 2.0), (3.0, 5.0)) if op in ("sqrt", "div") else ((-6.0, -2.0), (1.0, 3.0))
    task = spec(op, ((1, 6), (4, 10)), intervals, kind, length)  # overlapping slices of 5 and 6
    bound = magnitudes.target_bound(task, intervals, length)
    samples = tasks.uniform_union_numpy(np.random.default_rng(0), intervals, (20_000, *task.shape()))
    assert np.max(np.abs(tasks.targets_numpy(task, samples))) <= bound
    if op != "div":  # exact: reached (a/b's is an upper bound; overlapping slices cannot reach it)
        reached = max(np.max(np.abs(tasks.targets_numpy(task, extreme_input(task, intervals, s)))) for s in (1, -1))
        assert reached == pytest.approx(bound, rel=1e-12)


def test_the_relative_error_of_targets_that_are_all_zero_is_none_not_a_crash():
    assert relative_error(0.0, np.zeros((5, 1), np.float32)) is None
    assert relative_error(1.0, np.zeros((0, 1), np.float32)) is None


NAN_CONFIG = """\
task: {op: add, input_size: 20, interpolation_range: [1000, 2000], extrapolation_range: [2000, 6000],
       validation_size: 100, test_size: 100}
model: {unit: nmu}
training: {steps: 100, eval_every: 100, snap_selection: false}
"""


def test_a_run_whose_every_evaluation_overflows_ends_in_one_line_without_a_model(tmp_path):
    """An NMU over 20 inputs near 1,000 multiplies them: its outputs overflow float32 from the start
    (the targets, sums near 10^4, do not), so nothing is ever selected: said in one line, exit 2;
    summary.json says so, and eval and plot say it too, without a traceback."""
    config = tmp_path / "nan.yaml"
    config.write_text(NAN_CONFIG)
    run = tmp_path / "run"
    result = invoke("train", "--config", config, "--out", run)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("nalu: error:")]
    assert len(errors) == 1 and f"no evaluation of {run} up to step 100 had a finite interpolation MSE" in errors[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected_step"] is None and summary["interpolation_mse"] is None and not summary["success"]
    result = invoke("eval", run)
    assert result.exit_code == 2 and "has no model: none of its evaluations had a finite" in result.stderr
    assert invoke("plot", run).exit_code == 0
