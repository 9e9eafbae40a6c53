"""What the exact forms derived from the weights (training/forms.py) cost an evaluator, side by side.

    .venv/bin/python benchmarks/forms_cost.py [--repeats 5] [--replicas 6]

For each static member of the default model (NAU -> gated, NAU -> NaiNPU), builds the evaluation
graph (`make_scores`, snapping on, validation and test sets of 10,000 samples of 100 inputs) with
and without the derived forms, interleaved, `--repeats` times each, and times its first call
(tracing, graph optimisation and the call: what a `nalu train` pays once per member) and a second
call. Prints the median and range per variant.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nalu_cli._tf import import_tensorflow

MEMBERS = (("nau", "gated"), ("nau", "nainpu"))
SAMPLES, INPUTS = 10_000, 100


def timed(layers, params, sets, replicas: int, derived: bool) -> tuple[float, float]:
    from nalu_cli.training.evaluate import make_scores

    def forward(p, x):
        for layer, layer_params in zip(layers, p):
            x = layer.forward(x, **layer_params)
        return x

    # the sets are one task's, [1, 1, N, in]: broadcast over the replicas (make_scores' per_group)
    scores = make_scores(forward, layers, True, False, replicas, False, derived)
    started = time.perf_counter()
    scores(params, sets)
    first = time.perf_counter()
    scores(params, sets)
    return first - started, time.perf_counter() - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=6)
    args = parser.parse_args()
    import_tensorflow()
    import tensorflow as tf

    from nalu_cli.config import ModelConfig
    from nalu_cli.model import static_layers

    rng = np.random.default_rng(0)
    sets = {split: (tf.constant(rng.uniform(1, 2, (1, 1, SAMPLES, INPUTS)).astype(np.float32)),
                    tf.constant(rng.uniform(1, 2, (1, 1, SAMPLES, 1)).astype(np.float32)))
            for split in ("interpolation", "extrapolation")}
    for units in MEMBERS:
        layers = static_layers(ModelConfig(unit=units[0], layers=list(units)))
        layers[0].build((None, INPUTS))
        layers[1].build((None, 2))
        params = [{k: tf.constant(np.repeat(np.asarray(v)[None], args.replicas, 0)) for k, v in layer.params().items()}
                  for layer in layers]
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for derived in (False, True):
                times[derived].append(timed(layers, params, sets, args.replicas, derived))
        for derived, rows in times.items():
            first, second = [r[0] for r in rows], [r[1] for r in rows]
            print(f"{'-'.join(units):11s} {'with' if derived else 'without':7s} the forms: first call median "
                  f"{statistics.median(first):.3f} s ({min(first):.3f}-{max(first):.3f}), second call median "
                  f"{statistics.median(second) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
