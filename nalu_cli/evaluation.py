"""Evaluation with the literature's criteria, and extrapolation curves.

- interpolation / extrapolation MSE on the task's fixed validation and test sets;
- Trask et al.'s normalised error: 100 * MSE / MSE of a randomly initialised model
  of the same architecture (median over 10 initialisations), so random = 100, perfect = 0;
- Madsen & Johansen's success criterion: extrapolation MSE below the MSE of a
  near-perfect solution (eps = 1e-5), simulated for exactly this task.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nalu_cli import magnitudes, tasks, thresholds
from nalu_cli.config import check_domain, from_dict, parse_range
from nalu_cli.errors import NaluError
from nalu_cli.rundir import resolve_source

BASELINE_MODELS = 10
DEFAULT_SCALE_FACTORS = (1, 10, 100, 1000)
EXTRAPOLATE_SAMPLES = 10_000
# Recurrent extrapolation: sequence lengths (training is 10 steps, the test 1,000 by default),
# sequences per length, and the longest length accepted.
DEFAULT_LENGTHS = (10, 100, 1_000, 10_000)
EXTRAPOLATE_SEQUENCES = 1_000
MAX_LENGTH = 100_000


def mse(prediction: np.ndarray, target: np.ndarray) -> float:
    error = prediction.astype(np.float64) - target.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.mean(error * error))


def finite_or_none(value: float) -> float | None:
    """JSON-friendly: a non-finite figure (an overflowing model) is reported as null."""
    return value if math.isfinite(value) else None


def relative_error(model_mse: float, target: np.ndarray) -> float | None:
    """sqrt(MSE / mean(y^2)): error relative to the targets' size, comparable across ranges.
    None where it has no value: a non-finite MSE, or targets that are all 0."""
    target = target.astype(np.float64)
    mean_square = float(np.mean(target * target)) if target.size else 0.0
    if not math.isfinite(model_mse) or not mean_square > 0:
        return None
    return finite_or_none(math.sqrt(model_mse / mean_square))


def random_baseline_mse(model_config, spec: tasks.TaskSpec, datasets: dict) -> dict:
    """Median MSE of BASELINE_MODELS freshly initialised models of the run's architecture, per dataset."""
    from nalu_cli.model import build_model

    seeds = tasks.fork(spec.seed, tasks.BASELINE_STREAM).integers(2**31, size=BASELINE_MODELS)
    models = [build_model(model_config, spec.input_size, seed=int(seed), kind=spec.kind) for seed in seeds]
    if spec.recurrent:
        return _recurrent_baseline(models, datasets)
    errors = {name: [] for name in datasets}
    for model in models:
        for name, (x, y) in datasets.items():
            errors[name].append(mse(np.asarray(model(x)), y))
    return {name: float(np.median(values)) for name, values in errors.items()}


def _recurrent_baseline(models: list, datasets: dict) -> dict:
    """The recurrent models' median MSE, all of them in one compiled call per dataset.

    Eager Keras runs an RNN step by step from Python: 6 s per model on the 1,000 test sequences
    of 1,000 steps, a minute for the baseline. The pure forward pass of the stacked weights in one
    tf.function takes about 0.5 s for all ten (measured on 2 cores).
    """
    import tensorflow as tf

    from nalu_cli.model import forward, get_params

    template = models[0]
    params = tf.nest.map_structure(lambda *leaves: tf.constant(np.stack(leaves)), *[get_params(m) for m in models])
    run = tf.function(lambda params, x: forward(template, params, x), autograph=False)
    result = {}
    for name, (x, y) in datasets.items():
        x = np.asarray(x, np.float32)
        block = max(1, 10_000_000 // max(1, int(np.prod(x.shape[1:]))))  # sequences a call
        squared = np.zeros(len(models))
        for i in range(0, len(x), block):
            prediction = run(params, tf.constant(x[i : i + block])).numpy().astype(np.float64)  # [models, N, 1]
            with np.errstate(over="ignore", invalid="ignore"):
                squared += np.sum((prediction - y[i : i + block].astype(np.float64)) ** 2, axis=(1, 2))
        result[name] = float(np.median(squared / max(1, len(x))))
    return result


def normalized_error(model_mse: float, baseline_mse: float) -> float | None:
    if not (math.isfinite(model_mse) and math.isfinite(baseline_mse)) or baseline_mse == 0:
        return None
    return 100.0 * model_mse / baseline_mse


def evaluate(path: Path) -> dict:
    """Interpolation and extrapolation error of a run or nalu SavedModel, with success or not.

    Recurrent: interpolation on validation sequences of the training length (T=10 by default),
    extrapolation on test sequences of the extrapolation length (T=1000 by default).
    """
    from nalu_cli.export import SavedModelPredictor

    source = resolve_source(Path(path))
    spec = tasks.TaskSpec.from_dict(source.meta["task"])
    predict = SavedModelPredictor(source.saved_model)
    datasets = {"interpolation": tasks.validation_set(spec), "extrapolation": tasks.test_set(spec)}
    # The task's kind, so that a recurrent-only cell (lstm, gru) validates as the model it is.
    model_config = from_dict({"model": source.meta["model"], "task": {"kind": spec.kind}}).model
    baseline = random_baseline_mse(model_config, spec, datasets)
    # Recurrent: the validation sequences have the training length, the test ones the extrapolation length.
    lengths = {"interpolation": spec.length, "extrapolation": spec.extrapolation_length}
    limits = {
        "interpolation": thresholds.success_threshold(spec, spec.interpolation_range, length=spec.length),
        "extrapolation": thresholds.success_threshold(spec),
    }
    report = {"path": str(path), "task": {**spec.to_dict(), "formula": spec.formula()}}
    for name, (x, y) in datasets.items():
        model_mse = mse(predict(x), y)
        report[name] = {
            "length": lengths[name],  # null on the static task
            "mse": finite_or_none(model_mse),
            "threshold": limits[name],
            "below_threshold": bool(model_mse < limits[name]),
            "random_baseline_mse": baseline[name],
            "normalized_error": normalized_error(model_mse, baseline[name]),
        }
    report["success"] = report["extrapolation"]["below_threshold"]
    report["criterion"] = (
        f"extrapolation MSE < MSE of a near-perfect solution (eps={thresholds.SUCCESS_EPSILON:g}), Madsen & Johansen 2020"
    )
    return report


def parse_cli_range(text: str) -> list[list[float]]:
    """'LO:HI' -> [[lo, hi]]."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise NaluError(f"--range must be LO:HI with numbers, got '{text}'") from None
    return parse_range("--range", [lo, hi])


def default_ranges(spec: tasks.TaskSpec, factors=DEFAULT_SCALE_FACTORS) -> list[list[list[float]]]:
    """The extrapolation range, then the same range scaled by each factor (further from training)."""
    return [[[lo * f, hi * f] for lo, hi in spec.extrapolation_range] for f in factors]


def parse_lengths(texts: list[str]) -> list[int]:
    """['10,100', '1000'] -> [10, 100, 1000]: sequence lengths for `extrapolate`, each a positive integer."""
    lengths = []
    for text in texts:
        for part in text.split(","):
            part = part.strip()
            try:
                value = int(part)
            except ValueError:
                value = 0
            if value < 1 or not part.lstrip("+").isdigit():
                raise NaluError(f"--length takes positive integers separated by commas (10,100,1000), got '{text}'")
            if value > MAX_LENGTH:
                raise NaluError(f"--length {value:,} is longer than {MAX_LENGTH:,} steps, "
                                "the most nalu extrapolates to")
            lengths.append(value)
    return list(dict.fromkeys(lengths))


def extrapolate(
    path: Path,
    ranges: list[list[list[float]]] | None = None,
    samples: int | None = None,
    lengths: list[int] | None = None,
) -> dict:
    """MSE, relative error and success per input range, for ranges growing away from training.

    Static models: one row per range (default: the extrapolation range scaled 1x to 1000x),
    EXTRAPOLATE_SAMPLES samples each. Recurrent models: one row per (range, sequence length);
    default the extrapolation range at DEFAULT_LENGTHS, and `ranges` alone are taken at the test
    length (extrapolation_length); EXTRAPOLATE_SEQUENCES sequences a row. Lengths on a static
    model are an error.
    """
    from nalu_cli.export import SavedModelPredictor

    source = resolve_source(Path(path))
    spec = tasks.TaskSpec.from_dict(source.meta["task"])
    if samples is not None and samples < 1:
        raise NaluError(f"--samples must be at least 1, got {samples}")
    if lengths and not spec.recurrent:
        raise NaluError(f"--length is for recurrent models; {path} is a static model (one input vector, no sequence)")
    if spec.recurrent:
        lengths = list(lengths or ([spec.extrapolation_length] if ranges else DEFAULT_LENGTHS))
        ranges = ranges or [[list(interval) for interval in spec.extrapolation_range]]
    else:
        ranges = ranges or default_ranges(spec)
    for intervals in ranges:
        check_domain(spec.op, "--range", intervals)
        for length in lengths or [None]:
            magnitudes.check_evaluation(spec, intervals, length)
    predict = SavedModelPredictor(source.saved_model)
    rows = []
    for index, intervals in enumerate(ranges):
        entropy = spec.seed + 1_000_003 * (index + 1)
        if not spec.recurrent:
            rng = tasks.fork(entropy, tasks.TEST_STREAM)
            x, y = tasks.sample_numpy(spec, intervals, samples or EXTRAPOLATE_SAMPLES, rng)
            model_mse = mse(predict(x), y)
            threshold = thresholds.success_threshold(spec, intervals, samples=100_000)
            rows.append(_row(intervals, None, model_mse, relative_error(model_mse, y), threshold))
            continue
        for length in lengths:
            # Each length draws from its own stream: its rows do not depend on the other lengths asked for.
            rng = np.random.default_rng(np.random.SeedSequence(entropy=entropy, spawn_key=(tasks.TEST_STREAM, length)))
            count = samples or EXTRAPOLATE_SEQUENCES
            model_mse, mean_square = _sequence_errors(spec, predict, intervals, length, count, rng)
            finite = math.isfinite(model_mse) and mean_square > 0
            error = finite_or_none(math.sqrt(model_mse / mean_square)) if finite else None
            threshold = thresholds.success_threshold(spec, intervals, samples=100_000, length=length)
            rows.append(_row(intervals, length, model_mse, error, threshold))
    return {
        "path": str(path),
        "task": {**spec.to_dict(), "formula": spec.formula()},
        "relative_error": "sqrt(MSE / mean(y^2))",
        "ranges": rows,
    }


def _row(intervals, length: int | None, model_mse: float, error: float | None, threshold: float) -> dict:
    return {
        "range": intervals,
        "length": length,  # steps of each sequence; null on the static task
        "max_abs_input": max(abs(v) for interval in intervals for v in interval),
        "mse": finite_or_none(model_mse),
        "overflow": not math.isfinite(model_mse),
        "relative_error": error,
        "threshold": threshold,
        "success": bool(model_mse < threshold),
    }


def _sequence_errors(spec, predict, intervals, length: int, samples: int, rng) -> tuple[float, float]:
    """(MSE, mean(y^2)) over `samples` sequences of `length` steps, drawn and predicted a block at a time.

    A block holds about 10^7 input numbers (100 sequences of 10,000 steps of 10), so the
    10,000 x 10,000 x 10 numbers of a long row never sit in memory at once. Targets are rounded
    to float32 as in the task's test set (tasks.sample_numpy), like the model's output.
    """
    block = max(1, 10_000_000 // (length * spec.input_size))
    squared, target_squared = 0.0, 0.0
    for start in range(0, samples, block):
        x, y = tasks.sample_numpy(spec, intervals, min(block, samples - start), rng, length=length)
        y = y.astype(np.float64)
        error = predict(x).astype(np.float64) - y
        with np.errstate(over="ignore", invalid="ignore"):
            squared += float(np.sum(error * error))
        target_squared += float(np.sum(y * y))
    return squared / samples, target_squared / samples
