"""The README's Keras example as a benchmark: NAU -> NMU learns a*b with model.fit, over seeds.

    .venv/bin/python benchmarks/keras_fit.py [--seeds 10] [--steps 50000] [--optimizers split-adam,adam]

`example()` is the README's "Your own Keras model" example with the seed and the optimiser as
arguments (keep the two alike). Each seed trains NAU -> NMU with `model.fit` on Madsen &
Johansen's static a*b task (100 inputs U[1, 2], a and b sums of two slices of 25 sharing 12),
with `RegularizerSchedule` (the published schedules) and `SnapSelection` on 10,000
interpolation samples, at nalu's defaults for this model (learning rate 0.01, batch 128, an
evaluation every 1,000 steps). A seed succeeds when the selected weights' MSE on 10,000
samples of U[2, 6] is below the Madsen & Johansen threshold nalu simulates for the task
(`thresholds.success_threshold`, 0.16); as in `nalu train`, training stops once they do, and
"solved at" is that step. Both optimisers see the same data and initial weights per seed.
Prints a table per optimiser (successes with a 95% Wilson interval, median solved-at step and
seconds over solved seeds) and one line per seed; `--json FILE` writes the per-seed records.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from nalu_cli._tf import import_tensorflow

import_tensorflow()  # quietly, before keras imports it

import keras  # noqa: E402


def task(n, low, high, rng):
    """n samples of a*b, a and b the sums of two slices of 25 of 100 numbers that share 12."""
    x = rng.uniform(low, high, (n, 100)).astype("float32")
    return x, x[:, 0:25].sum(1, keepdims=True) * x[:, 13:38].sum(1, keepdims=True)


def example(seed: int, optimizer: str, steps: int, watch=None):
    """The README example; `watch(select, test)` may add a callback. Returns the model, test data, SnapSelection."""
    from nalu_cli.keras import NAU, NMU, RegularizerSchedule, SnapSelection, SplitAdam

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    train, validation, test = task(128_000, 1, 2, rng), task(10_000, 1, 2, rng), task(10_000, 2, 6, rng)
    model = keras.Sequential([keras.Input((100,)), NAU(2), NMU(1)])
    chosen = SplitAdam(learning_rate=0.01) if optimizer == "split-adam" else keras.optimizers.Adam(learning_rate=0.01)
    model.compile(optimizer=chosen, loss="mse", steps_per_execution=100, jit_compile=True)
    select = SnapSelection(validation_data=validation)
    callbacks = [RegularizerSchedule(), select] + ([watch(select, test)] if watch else [])
    model.fit(*train, batch_size=128, epochs=steps // 1000, callbacks=callbacks, verbose=0)
    return model, test, select


class StopWhenSolved(keras.callbacks.Callback):
    """When SnapSelection has picked new weights: their test MSE; training stops once it is below `threshold`."""

    def __init__(self, select, test, threshold: float):
        super().__init__()
        self.select, self.test, self.threshold = select, test, threshold
        self.solved_at_step = self.solved_at_seconds = None

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.select.best_epoch != epoch or self.solved_at_step is not None:
            return
        current = self.model.get_weights()
        self.model.set_weights(self.select.best_weights)
        if test_mse(self.model, self.test) < self.threshold:
            self.solved_at_step = (epoch + 1) * 1000
            self.solved_at_seconds = time.perf_counter() - self.started
            self.model.stop_training = True
        self.model.set_weights(current)


def test_mse(model, test) -> float:
    x, y = test
    return float(np.mean((model.predict(x, batch_size=len(x), verbose=0).astype(np.float64) - y) ** 2))


def threshold() -> float:
    from nalu_cli import tasks, thresholds

    spec = tasks.TaskSpec(op="mul", input_size=100, subsets=((0, 25), (13, 38)), interpolation_range=((1.0, 2.0),),
                          extrapolation_range=((2.0, 6.0),), seed=0)
    return thresholds.success_threshold(spec)


def run(seed: int, optimizer: str, steps: int, limit: float) -> dict:
    stops = []

    def watch(select, test):
        stops.append(StopWhenSolved(select, test, limit))
        return stops[0]

    started = time.perf_counter()
    model, test, select = example(seed, optimizer, steps, watch=watch)
    seconds = time.perf_counter() - started
    (stop,) = stops
    return {
        "seed": seed, "optimizer": optimizer, "success": stop.solved_at_step is not None,
        "solved_at_step": stop.solved_at_step, "solved_at_seconds": stop.solved_at_seconds,
        "steps_trained": int(model.optimizer.iterations.numpy()), "seconds": round(seconds, 2),
        "selected_epoch": select.best_epoch, "selected_snapped": select.best_snapped,
        "interpolation_mse": select.best_mse, "extrapolation_mse": test_mse(model, test),
    }


def table(records: list[dict], optimizers: list[str]) -> str:
    from nalu_cli.benchmark.tables import wilson_interval

    lines = ["| optimiser | success | 95% CI | solved at (median step) | seconds to solve (median) | wall time |",
             "|---|---|---|---|---|---|"]
    for optimizer in optimizers:
        rows = [r for r in records if r["optimizer"] == optimizer]
        solved = [r for r in rows if r["success"]]
        low, high = wilson_interval(len(solved), len(rows))
        step = f"{statistics.median(r['solved_at_step'] for r in solved):,.0f}" if solved else "-"
        seconds = f"{statistics.median(r['solved_at_seconds'] for r in solved):.1f}" if solved else "-"
        lines.append(f"| {optimizer} | {len(solved)}/{len(rows)} | {low:.0%}-{high:.0%} | {step} | {seconds} | "
                     f"{sum(r['seconds'] for r in rows):.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--optimizers", default="split-adam,adam")
    parser.add_argument("--json", help="write the per-seed records to this file (JSON lines)")
    args = parser.parse_args()
    optimizers = args.optimizers.split(",")
    limit = threshold()
    print(f"success threshold (extrapolation MSE): {limit:.3g}")
    records = []
    for seed in range(args.seeds):
        for optimizer in optimizers:
            record = run(seed, optimizer, args.steps, limit)
            records.append(record)
            print(json.dumps(record), flush=True)
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps(record) + "\n")
    print(table(records, optimizers))


if __name__ == "__main__":
    main()
