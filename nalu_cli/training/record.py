"""One result record per trained model: the fields `summary.json` and a benchmark's results.jsonl share."""

from __future__ import annotations

from nalu_cli.evaluation import finite_or_none


def result_record(trainer, group: list[int], seed: int) -> dict:
    """What training made of one model: `group` is its restarts (replica indices), the model
    the one with the lowest interpolation MSE; success is its extrapolation MSE below the
    task's threshold (Madsen & Johansen). Call after `fit`."""
    chosen = trainer.chosen(group)
    result, threshold = trainer.results[chosen], float(trainer.thresholds[chosen])
    return {
        "seed": seed,
        "restarts": len(group),
        "chosen_restart": group.index(chosen),
        "architecture": trainer.architecture(chosen).model_config.name,  # a portfolio's: the chosen member's
        "selected_step": result.selected_step if result.selected_params is not None else None,  # None: nothing finite
        "selected_snapped": result.snapped,
        "selected_polished": result.polished,
        "interpolation_mse": finite_or_none(result.interpolation_mse),
        "extrapolation_mse": finite_or_none(result.extrapolation_mse),
        "success_threshold": threshold,
        "success": bool(result.extrapolation_mse < threshold),
        "solved_at_step": result.solved_at_step,
        "solved_at_seconds": result.solved_at_seconds,
        "sparsity_error": trainer.sparsity_error(chosen, result.selected_params) if result.selected_params else None,
        # Restarts of one model stop together; a model trained in a benchmark group stops on its own.
        "steps_trained": max(trainer.step if trainer.results[r].stopped_at_step is None
                             else trainer.results[r].stopped_at_step for r in group),
        "diverged_at_step": result.diverged_at_step,
        "divergence_events": int(sum(trainer.status.divergence_events[r] for r in group)),
    }
