"""What the polish step (training/polish.py) costs the default model's NaiNPU member, by input size.

    .venv/bin/python benchmarks/polish_cost.py [--repeats 3] [--sizes 100,1000,10000]

The member polishes its 6 restarts at steps 5,000 and 10,000 of a run that has not succeeded:
50 Levenberg-Marquardt iterations over 256 samples of 2 x input_size + 2 weights a restart.
Each iteration's step comes from a P x P system (the parameters') or, when P exceeds the
samples, from the equivalent N x N one (`polish.lm_step`). For each input size this times a
polish with each system, `--repeats` times, interleaved, on one seed's restarts at their
initial weights (the arithmetic does not depend on the weights): the first call (tracing and the
call) and a second. The P x P system is skipped where its matrices would not fit in memory.
Prints the medians.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

from nalu_cli._tf import import_tensorflow

# The default model's restarts (model.restarts), each polished with its own system.
RESTARTS = 6
# float64 bytes of the P x P systems' matrices (J^T J and the system, every restart) beyond which it is skipped
MAX_PRIMAL_BYTES = 4 * 2**30


def polish_seconds(size: int, dual: bool) -> tuple[float, float]:
    from nalu_cli.config import resolve
    from nalu_cli.training import polish
    from nalu_cli.training.replicas import members
    from nalu_cli.training.trainer import ReplicaTrainer

    config = resolve(None, {"task": {"op": "div", "input_size": size}, "seed": 0})
    architectures, _ = members(config, [0])
    original = polish.lm_step
    polish.lm_step = functools.partial(original, dual=dual)  # read when the graph is traced
    try:
        trainer = ReplicaTrainer.of(architectures[1:])  # the NaiNPU member alone
        arch = trainer.architectures[0]
        assert len(arch.replicas) == RESTARTS, "the default model's restarts changed: update RESTARTS"
        started = time.perf_counter()
        arch.polish(arch.state.params)
        first = time.perf_counter()
        arch.polish(arch.state.params)
        return first - started, time.perf_counter() - first
    finally:
        polish.lm_step = original


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="100,1000,10000")
    args = parser.parse_args(argv)
    import_tensorflow()
    for size in (int(s) for s in args.sizes.split(",")):
        parameters = 2 * size + 2
        primal_bytes = 2 * RESTARTS * parameters**2 * 8
        systems = [("P x P", False), ("N x N", True)] if primal_bytes <= MAX_PRIMAL_BYTES else [("N x N", True)]
        times = {name: [] for name, _ in systems}
        for _ in range(args.repeats):
            for name, dual in systems:
                times[name].append(polish_seconds(size, dual))
        for name, measured in times.items():
            first = statistics.median(t[0] for t in measured)
            second = statistics.median(t[1] for t in measured)
            print(f"input size {size:>6} (P = {parameters:,}), {name} system: first call {first:.2f} s, "
                  f"second {second:.2f} s (medians of {len(measured)})", flush=True)
        if len(systems) == 1:
            print(f"input size {size:>6}: P x P system skipped (its matrices: {primal_bytes / 2**30:.0f} GiB)",
                  flush=True)


if __name__ == "__main__":
    main()
