"""One run, `nalu train`: a config in, a run directory out (layout in rundir.py).

train() starts a run, resume() continues one from its checkpoint; both compose the trainer,
the RunWriter callback, the selected model's SavedModel and the summary.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import tensorflow as tf

from nalu_cli import __version__, magnitudes, portfolio
from nalu_cli._tf import cores, use_threads
from nalu_cli.config import Config, ModelConfig, TrainingConfig, resolve
from nalu_cli.config_files import dump_yaml
from nalu_cli.errors import NaluError, WriteError, as_write_error
from nalu_cli.export import make_meta, write_model
from nalu_cli.model import set_params
from nalu_cli.outputs import check_writable, recover, replacing
from nalu_cli.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    KERAS_FILE,
    METRICS_FILE,
    SAVED_MODEL_DIR,
    SUMMARY_FILE,
    atomic_write_text,
    finish_interrupted_writes,
    is_run_dir,
    new_run_dir,
    read_run_config,
    run_lock,
    to_json,
)
from nalu_cli.training.callbacks import RunWriter, Stopwatch, kept_metrics, truncate_metrics
from nalu_cli.training.checkpoint import has_checkpoint, read_checkpoint
from nalu_cli.training.record import result_record
from nalu_cli.training.replicas import members
from nalu_cli.training.trainer import ReplicaTrainer

# `nalu train` gives TF one thread per architecture (up to the cores) while each architecture has
# at most this many models (restarts); beyond, TF's default pools. See _tf.use_threads.
OWN_THREAD_MAX_MODELS = 8


def train_threads(architectures: list) -> int | None:
    """TF's intra-op threads for training these members in one process (the trainer steps them side
    by side): one per architecture up to the cores; None (TF's default pools) for large ones."""
    if max(len(member.replicas) for member in architectures) > OWN_THREAD_MAX_MODELS:  # each is its own graph
        return None
    return min(len(architectures), cores())


def train(
    config: Config,
    out: Path,
    overwrite: bool = False,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Train one model as `config` says, writing the run directory `out`; returns the summary.

    `should_stop` is asked between chunks: when it says yes, the run is checkpointed,
    its selected model saved, and the summary says stop_reason "interrupted"
    (continue it with `resume`). With `overwrite`, an old run at `out` is moved aside and
    deleted at the new run's first checkpoint (from then on the new one can be resumed);
    a failure before that removes the new run and puts the old one back (outputs.replacing).
    """
    out = Path(out)
    magnitudes.check_config(config)  # targets float32 cannot train on: refused before anything is written
    replacement = None
    try:
        with replacing(out, overwrite, kind="run") as replacement, new_run_dir(out, dump_yaml(config)):
            return _run(config, out, on_progress, should_stop, on_checkpoint=replacement.commit)
    except (OSError, WriteError) as error:
        failure = as_write_error(error)
        if failure is None:
            raise
        raise _cannot_write(failure, out, kept=replacement is not None and replacement.committed) from None


def resume(
    out: Path,
    steps: int | None = None,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Continue an interrupted run from its last checkpoint; ends where an uninterrupted run would.

    However the run was stopped (Ctrl-C, kill -9 anywhere), this finishes it: the writes a kill
    left half done are completed first (rundir.finish_interrupted_writes), and a run killed
    before its first checkpoint starts again from step 0.
    """
    out = Path(out)
    recover(out)
    if not out.exists():
        raise NaluError(f"no such run directory: {out}")
    if not is_run_dir(out):
        raise NaluError(f"{out} is not a nalu run directory")
    check_writable(out)
    try:
        with run_lock(out):
            finish_interrupted_writes(out)
            checkpoint = read_checkpoint(out / CHECKPOINT_DIR) if has_checkpoint(out / CHECKPOINT_DIR) else None
            config = read_run_config(out, steps)
            if checkpoint is not None:
                check_resumable(config, checkpoint[1], out)
            kept_metrics(out / METRICS_FILE, checkpoint[1]["step"] if checkpoint else None)  # damage: an error now
            atomic_write_text(out / CONFIG_FILE, dump_yaml(config))
            return _run(config, out, on_progress, should_stop, checkpoint=checkpoint)
    except (OSError, WriteError) as error:
        failure = as_write_error(error)
        if failure is None:
            raise
        raise _cannot_write(failure, out, kept=True) from None


def _cannot_write(error: NaluError, out: Path, kept: bool) -> NaluError:
    """A failed write as one line that says where the run is and how to go on."""
    if kept:
        return NaluError(f"{error}; the run keeps its last checkpoint: continue with `nalu train --resume {out}` "
                         "once the disk has room or the place is writable")
    return NaluError(f"{error}; {out} is as it was before this command")


# Keys whose null came to mean something else, for a recurrent run whose config predates the key:
# (section, key, which runs it changed, the value null meant before, the nalu that trained it, why).
CHANGED_DEFAULTS = (
    ("model", "learn_initial_state", lambda config: config.model.is_default, True, "0.5",
     "whose default recurrent model learned its cell's initial state"),
    ("training", "recurrent_step_scale", lambda config: config.training.optimizer == "split-adam", 1.0, "0.6 or older",
     "which stepped a cell's recurrence as its other weights"),
)

# Changes to the default model's members (portfolio.DEFAULT_MODEL), which no config key holds, for
# checkpoints written before they recorded their members (`member_settings`, since nalu 0.10.1): a
# default-model run of the task kind written by an older nalu cannot go on as it began. Newer
# checkpoints need no entry here: check_resumable compares their record with this nalu's members.
# (task kind, first version with the change, what the older default model did.)
PORTFOLIO_CHANGES = (
    ("recurrent", (0, 10, 0), "whose default recurrent model's NAU -> NMU member learned its cell's recurrence"),
)


def version_tuple(version) -> tuple[int, ...]:
    """(0, 10, 0) from "0.10.0"; () (older than any) for what no nalu writes."""
    try:
        return tuple(int(part) for part in str(version).split(".")[:3])
    except ValueError:
        return ()


def member_settings(config: Config) -> list[dict]:
    """What each architecture of the config's model trains with, as the checkpoint records it:
    its model and training settings (a portfolio member's own, from portfolio.DEFAULT_MODEL),
    all but the step budget, which a resume may change."""
    return json.loads(to_json([
        {"model": dataclasses.asdict(model), "training": {k: v for k, v in dataclasses.asdict(training).items() if k != "steps"}}
        for model, training in portfolio.architectures(config)
    ]))


def yaml_value(value) -> str:
    return "true" if value is True else "false" if value is False else repr(value)


def check_resumable(config: Config, scalars: dict, out: Path) -> None:
    """Refuse to continue a run whose config.yaml changed since its checkpoint (only the step
    budget may change, and not below the step it is at): it would train on, then fail or
    mix two configs in one run."""
    saved = scalars.get("config")  # checkpoints of nalu 0.4.0 carry none
    if saved is not None:
        # Read through today's defaults: a key added since (task.kind) is its default, not a change,
        # except where the default changed what the run trains.
        trained = resolve(saved)
        for section, key, applies, value, version, what in CHANGED_DEFAULTS:
            if trained.task.kind == "recurrent" and key not in (saved.get(section) or {}) and applies(trained):
                if getattr(getattr(config, section), key) is None:
                    raise NaluError(f"{out} was trained by nalu {version}, {what}: add `{key}: "
                                    f"{yaml_value(value)}` under `{section}:` in {out / CONFIG_FILE} to resume it as it began")
                setattr(getattr(trained, section), key, value)
        written = scalars.get("nalu_version")  # recorded since 0.10.0
        if "members" not in scalars:  # written before 0.10.1: what changed is known by version only
            for kind, since, what in PORTFOLIO_CHANGES:
                if trained.model.is_default and trained.task.kind == kind and version_tuple(written or "0.9.0") < since:
                    raise NaluError(f"{out} was trained by nalu {written or '0.9.0 or older'}, {what}; nalu "
                                    f"{__version__} cannot continue it as it began: resume it with that nalu, or start a new run")
        changed = _first_difference(trained.to_dict(), config.to_dict(), ignore=("training.steps",))
        if changed:
            key, then, now = changed
            raise NaluError(f"{out / CONFIG_FILE} no longer matches the run's checkpoint ({key}: {then} -> {now}); "
                            "put it back, or start a new run")
        if "members" in scalars:  # the same config, but this nalu's default model may be made otherwise
            _check_members(scalars["members"], member_settings(config), out, written)
    if config.training.steps < scalars["step"]:
        raise NaluError(f"run {out} is at step {scalars['step']:,}; --steps {config.training.steps:,} would go back")


def _check_members(recorded: list, current: list, out: Path, written) -> None:
    names = [" -> ".join(member["model"]["layers"] or [member["model"]["unit"]]) for member in current]
    if len(recorded) != len(current):
        raise NaluError(f"{out} was trained by nalu {written} with {len(recorded)} architectures; nalu {__version__}'s "
                        f"model has {len(current)} ({', '.join(names)}): resume it with that nalu, or start a new run")
    for index, (then_member, now_member) in enumerate(zip(recorded, current)):
        changed = _first_difference(_with_keys_added_since(then_member, now_member), now_member)
        if changed:
            key, then, now = changed
            raise NaluError(f"{out} was trained by nalu {written}, whose model's member {index + 1} trained with "
                            f"{key} {then}; nalu {__version__}'s ({names[index]}) with {now}: resume it with that "
                            "nalu, or start a new run")


def _with_keys_added_since(then: dict, now: dict) -> dict:
    """A recorded member with each setting it lacks and `now` has at that setting's default: a
    key added since (training.polish_hold, 0.11.0) left at its default is no change to a run."""
    defaults = {"model": dataclasses.asdict(ModelConfig()), "training": dataclasses.asdict(TrainingConfig())}
    filled = {}
    for section, values in then.items():
        known = defaults.get(section, {})
        added = {key: known[key] for key in now.get(section, {}) if key not in values and key in known}
        filled[section] = {**added, **values}
    return filled


def _first_difference(then: dict, now: dict, ignore: tuple = ()) -> tuple[str, str, str] | None:
    """(key, value then, value now) of the first dotted key, in sorted order, whose value differs
    ('absent' where a tree lacks it); None if the trees agree on every key but `ignore`."""
    then, now = _flat(then), _flat(now)
    for key in sorted(set(now) | set(then)):
        if key not in ignore and now.get(key) != then.get(key):
            return key, then.get(key, "absent"), now.get(key, "absent")
    return None


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = to_json(value)  # lists and tuples alike, as JSON keeps them
    return flat


def _run(config: Config, out: Path, on_progress, should_stop, checkpoint: tuple | None = None,
         on_checkpoint: Callable[[], None] | None = None) -> dict:
    started = time.perf_counter()
    training = config.training
    architectures, (restarts,) = members(config, [config.seed])
    threads = train_threads(architectures)
    if threads is not None:
        use_threads(tf, threads)
    trainer = ReplicaTrainer.of(architectures)
    previous_seconds = 0.0
    if checkpoint is not None:
        arrays, scalars = checkpoint
        trainer.restore(arrays, scalars)
        previous_seconds = float(scalars.get("train_seconds", 0.0))
    truncate_metrics(out / METRICS_FILE, trainer.step if checkpoint is not None else None)
    stopwatch = Stopwatch(previous_seconds)
    with RunWriter(out, restarts, stopwatch, config.to_dict(), on_progress, on_checkpoint, member_settings(config)) as writer:
        trainer.fit(training.steps, training.eval_every, training.early_stop, [writer], should_stop, [restarts])
    train_seconds = stopwatch.seconds()
    selected = trainer.results[trainer.chosen(restarts)].selected_params is not None
    if selected:
        save_selected(trainer, restarts, config, out)
    summary = summarize(trainer, restarts, config, train_seconds, wall_seconds=time.perf_counter() - started)
    atomic_write_text(out / SUMMARY_FILE, to_json(summary, indent=2) + "\n")
    if not selected:  # every evaluation overflowed: there is no model, and summary.json says why
        raise NaluError(f"no evaluation of {out} up to step {trainer.step:,} had a finite interpolation MSE, so it "
                        "has no model to save; the model's outputs or its errors overflow float32 (try a smaller "
                        "input range or learning rate)")
    return summary


def save_selected(trainer: ReplicaTrainer, restarts: list[int], config: Config, out: Path) -> None:
    """The run's model (its chosen restart's selected checkpoint, of whichever architecture) as
    model.keras and saved_model/."""
    chosen = trainer.chosen(restarts)
    result, architecture = trainer.results[chosen], trainer.architecture(chosen)
    set_params(architecture.model, result.selected_params)
    # The chosen architecture's own model config (a portfolio member names its layers): what loads it.
    meta = make_meta(trainer.replicas[chosen].spec.to_dict(), dataclasses.asdict(architecture.model_config),
                     selected_step=result.selected_step)
    write_model(architecture.model, meta, out / SAVED_MODEL_DIR, out / KERAS_FILE)


def summarize(trainer: ReplicaTrainer, restarts: list[int], config: Config, train_seconds: float, wall_seconds: float) -> dict:
    """summary.json: the shared result record, with the task, why training stopped, and its times."""
    record = result_record(trainer, restarts, config.seed)
    result = trainer.results[trainer.chosen(restarts)]
    if trainer.interrupted:
        stop_reason = "interrupted"
    elif result.diverged_at_step is not None:
        stop_reason = "diverged"
    elif config.training.early_stop and record["success"] and trainer.step < config.training.steps:
        stop_reason = "success"
    else:
        stop_reason = "steps"
    step_seconds = train_seconds - trainer.polish_seconds
    spec = trainer.replicas[0].spec
    return {
        "task": spec.to_dict(),
        "formula": spec.formula(),
        "unit": config.model.name,
        **record,
        "stop_reason": stop_reason,
        "train_seconds": round(train_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "polish_seconds": round(trainer.polish_seconds, 3),
        # Training steps per second: the polish step's time is not spent on training steps.
        "steps_per_second": round(trainer.step / step_seconds, 1) if step_seconds > 0 else None,
    }
