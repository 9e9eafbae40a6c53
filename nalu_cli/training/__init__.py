"""Training: R independent models in one compiled graph, data drawn in-graph, selection on interpolation only.

One concern per module, data flowing one way:
    replicas.py    what one model trains on (init seed, task, data stream)
    optimizer.py   Adam / split-adam: AdamState, init, update (pure)
    step.py        the compiled chunk (state in, state and losses out); apply_if_finite
    evaluate.py    validation / test MSE of weights and their snapped form -> selection candidates
    polish.py      Levenberg-Marquardt on interpolation samples (params in, params out)
    selection.py   best-by-interpolation, solved, early stop, divergence (numpy only)
    checkpoint.py  the training state as arrays and scalars, written atomically
    architecture.py  one architecture's replicas: template model, state, compiled chunk, evaluator, polish
    callbacks.py   Callback, RunWriter (metrics.jsonl, TensorBoard, checkpoint per evaluation)
    trainer.py     ReplicaTrainer, composing the above over one architecture or several
    record.py      the result record summary.json and benchmark results share
    run.py         `nalu train`: train() and resume() write a run directory
"""

from importlib import import_module

# Where each public name lives. Loaded on first use, so that the numpy-only modules
# (selection, checkpoint) import without TensorFlow.
_PUBLIC = {
    "Member": "replicas",
    "Callback": "callbacks",
    "RunWriter": "callbacks",
    "read_checkpoint": "checkpoint",
    "write_checkpoint": "checkpoint",
    "result_record": "record",
    "Replica": "replicas",
    "resume": "run",
    "train": "run",
    "ReplicaResult": "selection",
    "ReplicaTrainer": "trainer",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
