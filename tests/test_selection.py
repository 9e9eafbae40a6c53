"""Selection as plain numpy: candidates compete on interpolation MSE only; solved, stops, divergence."""

import math

import numpy as np

from nalu_cli.training import selection
from nalu_cli.training.selection import Candidate, ReplicaResult, ReplicaStatus


def candidate(interpolation, extrapolation, value, **kinds):
    """Candidate for R replicas whose single weight `w` holds `value` (to tell candidates apart)."""
    replicas = len(interpolation)
    weights = [{"w": np.full((replicas, 1), value, np.float32)}]
    return Candidate(np.array(interpolation, float), np.array(extrapolation, float), weights, **kinds)


def test_the_lowest_interpolation_error_is_selected_whatever_the_extrapolation_error():
    results = [ReplicaResult()]
    current = candidate([1e-3], [1e-9], value=1.0)
    snapped = candidate([1e-4], [5.0], value=2.0, snapped=True)
    selection.select(results, [current, snapped], np.array([True]), step=500)
    (result,) = results
    assert result.snapped and not result.polished and result.selected_step == 500
    assert result.interpolation_mse == 1e-4 and result.extrapolation_mse == 5.0
    assert result.selected_params[0]["w"][0] == 2.0


def test_a_selection_is_kept_until_a_candidate_is_strictly_better():
    results = [ReplicaResult()]
    selection.select(results, [candidate([1e-3], [1.0], value=1.0)], np.array([True]), step=0)
    selection.select(results, [candidate([1e-3], [0.5], value=2.0), candidate([math.nan], [0.0], value=3.0)],
                     np.array([True]), step=1000)
    assert results[0].selected_step == 0 and results[0].extrapolation_mse == 1.0


def test_a_stopped_replica_gets_no_polished_candidate_but_still_its_current_weights():
    results = [ReplicaResult(), ReplicaResult()]
    polished = candidate([1e-9, 1e-9], [1e-9, 1e-9], value=7.0, polished=True)
    selection.select(results, [candidate([1.0, 1.0], [1.0, 1.0], value=1.0), polished], np.array([False, True]), step=1000)
    assert not results[0].polished and results[0].interpolation_mse == 1.0
    assert results[1].polished and results[1].interpolation_mse == 1e-9
    status = ReplicaStatus(np.array([False, True]), np.ones(2, np.float32), np.zeros(2, np.int64))
    rows = selection.entries(results, [polished], status, np.array([0.1, 0.2]), step=1000)
    assert "polished_interpolation_mse" not in rows[0] and rows[1]["polished_interpolation_mse"] == 1e-9


def test_entries_name_each_candidate_and_report_the_selected_step():
    results = [ReplicaResult(selected_step=500)]
    candidates = [candidate([0.25], [4.0], 1.0), candidate([0.5], [8.0], 1.0, snapped=True),
                  candidate([0.125], [2.0], 1.0, polished=True, snapped=True)]
    (row,) = selection.entries(results, candidates, ReplicaStatus.start(1), np.array([np.nan]), step=1000)
    assert row == {
        "step": 1000, "loss": None, "divergence_events": 0,
        "interpolation_mse": 0.25, "extrapolation_mse": 4.0,
        "snapped_interpolation_mse": 0.5, "snapped_extrapolation_mse": 8.0,
        "polished_snapped_interpolation_mse": 0.125, "polished_snapped_extrapolation_mse": 2.0,
        "selected_step": 500,
    }


def test_solved_is_the_first_step_the_selected_checkpoint_meets_the_threshold():
    results = [ReplicaResult(extrapolation_mse=0.5), ReplicaResult(extrapolation_mse=2.0)]
    selection.mark_solved(results, np.array([1.0, 1.0]), step=3000, seconds=1.5)
    selection.mark_solved(results, np.array([1.0, 1.0]), step=4000, seconds=2.0)
    assert (results[0].solved_at_step, results[0].solved_at_seconds) == (3000, 1.5)
    assert results[1].solved_at_step is None


def test_early_stop_stops_solved_replicas_and_groups_whose_chosen_member_is_solved():
    # Group [0, 1]: replica 1 has the lower interpolation MSE and is solved -> both stop.
    # Group [2, 3]: replica 3 is solved but replica 2 is chosen (lower interpolation MSE) -> only 3 stops.
    results = [ReplicaResult(interpolation_mse=1e-2, extrapolation_mse=9.0), ReplicaResult(interpolation_mse=1e-3, extrapolation_mse=0.1),
               ReplicaResult(interpolation_mse=1e-4, extrapolation_mse=9.0), ReplicaResult(interpolation_mse=1e-3, extrapolation_mse=0.1)]
    status = ReplicaStatus.start(4)
    selection.stop(results, status, np.ones(4), [[0, 1], [2, 3]], early_stop=True, step=2000)
    assert status.active.tolist() == [False, False, True, False]
    assert [r.stopped_at_step for r in results] == [2000, 2000, None, 2000]


def test_without_early_stop_nothing_stops_on_success():
    results = [ReplicaResult(interpolation_mse=0.0, extrapolation_mse=0.0)]
    status = ReplicaStatus.start(1)
    selection.stop(results, status, np.ones(1), [[0]], early_stop=False, step=2000)
    assert status.active.tolist() == [True] and results[0].stopped_at_step is None


def test_each_non_finite_chunk_halves_the_learning_rate_until_the_replica_gives_up():
    results = [ReplicaResult(), ReplicaResult()]
    status = ReplicaStatus.start(2)
    for chunk in range(1, selection.MAX_DIVERGENCE_EVENTS + 1):
        selection.record_divergence(status, np.array([False, True]), results, step=chunk * 100)
    assert status.divergence_events.tolist() == [selection.MAX_DIVERGENCE_EVENTS, 0]
    assert status.lr_scale[0] == 0.5**selection.MAX_DIVERGENCE_EVENTS and status.lr_scale[1] == 1.0
    assert status.active.tolist() == [False, True]
    assert results[0].diverged_at_step == 100 * selection.MAX_DIVERGENCE_EVENTS and results[1].diverged_at_step is None


def test_the_chosen_restart_is_the_lowest_interpolation_error_first_on_ties():
    results = [ReplicaResult(interpolation_mse=v) for v in (0.3, 0.1, 0.1, math.inf)]
    assert selection.chosen(results, [0, 1, 2, 3]) == 1
    assert selection.chosen(results, [3]) == 3


def test_selection_imports_no_tensorflow():
    import subprocess
    import sys

    code = "import sys; import nalu_cli.training.selection; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_steps_trained_counts_a_group_that_stopped_at_step_0_as_0_steps():
    """In a benchmark group, a seed solved at its first evaluation trained 0 steps, however long
    the other seeds of the group went on."""
    from types import SimpleNamespace

    from nalu_cli.training.record import result_record

    solved = ReplicaResult(interpolation_mse=0.0, extrapolation_mse=0.0, solved_at_step=0, stopped_at_step=0,
                           selected_params=[{"w": np.ones((2, 1))}])
    running = ReplicaResult(interpolation_mse=1.0, extrapolation_mse=5.0, stopped_at_step=None)
    trainer = SimpleNamespace(results=[solved, running], thresholds=np.array([1.0, 1.0]), step=4000,
                              status=ReplicaStatus.start(2), sparsity_error=lambda index, params: 0.0,
                              chosen=lambda group: selection.chosen([solved, running], group),
                              architecture=lambda index: SimpleNamespace(model_config=SimpleNamespace(name="nau")))
    assert result_record(trainer, [0], seed=0)["steps_trained"] == 0
    assert result_record(trainer, [1], seed=1)["steps_trained"] == 4000
