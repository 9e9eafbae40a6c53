"""The cost of one evaluation during training, with and without XLA, side by side.

    .venv/bin/python benchmarks/evaluation.py [--kind recurrent] [--op mul] [--calls 5]

Builds the default model's trainer (one seed, its restarts) for the task and times
`ReplicaTrainer.evaluate()` (validation and test sets, the weights and their snapped form)
with the evaluation compiled by XLA and without, interleaved, `--calls` times each after one
warm-up call (which traces and compiles). Prints the median and range per variant, and their
ratio. nalu compiles the recurrent evaluation only (training/evaluate.py says why).
"""

from __future__ import annotations

import argparse
import statistics
import time

from nalu_cli._tf import import_tensorflow, use_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="recurrent", choices=["static", "recurrent"])
    parser.add_argument("--op", default="mul")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    tf = import_tensorflow()
    use_threads(tf)
    from nalu_cli.config import resolve
    from nalu_cli.training import ReplicaTrainer
    from nalu_cli.training.replicas import members
    from nalu_cli.training.evaluate import make_evaluator

    config = resolve({"task": {"kind": args.kind, "op": args.op}})
    # The default model's first architecture (NAU -> gated), its 6 restarts: what this measured before the portfolio.
    trainer = ReplicaTrainer.of(members(config, [0])[0][:1])
    arch = trainer.architectures[0]
    specs = [replica.spec for replica in arch.replicas]
    variants = {jit: make_evaluator(arch.forward, arch.layers, specs, arch.snap_selection, jit_compile=jit)
                for jit in (True, False)}
    params = arch.state.params
    for evaluate in variants.values():
        evaluate(params)  # trace and compile
    seconds = {jit: [] for jit in variants}
    for _ in range(args.calls):
        for jit, evaluate in variants.items():
            started = time.perf_counter()
            evaluate(params)
            seconds[jit].append(time.perf_counter() - started)
    print(f"{args.kind} {args.op}, {len(specs)} replicas, {args.calls} calls each:")
    for jit, times in seconds.items():
        print(f"  {'XLA' if jit else 'no XLA'}: median {statistics.median(times):.3f} s "
              f"({min(times):.3f}-{max(times):.3f})")
    print(f"  no XLA / XLA: {statistics.median(seconds[False]) / statistics.median(seconds[True]):.1f}x")


if __name__ == "__main__":
    main()
