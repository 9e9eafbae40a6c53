"""Run configuration: small dataclasses with defaults, a YAML file and flag overrides.

The file format (reading and writing YAML) is nalu_cli/config_files.py.

A config is resolved once (defaults <- YAML file <- command-line overrides),
validated, and written into the run directory so every checkpoint carries the
settings that made it. Unknown keys and wrong types are errors that name the key.
This module imports neither TensorFlow nor numpy.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from nalu_cli import ops
from nalu_cli.errors import NaluError
from nalu_cli.ranges import check_domain, parse_range, parse_subsets
from nalu_cli.unit_names import UNIT_CLASSES

OPS = ops.NAMES
UNITS = tuple(UNIT_CLASSES)  # the units the model builder knows
# adam: Adam as published. split-adam: Adam with each weight matrix's gradient split into its
# mean over the inputs (the common mode) and the rest, each part with its own moments (see training/optimizer.py).
OPTIMIZERS = ("split-adam", "adam")

# The default model's layers (model.unit "default"): see README, "The default model".
DEFAULT_LAYERS = ("nau", "gated")
DEFAULT_RESTARTS = 6

# task.kind: the static task (one vector in, Trask section 4.1) or the recurrent one (a sequence in,
# the target after its last step, Trask's Table 1 right half). Units that exist only as a recurrent cell.
TASK_KINDS = ("static", "recurrent")
CELL_ONLY_UNITS = ("lstm", "gru")
# Defaults that depend on the kind (a key left null takes these).
KIND_DEFAULTS = {
    "static": {
        "task": {"input_size": 100, "extrapolation_range": [2.0, 6.0], "test_size": 10_000},
        "training": {"polish_every": 0, "polish_iterations": 200},
    },
    "recurrent": {
        # extrapolation_range None: the interpolation range (the test sequences are only longer)
        "task": {"input_size": 10, "extrapolation_range": None, "test_size": 1_000},
        # Polish at every evaluation (null: eval_every). Measured so far it neither helps nor hurts:
        # NAU cells on a+b (10,000 steps) solved the same 2 of seeds 0-3, at the same steps, with and
        # without it; with it, 6 of seeds 0-7. It costs about 0.4 s per polish on one model.
        "training": {"polish_every": None, "polish_iterations": 30},
    },
}
# The recurrent task's subsets are drawn per seed as in stable-nalu (commit e088f71): sizes 1-5,
# overlap 1-2 (at most the smaller size), so every input_size from 9 up fits any draw.
RECURRENT_SUBSET_SIZES = (1, 5)
RECURRENT_OVERLAPS = (1, 2)
RECURRENT_MIN_INPUT = 2 * RECURRENT_SUBSET_SIZES[1] - RECURRENT_OVERLAPS[0]

Interval = list  # [lo, hi]
# Seeds are numpy / Keras seeds: unsigned 32-bit.
SEED_LIMIT = 2**32


@dataclass
class TaskConfig:
    """The arithmetic task: static (Trask et al. 2018, section 4.1; Madsen & Johansen 2020) or recurrent."""

    op: str = "mul"
    # static: x of input_size numbers; recurrent: x of `length` steps of input_size numbers each,
    # a and b summed over every step, extrapolation by a longer sequence (extrapolation_length).
    kind: str = "static"
    input_size: int | None = None  # null: 100 (static), 10 (recurrent)
    # Static slices: subset_ratio * input_size elements, overlapping by overlap_ratio (recurrent
    # subsets are drawn per seed instead: sizes 1-5, overlap 1-2).
    subset_ratio: float = 0.25
    overlap_ratio: float = 0.5
    # Explicit slice placement [[a_start, a_end], [b_start, b_end]]; None draws it from the seed.
    subsets: list | None = None
    # A range is [lo, hi] or a union [[lo, hi], [lo, hi], ...].
    interpolation_range: list = field(default_factory=lambda: [1.0, 2.0])
    extrapolation_range: list | None = None  # null: [2, 6] (static), the interpolation range (recurrent)
    # Recurrent only: sequence length of training and validation, and of the test (extrapolation) set.
    length: int = 10
    extrapolation_length: int = 1000
    validation_size: int = 10_000
    test_size: int | None = None  # null: 10,000 (static), 1,000 sequences of extrapolation_length (recurrent)


@dataclass
class ModelConfig:
    """Two layers, input_size -> hidden_size -> 1: `layers` names each, or `unit` both.

    On the recurrent task the first layer is the cell (it reads [x_t, h_{t-1}] into h_t, a hidden
    state of hidden_size with a learnable initial value) and the second maps the last h_t to y.
    """

    # "default" is the default model, not told the op: a portfolio of architectures trained side by
    # side, the model the one with the lowest interpolation MSE (nalu_cli/portfolio.py); its first
    # member is an NAU that picks the slices and a gated NAU/RealNPU unit that combines them
    # (DEFAULT_LAYERS). `unit: nalu` is the paper's model.
    unit: str = "default"
    layers: list | None = None  # e.g. [nau, nmu]; null means [unit, unit]
    hidden_size: int = 2
    # Independent initialisations trained together (of each architecture of the default model);
    # the one with the lowest interpolation validation MSE is the model. null: DEFAULT_RESTARTS for
    # the default model, 1 otherwise.
    restarts: int | None = None
    # Recurrent only: whether an arithmetic cell learns its initial state h_0 (stable-nalu's network)
    # or keeps it at 0, where an exact accumulator starts. null: 0 for the default model, learned
    # otherwise. A learned h_0 is a bias that fits the concentrated sums of the training length:
    # the default model solved a+b on 8 of seeds 0-7 within 10,000 steps with h_0 = 0, on 3 with it learned.
    learn_initial_state: bool | None = None

    @property
    def restart_count(self) -> int:
        if self.restarts is not None:
            return self.restarts
        return DEFAULT_RESTARTS if self.is_default else 1

    @property
    def is_default(self) -> bool:
        return self.unit == "default" and not self.layers

    @property
    def learns_initial_state(self) -> bool:
        return (not self.is_default) if self.learn_initial_state is None else self.learn_initial_state

    @property
    def layer_units(self) -> list[str]:
        if self.layers:
            return list(self.layers)
        if self.unit == "default":
            return list(DEFAULT_LAYERS)
        # Keras's LSTM and GRU cells get a linear output, as in stable-nalu.
        return [self.unit, "linear" if self.unit in CELL_ONLY_UNITS else self.unit]

    @property
    def name(self) -> str:
        """The architecture's name: the unit, or the layers joined by '-' (nau-nmu); 'default' for
        the default model (a portfolio of architectures, nalu_cli/portfolio.py)."""
        if self.is_default:
            return "default"
        first, second = self.layer_units
        return first if first == second else f"{first}-{second}"


@dataclass
class TrainingConfig:
    # Early stop ends solved runs long before this; a*b needs it (default model, 6 restarts, 20 seeds: 16 solved
    # within 30,000 steps, all 20 within 50,000).
    steps: int = 50_000
    batch_size: int = 128
    learning_rate: float = 1e-2
    # split-adam (default) or adam; see OPTIMIZERS.
    optimizer: str = "split-adam"
    # Steps per compiled call; the model is evaluated after each chunk.
    eval_every: int = 1_000
    # Stop once the checkpoint selected on interpolation error meets the success criterion.
    early_stop: bool = True
    # Sparsity regulariser lambda ramps from 0 at `start` to `scale` at `end` (steps);
    # null keeps each unit's published schedule (none for nac and nalu).
    regularizer_scale: float | None = None
    regularizer_start: int | None = None
    regularizer_end: int | None = None
    # Also evaluate the weights rounded to their exact values (each unit's `snap`) at every
    # evaluation; they become the selected checkpoint when their interpolation MSE is lower.
    snap_selection: bool = True
    # Every `polish_every` steps (a multiple of eval_every; 0: never), also try the weights after
    # `polish_iterations` Levenberg-Marquardt iterations (damped Gauss-Newton, float64) on fixed
    # interpolation samples; like snapped weights, they are selected on interpolation MSE only.
    # null: 0 and 200 on the static task, every evaluation and 30 on the recurrent one.
    polish_every: int | None = None
    polish_iterations: int | None = None
    # At most this many polish steps in a run (the first ones: steps polish_every, 2 polish_every, ...);
    # null: no limit.
    polish_limit: int | None = None
    # The polish step holds each unit's structure (NaiNPU: every power at +-1 by its sign), and a
    # recurrence training holds (recurrent_step_scale 0), and refits the other weights.
    polish_hold: bool = False
    # Recurrent task: a factor on the step of a cell's h_{t-1} rows (the recurrence). null: 1/task.length
    # under split-adam, 1 under adam (see training/optimizer.py, recurrent_step_scale).
    recurrent_step_scale: float | None = None
    # From this step, split-adam also splits the first layer's gradient between what its hidden units
    # share and what tells them apart, each with its own moments (training/optimizer.py, _hidden_split);
    # null: never. The default model's static gated member begins at 1,000 (nalu_cli/portfolio.py).
    hidden_split_start: int | None = None
    # A factor on split-adam's common-mode step, the one a first-layer column takes in all its input
    # rows at once; 1 is split-adam as before (training/optimizer.py, update: what it does and why).
    common_step_scale: float = 1.0


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotated type `tp`, naming `key` when it does not fit."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if tp is bool:
        if not isinstance(value, bool):
            raise NaluError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise NaluError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NaluError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise NaluError(f"config key '{key}' must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise NaluError(f"config key '{key}' must be a string, got {value!r}")
        return value
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise NaluError(f"config key '{key}' must be a list, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug, not user input


def _merge(instance: Any, updates: dict, prefix: str = "") -> None:
    """Apply a nested dict of updates onto a dataclass instance, in place."""
    if not isinstance(updates, dict):
        raise NaluError(f"config section '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    hints = typing.get_type_hints(type(instance))
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if not isinstance(key, str) or key not in hints:
            raise NaluError(f"unknown config key '{full}'")
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, prefix=f"{full}.")
        else:
            setattr(instance, key, _coerce(full, value, hints[key]))


def validate(config: Config) -> Config:
    """Check values that types alone cannot; normalise ranges in place."""
    task, model, training = config.task, config.model, config.training
    if task.op not in OPS:
        raise NaluError(f"unknown op '{task.op}' (choose from {', '.join(OPS)})")
    if task.kind not in TASK_KINDS:
        raise NaluError(f"unknown task kind '{task.kind}' (choose from {', '.join(TASK_KINDS)})")
    given_by_kind = {"task": list(task.interpolation_range), "training": training.eval_every}  # what None means
    for section, defaults in KIND_DEFAULTS[task.kind].items():
        for key, value in defaults.items():
            if getattr(getattr(config, section), key) is None:
                setattr(getattr(config, section), key, given_by_kind[section] if value is None else value)
    if model.layers is not None and (len(model.layers) != 2 or not all(isinstance(u, str) for u in model.layers)):
        raise NaluError(f"config key 'model.layers' must name two units, got {model.layers!r}")
    for unit in [model.unit, *(model.layers or [])]:
        if unit not in UNITS and not (unit == "default" and unit is model.unit):
            raise NaluError(f"unknown unit '{unit}' (choose from {', '.join(UNITS)})")
    cell, output = model.layer_units
    if task.kind == "static" and cell in CELL_ONLY_UNITS:
        raise NaluError(f"unit '{cell}' is a recurrent cell; it needs task.kind recurrent (--task recurrent)")
    if output in CELL_ONLY_UNITS:
        raise NaluError(f"unit '{output}' is a recurrent cell and cannot be the output layer")
    positive = {
        "task.input_size": task.input_size,
        "task.validation_size": task.validation_size,
        "task.test_size": task.test_size,
        "model.hidden_size": model.hidden_size,
        "model.restarts": model.restart_count,
        "training.steps": training.steps,
        "training.batch_size": training.batch_size,
        "training.eval_every": training.eval_every,
        "training.learning_rate": training.learning_rate,
        "training.polish_iterations": training.polish_iterations,
        "training.polish_limit": 1 if training.polish_limit is None else training.polish_limit,
        "task.length": task.length,
        "task.extrapolation_length": task.extrapolation_length,
    }
    if training.optimizer not in OPTIMIZERS:
        raise NaluError(f"unknown optimizer '{training.optimizer}' (choose from {', '.join(OPTIMIZERS)})")
    for key, value in positive.items():
        if value <= 0:
            raise NaluError(f"config key '{key}' must be positive, got {value!r}")
    if training.polish_every < 0 or training.polish_every % training.eval_every:
        raise NaluError(
            f"config key 'training.polish_every' must be 0 or a multiple of training.eval_every "
            f"({training.eval_every}), got {training.polish_every!r}"
        )
    if training.recurrent_step_scale is not None and training.recurrent_step_scale < 0:  # finite: _coerce
        raise NaluError(f"config key 'training.recurrent_step_scale' must be a number >= 0 or null, "
                        f"got {training.recurrent_step_scale!r}")
    if training.common_step_scale < 0:  # finite: _coerce
        raise NaluError(f"config key 'training.common_step_scale' must be a number >= 0, "
                        f"got {training.common_step_scale!r}")
    if training.common_step_scale != 1.0 and training.optimizer != "split-adam":
        raise NaluError("config key 'training.common_step_scale' scales split-adam's common-mode step; it needs "
                        f"training.optimizer split-adam, got {training.optimizer!r}")
    if training.hidden_split_start is not None:
        if training.hidden_split_start < 0:
            raise NaluError(f"config key 'training.hidden_split_start' must be a step >= 0 or null, "
                            f"got {training.hidden_split_start!r}")
        if training.optimizer != "split-adam":
            raise NaluError("config key 'training.hidden_split_start' splits split-adam's steps; it needs "
                            f"training.optimizer split-adam, got {training.optimizer!r}")
    if not 0 <= config.seed < SEED_LIMIT:
        raise NaluError(f"config key 'seed' must be in [0, 2^32), got {config.seed!r}")
    if not 0 < task.subset_ratio <= 1:
        raise NaluError(f"config key 'task.subset_ratio' must be in (0, 1], got {task.subset_ratio!r}")
    if not 0 <= task.overlap_ratio < 1:
        raise NaluError(f"config key 'task.overlap_ratio' must be in [0, 1), got {task.overlap_ratio!r}")
    task.interpolation_range = parse_range("task.interpolation_range", task.interpolation_range)
    task.extrapolation_range = parse_range("task.extrapolation_range", task.extrapolation_range)
    if task.subsets is not None:
        task.subsets = parse_subsets(task.subsets, task.input_size)
    elif task.kind == "recurrent":
        if task.input_size < RECURRENT_MIN_INPUT:
            raise NaluError(
                f"task.input_size={task.input_size} is too small for the recurrent task's subsets (sizes "
                f"{RECURRENT_SUBSET_SIZES[0]}-{RECURRENT_SUBSET_SIZES[1]} overlapping by {RECURRENT_OVERLAPS[0]}-"
                f"{RECURRENT_OVERLAPS[1]} need {RECURRENT_MIN_INPUT}); use a larger one or set task.subsets"
            )
    else:
        subset = int(task.subset_ratio * task.input_size)
        span = 2 * subset - int(task.overlap_ratio * subset)
        if subset < 1 or span > task.input_size:
            raise NaluError(
                f"slices of {subset} with overlap ratio {task.overlap_ratio:g} do not fit "
                f"task.input_size={task.input_size}"
            )
    for key in ("interpolation_range", "extrapolation_range"):
        check_domain(task.op, f"task.{key}", getattr(task, key))
    return config


def resolve(file_settings: dict | None = None, overrides: dict | None = None) -> Config:
    """defaults <- file settings <- overrides (a nested dict; None values are ignored)."""
    config = Config()
    if file_settings:
        _merge(config, file_settings)
    if overrides:
        _merge(config, _drop_none(overrides))
    return validate(config)


def parse_architecture(name: str) -> dict:
    """'nau' -> both layers nau; 'nau-nmu' -> layers [nau, nmu] (as model config settings)."""
    if name == "default":
        return {"unit": "default", "layers": None}
    parts = name.split("-")
    if len(parts) == 1:
        return {"unit": parts[0], "layers": ModelConfig(unit=parts[0]).layer_units}
    if len(parts) == 2:
        return {"unit": parts[0], "layers": parts}
    raise NaluError(f"unit '{name}' must be UNIT or FIRST-SECOND (e.g. nau-nmu)")


def _drop_none(tree: dict) -> dict:
    pruned = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                pruned[key] = value
        elif value is not None:
            pruned[key] = value
    return pruned


def from_dict(data: dict) -> Config:
    """Rebuild a resolved config (as written by `Config.to_dict`)."""
    return resolve(data)
