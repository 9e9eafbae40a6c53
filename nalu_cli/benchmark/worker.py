"""What a benchmark worker process runs: one group of seeds of one cell, trained together.

`run_group` is a top-level function of an importable module because the local runner
starts workers with "spawn", which pickles it by its module path (as Ray does).
"""

from __future__ import annotations

from nalu_cli.config import Config, from_dict


def run_group(work: dict) -> list[dict]:
    """Train one group of seeds of one cell; one result dict per seed. Runs in a worker process."""
    from nalu_cli._tf import import_tensorflow, use_one_thread

    tf = import_tensorflow()
    use_one_thread(tf)  # workers fill the cores; one thread each is also the fastest per model
    from nalu_cli.evaluation import finite_or_none
    from nalu_cli.training import Replica, ReplicaTrainer

    config: Config = from_dict(work["config"])
    restarts = config.model.restart_count
    replicas = [replica for seed in work["seeds"] for replica in Replica.with_restarts(config, seed)]
    groups = [list(range(i * restarts, (i + 1) * restarts)) for i in range(len(work["seeds"]))]
    trainer = ReplicaTrainer(config.model, config.training, replicas)
    training = config.training
    results = trainer.fit(training.steps, training.eval_every, training.early_stop, groups=groups)
    records = []
    for seed, group in zip(work["seeds"], groups):
        chosen = trainer.chosen(group)  # the restart with the lowest interpolation MSE is the model
        replica, threshold, result = replicas[chosen], trainer.thresholds[chosen], results[chosen]
        record = {
            "op": work["op"],
            "unit": work["unit"],
            "seed": seed,
            "group": list(work["seeds"]),
            "restarts": restarts,
            "chosen_restart": chosen - group[0],
            "success": bool(result.extrapolation_mse < threshold),
            "solved_at_step": result.solved_at_step,
            "solved_at_seconds": result.solved_at_seconds,
            "interpolation_mse": finite_or_none(result.interpolation_mse),
            "extrapolation_mse": finite_or_none(result.extrapolation_mse),
            "threshold": float(threshold),
            "sparsity_error": trainer.sparsity_error(result.selected_params),
            "selected_step": result.selected_step,
            "selected_snapped": result.snapped,
            "selected_polished": result.polished,
            "steps_trained": max(results[r].stopped_at_step for r in group),
            "diverged_at_step": result.diverged_at_step,
            "settings": work["settings"],
        }
        if work["protocol"] == "trask":
            record.update(_normalized_errors(config, replica.spec, trainer, result))
        records.append(record)
    return records


def _normalized_errors(config: Config, spec, trainer, result) -> dict:
    from nalu_cli import tasks
    from nalu_cli.evaluation import normalized_error, random_baseline_mse

    datasets = {"interpolation": tasks.validation_set(spec), "extrapolation": tasks.test_set(spec)}
    baseline = random_baseline_mse(config.model, spec, datasets)
    return {
        "normalized_interpolation": normalized_error(result.interpolation_mse, baseline["interpolation"]),
        "normalized_extrapolation": normalized_error(result.extrapolation_mse, baseline["extrapolation"]),
    }
