"""Training: R independent models in one compiled graph, data drawn in-graph, selection on interpolation only.

One concern per module, data flowing one way:
    replicas.py    what one model trains on (init seed, task, data stream)
    optimizer.py   Adam / split-adam: AdamState, init, update (pure)
    step.py        the compiled chunk (state in, state and losses out); apply_if_finite
    evaluate.py    validation / test MSE of weights and their snapped form -> selection candidates
    polish.py      Levenberg-Marquardt on interpolation samples (params in, params out)
    selection.py   best-by-interpolation, solved, early stop, divergence (numpy only)
    checkpoint.py  the training state as arrays and scalars, written atomically
    callbacks.py   Callback, RunWriter (metrics.jsonl, TensorBoard, checkpoint per evaluation)
    trainer.py     ReplicaTrainer, composing the above
    record.py      the result record summary.json and benchmark results share
    run.py         `nalu train`: train() and resume() write a run directory
"""

from nalu_cli.training.callbacks import Callback, RunWriter
from nalu_cli.training.checkpoint import read_checkpoint, write_checkpoint
from nalu_cli.training.record import result_record
from nalu_cli.training.replicas import Replica
from nalu_cli.training.run import resume, train
from nalu_cli.training.selection import ReplicaResult
from nalu_cli.training.trainer import ReplicaTrainer

__all__ = [
    "Callback",
    "Replica",
    "ReplicaResult",
    "ReplicaTrainer",
    "RunWriter",
    "read_checkpoint",
    "result_record",
    "resume",
    "train",
    "write_checkpoint",
]
