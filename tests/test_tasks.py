"""The static task's data: slice placement, slice sums, seeds, ranges, in-graph batches, thresholds."""

import numpy as np
import pytest
import tensorflow as tf

from nalu_cli import tasks
from nalu_cli.config import TaskConfig, resolve


def spec_for(op="add", seed=0, **task):
    return tasks.TaskSpec.from_config(resolve({"task": {"op": op, **task}}).task, seed)


def test_default_slices_are_25_long_and_share_12_elements():
    for seed in range(20):
        (a0, a1), (b0, b1) = spec_for(seed=seed).subsets
        assert a1 - a0 == 25 and b1 - b0 == 25
        assert b0 == a0 + 13  # overlap x[a0+13 : a0+25], 12 elements
        assert 0 <= a0 and b1 <= 100


def test_slice_placement_is_drawn_from_the_seed():
    assert spec_for(seed=4).subsets == spec_for(seed=4).subsets
    assert len({spec_for(seed=s).subsets for s in range(20)}) > 5


def test_explicit_subsets_are_used_verbatim():
    spec = spec_for(subsets=[[0, 10], [5, 30]])
    assert spec.subsets == ((0, 10), (5, 30))


@pytest.mark.parametrize(
    "op, formula",
    [
        ("add", lambda a, b: a + b),
        ("sub", lambda a, b: a - b),
        ("mul", lambda a, b: a * b),
        ("div", lambda a, b: a / b),
        ("square", lambda a, b: a * a),
        ("sqrt", lambda a, b: np.sqrt(a)),
    ],
)
def test_targets_are_the_op_of_the_two_slice_sums(op, formula):
    spec = spec_for(op, subsets=[[2, 7], [4, 9]], input_size=10)
    x, y = tasks.sample_numpy(spec, spec.interpolation_range, 50, np.random.default_rng(1))
    a = np.array([sum(float(v) for v in row[2:7]) for row in x])
    b = np.array([sum(float(v) for v in row[4:9]) for row in x])
    np.testing.assert_allclose(y[:, 0], formula(a, b), rtol=1e-6)


def test_validation_and_test_sets_are_fixed_by_the_seed_and_differ_from_each_other():
    spec = spec_for("mul", seed=3)
    x_val, y_val = tasks.validation_set(spec)
    x_val2, _ = tasks.validation_set(spec)
    x_test, _ = tasks.test_set(spec)
    assert x_val.shape == (10_000, 100) and y_val.shape == (10_000, 1)
    np.testing.assert_array_equal(x_val, x_val2)
    assert not np.array_equal(x_val, tasks.validation_set(spec_for("mul", seed=4))[0])
    assert x_val.min() >= 1 and x_val.max() <= 2
    assert x_test.min() >= 2 and x_test.max() <= 6


def test_union_ranges_sample_every_interval_and_nothing_between():
    spec = spec_for(extrapolation_range=[[-6, -2], [2, 6]])
    x, _ = tasks.test_set(spec)
    assert np.all((np.abs(x) >= 2) & (np.abs(x) <= 6))
    assert 0.45 < np.mean(x < 0) < 0.55


def test_in_graph_batches_are_deterministic_per_seed_pair_and_correctly_labelled():
    spec = spec_for("mul", seed=0)
    x1, y1 = tasks.sample_batch_tf(spec, 128, tf.constant([7, 11], tf.int64))
    x2, y2 = tasks.sample_batch_tf(spec, 128, tf.constant([7, 11], tf.int64))
    x3, _ = tasks.sample_batch_tf(spec, 128, tf.constant([7, 12], tf.int64))
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    assert not np.array_equal(x1.numpy(), x3.numpy())
    assert x1.numpy().min() >= 1 and x1.numpy().max() <= 2
    np.testing.assert_allclose(y1.numpy(), tasks.targets_numpy(spec, x1.numpy()), rtol=1e-5)


# Rough values from Madsen & Johansen for the default task (literature.md); ours are simulated.
@pytest.mark.parametrize(
    "op, published", [("add", 1.5e-5), ("sub", 1.4e-8), ("mul", 0.16), ("div", 5e-12), ("square", 0.16), ("sqrt", 9e-9)]
)
def test_success_threshold_matches_the_published_order(op, published):
    threshold = tasks.success_threshold(spec_for(op), samples=200_000)
    assert published / 1.3 < threshold < published * 1.3


def test_formula_names_the_slices():
    assert spec_for("mul", subsets=[[3, 28], [16, 41]]).formula() == "sum(x[3:28]) * sum(x[16:41])"


def test_task_spec_round_trips_through_dict():
    spec = spec_for("div", seed=9, extrapolation_range=[[2, 3], [4, 6]])
    assert tasks.TaskSpec.from_dict(spec.to_dict()) == spec


def test_config_default_task_matches_the_literature():
    task = TaskConfig()
    assert (task.input_size, task.subset_ratio, task.overlap_ratio) == (100, 0.25, 0.5)
    assert (task.interpolation_range, task.extrapolation_range) == ([1.0, 2.0], [2.0, 6.0])
