"""Training: many steps per compiled call, data drawn in-graph, selection on interpolation error only.

The model's Keras layers hold the weights for saving and export; the training
loop runs their pure `forward` functions on parameter tensors carried through a
`tf.while_loop`, with Adam written out (identical to keras.optimizers.Adam). That
keeps per-step dispatch overhead low: one Python call per `eval_every` steps.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from nalu_cli import tasks
from nalu_cli.config import Config, dump_yaml
from nalu_cli.export import make_meta, write_saved_model
from nalu_cli.rundir import (
    CONFIG_FILE,
    KERAS_FILE,
    METRICS_FILE,
    SAVED_MODEL_DIR,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    atomic_path,
    atomic_write_text,
    discard_backup,
    prepare_output,
    restore_backup,
)

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


def make_train_chunk(model, spec: tasks.TaskSpec, batch_size: int, learning_rate: float, data_seed: int):
    """A compiled function running `n` Adam steps from `start` on fresh in-graph batches.

    Step s draws its batch from the stateless seed (data_seed, s), so the data
    depends only on the seed and the step number (resumable, reproducible).
    Returns the new parameters, Adam moments and the mean loss over the chunk.
    """
    import tensorflow as tf

    from nalu_cli.model import forward

    def loss_fn(params, x, y):
        return tf.reduce_mean(tf.square(forward(model, params, x) - y))

    @tf.function(reduce_retracing=True)
    def train_chunk(start, n, params, m, v):
        def body(i, params, m, v, loss_sum):
            step = start + i
            x, y = tasks.sample_batch_tf(spec, batch_size, tf.stack([tf.constant(data_seed, tf.int64), step]))
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = loss_fn(params, x, y)
            grads = tape.gradient(loss, params)
            t = tf.cast(step + 1, tf.float32)
            lr = learning_rate * tf.sqrt(1.0 - ADAM_BETA_2**t) / (1.0 - ADAM_BETA_1**t)
            m = tf.nest.map_structure(lambda m_, g: ADAM_BETA_1 * m_ + (1 - ADAM_BETA_1) * g, m, grads)
            v = tf.nest.map_structure(lambda v_, g: ADAM_BETA_2 * v_ + (1 - ADAM_BETA_2) * g * g, v, grads)
            params = tf.nest.map_structure(
                lambda p, m_, v_: p - lr * m_ / (tf.sqrt(v_) + ADAM_EPSILON), params, m, v
            )
            return i + 1, params, m, v, loss_sum + loss

        zero = tf.constant(0, tf.int64)
        _, params, m, v, loss_sum = tf.while_loop(
            lambda i, *_: i < n, body, (zero, params, m, v, tf.constant(0.0)), parallel_iterations=1
        )
        return params, m, v, loss_sum / tf.cast(n, tf.float32)

    return train_chunk


def make_evaluate(model, datasets: dict):
    """A compiled function: params -> {name: MSE on that fixed dataset}."""
    import tensorflow as tf

    from nalu_cli.model import forward

    constants = {name: (tf.constant(x), tf.constant(y)) for name, (x, y) in datasets.items()}

    @tf.function
    def evaluate(params):
        return {
            name: tf.reduce_mean(tf.square(forward(model, params, x) - y)) for name, (x, y) in constants.items()
        }

    return evaluate


def _all_finite(tree) -> bool:
    return all(np.all(np.isfinite(leaf)) for leaf in _leaves(tree))


def _leaves(tree):
    import tensorflow as tf

    return [np.asarray(leaf) for leaf in tf.nest.flatten(tree)]


def train(
    config: Config,
    out: Path,
    overwrite: bool = False,
    on_progress: Callable[[dict], None] | None = None,
) -> dict:
    """Train one model as `config` says, writing the run directory `out`; returns the summary."""
    out = Path(out)
    backup = prepare_output(out, overwrite, kind="run")
    try:
        summary = _train(config, out, on_progress)
    except BaseException:
        restore_backup(out, backup)
        raise
    discard_backup(backup)
    return summary


def _train(config: Config, out: Path, on_progress) -> dict:
    import tensorflow as tf

    from nalu_cli.model import build_model, get_params, set_params

    started = time.perf_counter()
    out.mkdir(parents=True)
    atomic_write_text(out / CONFIG_FILE, dump_yaml(config))
    spec = tasks.TaskSpec.from_config(config.task, config.seed)
    training = config.training
    threshold = tasks.success_threshold(spec)

    model = build_model(config.model, spec.input_size, seed=config.seed)
    data_seed = int(tasks.fork(config.seed, tasks.TRAIN_STREAM).integers(2**31))
    train_chunk = make_train_chunk(model, spec, training.batch_size, training.learning_rate, data_seed)
    evaluate = make_evaluate(
        model, {"interpolation": tasks.validation_set(spec), "extrapolation": tasks.test_set(spec)}
    )

    params = tf.nest.map_structure(tf.constant, get_params(model))
    m = tf.nest.map_structure(tf.zeros_like, params)
    v = tf.nest.map_structure(tf.zeros_like, params)
    best = {"step": 0, "params": get_params(model), "interpolation_mse": math.inf, "extrapolation_mse": math.inf}
    solved_at_step = None
    diverged_at_step = None
    train_seconds = 0.0
    step = 0
    writer = tf.summary.create_file_writer(str(out / TENSORBOARD_DIR))

    def record(loss: float) -> dict:
        nonlocal solved_at_step
        errors = {k: float(v_) for k, v_ in evaluate(params).items()}
        entry = {
            "step": step,
            "loss": loss,
            "interpolation_mse": errors["interpolation"],
            "extrapolation_mse": errors["extrapolation"],
            "success_threshold": threshold,
            "elapsed_seconds": round(time.perf_counter() - started, 4),
            "steps_per_second": step / train_seconds if train_seconds > 0 else 0.0,
        }
        if solved_at_step is None and entry["extrapolation_mse"] < threshold:
            solved_at_step = step
        # Model selection: the lowest interpolation validation error, never the extrapolation set.
        if math.isfinite(entry["interpolation_mse"]) and entry["interpolation_mse"] < best["interpolation_mse"]:
            best.update(
                step=step,
                params=_leaves_like(params),
                interpolation_mse=entry["interpolation_mse"],
                extrapolation_mse=entry["extrapolation_mse"],
            )
        entry["selected_step"] = best["step"]
        with open(out / METRICS_FILE, "a") as metrics:
            metrics.write(json.dumps(_jsonable(entry)) + "\n")
        with writer.as_default(step=step):
            for key in ("loss", "interpolation_mse", "extrapolation_mse"):
                if entry[key] is not None and math.isfinite(entry[key]):
                    tf.summary.scalar(key, entry[key])
        if on_progress:
            on_progress({**entry, "total_steps": training.steps})
        return entry

    record(loss=None)
    stop_reason = "steps"
    while step < training.steps:
        n = min(training.eval_every, training.steps - step)
        chunk_started = time.perf_counter()
        new_params, m, v, loss = train_chunk(tf.constant(step, tf.int64), tf.constant(n, tf.int64), params, m, v)
        loss = float(loss)
        train_seconds += time.perf_counter() - chunk_started
        if not (math.isfinite(loss) and _all_finite(new_params)):
            # A non-finite step never becomes the saved model; the last good state is kept.
            diverged_at_step = step + n
            stop_reason = "diverged"
            break
        params = new_params
        step += n
        record(loss)
        if training.early_stop and best["extrapolation_mse"] < threshold:
            stop_reason = "success"
            break
    writer.close()

    set_params(model, best["params"])
    with atomic_path(out / KERAS_FILE) as tmp:
        model.save(str(tmp))
    meta = make_meta(spec.to_dict(), config.to_dict()["model"], selected_step=best["step"])
    write_saved_model(model, meta, out / SAVED_MODEL_DIR)

    summary = {
        "task": spec.to_dict(),
        "formula": spec.formula(),
        "unit": config.model.unit,
        "seed": config.seed,
        "steps_trained": step,
        "stop_reason": stop_reason,
        "selected_step": best["step"],
        "interpolation_mse": best["interpolation_mse"],
        "extrapolation_mse": best["extrapolation_mse"],
        "success_threshold": threshold,
        "success": bool(best["extrapolation_mse"] < threshold),
        "solved_at_step": solved_at_step,
        "diverged_at_step": diverged_at_step,
        "train_seconds": round(train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "steps_per_second": round(step / train_seconds, 1) if train_seconds > 0 else None,
    }
    atomic_write_text(out / SUMMARY_FILE, json.dumps(_jsonable(summary), indent=2) + "\n")
    return summary


def _leaves_like(params):
    import tensorflow as tf

    return tf.nest.map_structure(lambda t: t.numpy(), params)


def _jsonable(data: dict) -> dict:
    """JSON has no inf/NaN: write them as null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()
    }
