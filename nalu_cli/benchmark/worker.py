"""What a benchmark worker process runs: one group of seeds of one cell, trained together.

`run_group` is a top-level function of an importable module because the local runner
starts workers with "spawn", which pickles it by its module path (as Ray does).
"""

from __future__ import annotations

from nalu_cli.config import Config, from_dict

# The worker's graphs for the cell of its last group (architecture.Graphs): a next group of the same
# cell reuses them; another cell starts afresh, so a worker holds one cell's graphs, as during a group.
_graphs: tuple = (None, None)


def run_group(work: dict, threads: int = 1) -> list[dict]:
    """Train one group of seeds of one cell; one result dict per seed. Runs in a worker process,
    TensorFlow on `threads` threads (the numbers do not depend on it)."""
    from nalu_cli._tf import import_tensorflow, use_threads

    tf = import_tensorflow(cache_compilations=False)  # its keys would mostly miss here: see xla_cache
    use_threads(tf, threads)  # one when the workers fill the cores: the fastest per model
    from nalu_cli.training import ReplicaTrainer, result_record
    from nalu_cli.training.architecture import Graphs
    from nalu_cli.training.replicas import members

    global _graphs
    cell = (work["op"], work["unit"], work["settings"])
    if _graphs[0] != cell:
        _graphs = (cell, Graphs())
    config: Config = from_dict(work["config"])
    architectures, groups = members(config, work["seeds"])
    trainer = ReplicaTrainer.of(architectures, _graphs[1])
    training = config.training
    trainer.fit(training.steps, training.eval_every, training.early_stop, groups=groups)
    records = []
    for seed, group in zip(work["seeds"], groups):
        record = {"op": work["op"], "unit": work["unit"], **result_record(trainer, group, seed),
                  "group": list(work["seeds"]), "settings": work["settings"]}
        if work["protocol"] == "trask":
            chosen = trainer.chosen(group)  # the restart with the lowest interpolation MSE is the model
            record.update(_normalized_errors(trainer.architecture(chosen).model_config, trainer.replicas[chosen].spec,
                                             trainer.results[chosen]))
        records.append(record)
    return records


def _normalized_errors(model_config, spec, result) -> dict:
    from nalu_cli import tasks
    from nalu_cli.evaluation import normalized_error, random_baseline_mse

    datasets = {"interpolation": tasks.validation_set(spec), "extrapolation": tasks.test_set(spec)}
    baseline = random_baseline_mse(model_config, spec, datasets)
    return {
        "normalized_interpolation": normalized_error(result.interpolation_mse, baseline["interpolation"]),
        "normalized_extrapolation": normalized_error(result.extrapolation_mse, baseline["extrapolation"]),
    }
