"""The static task's data: slice placement, slice sums, seeds, ranges, in-graph batches, thresholds."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from nalu_cli import tasks, thresholds
from nalu_cli.config import resolve


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


@pytest.mark.parametrize("block", [1, 7, 3 * 40 * 5, 10**9])
def test_sets_drawn_a_block_at_a_time_are_the_numbers_of_one_draw(monkeypatch, block):
    # The float64 draws of a large set are made a block of rows at a time (they took 1.9 GB beside a
    # 400 MB set); every set a seed ever drew must stay the same numbers. Blocks of 1 number (a row at
    # a time), 7 (not a whole row: still a row), exactly 3 rows of a recurrent set, and the whole set.
    monkeypatch.setattr(tasks, "DRAW_BLOCK_NUMBERS", block)
    intervals = ((-6.0, -2.0), (2.0, 6.0))  # 8 wide in all: u in [0, 4) is the first, [4, 8) the second
    for shape in [(50, 40, 5), (200, 7), (0, 3)]:
        u = np.random.default_rng(11).uniform(0.0, 8.0, size=shape)
        expected = np.where(u >= 4.0, u - 4.0 + 2.0, u - 6.0).astype(np.float32)
        drawn = tasks.uniform_union_numpy(np.random.default_rng(11), intervals, shape, dtype=np.float32)
        assert drawn.dtype == np.float32 and drawn.shape == shape
        np.testing.assert_array_equal(drawn, expected)


def splitmix64(seed: int, count: int) -> list[int]:
    """SplitMix64 as published (Steele, Lea & Flood 2014): state += gamma; output mix(state)."""
    out, state, mask = [], seed, 2**64 - 1
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_training_numbers_are_the_splitmix64_sequence_in_graph_and_in_numpy():
    key = tasks.stream_key(3, tasks.TRAIN_STREAM)
    expected = np.array([(z >> 40) / 2**24 for z in splitmix64(key, 6 * 4)], np.float32).reshape(4, 2, 3)
    for step in range(4):  # batch `step` continues the sequence where batch step - 1 ended
        np.testing.assert_array_equal(tasks.uniform_numpy(key, step, (2, 3)), expected[step])
        np.testing.assert_array_equal(tasks.uniform_tf(key, tf.constant(step, tf.int64), (2, 3)).numpy(), expected[step])


def test_compiled_training_numbers_match_numpy_for_several_streams_and_steps_far_into_them():
    """As the training chunk draws them (XLA, R keys at once), at steps whose counters pass 2^64."""
    keys = [tasks.stream_key(s, tasks.TRAIN_STREAM) for s in range(3)]
    draw = tf.function(lambda step: tasks.uniform_tf(keys, step, (4, 7)), jit_compile=True, autograph=False)
    for step in (0, 5, 2**40 + 3, 2**62 // 7):
        expected = np.stack([tasks.uniform_numpy(key, step, (4, 7)) for key in keys])
        np.testing.assert_array_equal(draw(tf.constant(step, tf.int64)).numpy(), expected)


def test_in_graph_batches_are_deterministic_per_key_and_step_and_correctly_labelled():
    spec = spec_for("mul", seed=0)
    key = tasks.stream_key(0, tasks.TRAIN_STREAM)
    x1, y1 = tasks.sample_batch_tf(spec, 128, key, tf.constant(11, tf.int64))
    x2, _ = tasks.sample_batch_tf(spec, 128, key, tf.constant(12, tf.int64))
    x3, _ = tasks.sample_batch_tf(spec, 128, key + 1, tf.constant(11, tf.int64))
    x_np, y_np = tasks.sample_batch_numpy(spec, 128, key, 11)
    np.testing.assert_array_equal(x1.numpy(), x_np)
    np.testing.assert_allclose(y1.numpy(), y_np, rtol=1e-6)
    assert not np.array_equal(x1.numpy(), x2.numpy()) and not np.array_equal(x1.numpy(), x3.numpy())
    assert x1.numpy().min() >= 1 and x1.numpy().max() <= 2
    assert abs(x1.numpy().mean() - 1.5) < 0.01
    np.testing.assert_allclose(y1.numpy(), tasks.targets_numpy(spec, x1.numpy()), rtol=1e-5)


def test_batches_for_many_streams_at_once_match_one_stream_at_a_time():
    specs = [spec_for("sub", seed=s, interpolation_range=[[-2, -1], [1, 2]], extrapolation_range=[[-6, -2], [2, 6]]) for s in range(3)]
    assert len({s.subsets for s in specs}) == 3  # each seed has its own slices
    keys = [tasks.stream_key(s, tasks.TRAIN_STREAM) for s in range(3)]
    x, y = tasks.sample_batches_tf(specs, 64, keys, tf.constant(5, tf.int64))
    for spec, key, x_r, y_r in zip(specs, keys, x.numpy(), y.numpy()):
        x_one, y_one = tasks.sample_batch_numpy(spec, 64, key, 5)
        np.testing.assert_array_equal(x_r, x_one)
        np.testing.assert_allclose(y_r, y_one, rtol=1e-4)
    with pytest.raises(ValueError, match="share op"):
        tasks.sample_batches_tf([specs[0], spec_for("mul", seed=1)], 64, keys[:2], tf.constant(5, tf.int64))


def test_success_threshold_is_a_property_of_the_task_not_of_where_a_seed_put_the_slices():
    first, second = spec_for("mul", seed=0), spec_for("mul", seed=1)
    assert first.subsets != second.subsets
    assert thresholds.success_threshold(first, samples=20_000) == thresholds.success_threshold(second, samples=20_000)
    assert thresholds.success_threshold(first, samples=20_000) != thresholds.success_threshold(spec_for("add"), samples=20_000)


# A task no other test trains: a `nalu train` run in this process may have left its own prefetch running.
PREFETCHED = {"input_size": 37}


def test_a_prefetched_threshold_is_simulated_once_and_is_the_number_simulated_in_the_foreground(monkeypatch):
    spec = spec_for("sub", **PREFETCHED)
    thresholds._threshold_cached.cache_clear()
    foreground = thresholds.success_threshold(spec)
    thresholds._threshold_cached.cache_clear()
    calls = []
    simulate = thresholds.near_solution_mse
    monkeypatch.setattr(thresholds, "near_solution_mse", lambda *args: calls.append(args) or simulate(*args))
    thresholds.prefetch_threshold(spec)  # `nalu train` starts it before importing TensorFlow
    assert thresholds.success_threshold(spec) == foreground
    assert thresholds.success_threshold(spec_for("sub", seed=3, **PREFETCHED)) == foreground
    assert len([args for args in calls if args[1] == thresholds.threshold_groups(spec)]) == 1
    thresholds._threshold_cached.cache_clear()


def test_a_prefetch_that_fails_prints_nothing_and_the_threshold_raises_where_it_is_asked_for(monkeypatch, capsys):
    simulate = thresholds.near_solution_mse

    def broken(op, groups, *args):
        if groups != thresholds.threshold_groups(spec_for("sub", **PREFETCHED)):
            return simulate(op, groups, *args)
        raise RuntimeError("simulation failed")

    uncaught = []  # what the thread would print as a traceback
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    thresholds._threshold_cached.cache_clear()
    monkeypatch.setattr(thresholds, "near_solution_mse", broken)
    thresholds.prefetch_threshold(spec_for("sub", **PREFETCHED)).join(10)
    with pytest.raises(RuntimeError, match="simulation failed"):
        thresholds.success_threshold(spec_for("sub", **PREFETCHED))
    assert uncaught == [] and capsys.readouterr().err == ""
    thresholds._threshold_cached.cache_clear()


def test_a_result_being_computed_is_waited_for_and_a_failure_is_not_kept():
    release, calls = threading.Event(), []

    def slow(key):
        calls.append(key)
        release.wait(10)
        if key == "bad" and calls.count("bad") == 1:
            raise RuntimeError("failed")
        return key * 2

    once = thresholds._Once(slow)
    with ThreadPoolExecutor(3) as pool:
        waiting = [pool.submit(once, "ab") for _ in range(3)]
        time.sleep(0.2)
        release.set()
        assert [future.result() for future in waiting] == ["abab"] * 3
    assert calls == ["ab"]
    with pytest.raises(RuntimeError, match="failed"):
        once("bad")
    assert once("bad") == "badbad"  # tried again, not the failure kept
    assert once("bad") == "badbad" and calls == ["ab", "bad", "bad"]


# Rough values from Madsen & Johansen for the default task (literature.md); ours are simulated.
@pytest.mark.parametrize(
    "op, published", [("add", 1.5e-5), ("sub", 1.4e-8), ("mul", 0.16), ("div", 5e-12), ("square", 0.16), ("sqrt", 9e-9)]
)
def test_success_threshold_matches_the_published_order(op, published):
    threshold = thresholds.success_threshold(spec_for(op), samples=200_000)
    assert published / 1.3 < threshold < published * 1.3


def whole_vector_threshold(spec, samples, seed=7):
    """The threshold by its definition: whole input vectors through the perturbed weights (float64),
    a recurrent cell run step by step. Returns the estimate and its standard error."""
    eps, n = thresholds.SUCCESS_EPSILON, spec.input_size
    weights = np.full((n, 2), eps)
    for column, (lo, hi) in enumerate(spec.subsets):
        weights[lo:hi, column] = 1 - eps
    shape = (samples, *spec.shape(spec.extrapolation_length))
    x = tasks.uniform_union_numpy(np.random.default_rng(seed), spec.extrapolation_range, shape)
    a, b = tasks.slice_sums(spec, x)
    if spec.recurrent:
        near = np.zeros((samples, 2))
        for step in range(x.shape[1]):
            near = x[:, step] @ weights + near @ np.array([[1 - eps, eps], [eps, 1 - eps]])
    else:
        near = x @ weights
    square = (tasks.apply_op(spec.op, near[:, 0], near[:, 1]) - tasks.apply_op(spec.op, a, b)) ** 2
    return square.mean(), square.std() / np.sqrt(samples)


def test_threshold_from_group_sums_agrees_with_whole_input_vectors():
    # Slice groups of 5, 20 (beyond the exact terms: drawn with the exact sum's first four moments)
    # and 20 inputs, 15 in neither; a union range, so each interval's share is drawn too.
    for op in ("sub", "mul", "div", "sqrt"):
        spec = spec_for(op, input_size=60, subsets=[[0, 25], [5, 45]], extrapolation_range=[[2, 3], [4, 6]])
        assert thresholds.threshold_groups(spec) == (5, 20, 20, 15)
        expected, expected_error = whole_vector_threshold(spec, 100_000)
        value, error = thresholds.threshold_estimate(spec, samples=100_000)
        assert abs(value - expected) < 4 * np.hypot(error, expected_error), op
        assert error < 0.01 * value  # the comparison is sharp: each estimate within 1%


def test_recurrent_threshold_from_group_sums_agrees_with_running_the_cell_on_whole_sequences():
    for op in ("add", "mul", "div"):
        spec = recurrent_spec(op, input_size=12, subsets=[[2, 5], [4, 8]], extrapolation_length=30)
        expected, expected_error = whole_vector_threshold(spec, 10_000)
        value, error = thresholds.threshold_estimate(spec, samples=10_000)
        assert abs(value - expected) < 4 * np.hypot(error, expected_error), op
        assert error < 0.03 * value


def test_threshold_cost_does_not_grow_with_input_size():
    spec = spec_for("mul", input_size=1_000_000)
    started = time.perf_counter()
    value = thresholds.success_threshold(spec, samples=100_000)
    # 10^11 input numbers if drawn one by one (hours); four sums per sample (about 0.05 s)
    assert time.perf_counter() - started < 2.0
    assert value > 0


def test_sums_beyond_the_exact_terms_have_the_exact_sums_mean_variance_and_kurtosis():
    rng = np.random.default_rng(0)
    sums = thresholds.uniform_sums(rng, ((2.0, 6.0),), 20, (1_000_000,), exact_terms=4)
    # 20 terms U[2, 6]: mean 80, variance 20 * 16 / 12, excess kurtosis -1.2 / 20 (a normal's is 0)
    assert abs(sums.mean() - 80) < 0.03 and abs(sums.var() / (20 * 16 / 12) - 1) < 0.01
    kurtosis = np.mean((sums - sums.mean()) ** 4) / sums.var() ** 2 - 3
    assert -0.08 < kurtosis < -0.04
    assert sums.min() >= 40 and sums.max() <= 120
    # a union: U([2, 3] u [4, 6]) has mean 25/6 and variance 19 - (25/6)^2 per term
    sums = thresholds.uniform_sums(rng, ((2.0, 3.0), (4.0, 6.0)), 50, (200_000,), exact_terms=4)
    assert abs(sums.mean() / (50 * 25 / 6) - 1) < 1e-3
    assert abs(sums.var() / (50 * (19 - (25 / 6) ** 2)) - 1) < 0.02


def test_formula_names_the_slices():
    assert spec_for("mul", subsets=[[3, 28], [16, 41]]).formula() == "sum(x[3:28]) * sum(x[16:41])"


def test_task_spec_round_trips_through_dict():
    spec = spec_for("div", seed=9, extrapolation_range=[[2, 3], [4, 6]])
    assert tasks.TaskSpec.from_dict(spec.to_dict()) == spec


def test_config_default_task_matches_the_literature():
    task = resolve({}).task
    assert (task.kind, task.input_size, task.subset_ratio, task.overlap_ratio) == ("static", 100, 0.25, 0.5)
    assert (task.interpolation_range, task.extrapolation_range) == ([[1.0, 2.0]], [[2.0, 6.0]])


# -- the recurrent task ---------------------------------------------------------------------------


def recurrent_spec(op="add", seed=0, **task):
    return spec_for(op, seed, kind="recurrent", **task)


@pytest.mark.parametrize("input_size", [9, 10, 20])
def test_recurrent_slices_have_sizes_1_to_5_overlap_1_to_2_and_fit(input_size):
    drawn = [tasks.draw_recurrent_subsets(input_size, seed) for seed in range(300)]
    for (a0, a1), (b0, b1) in drawn:
        a_size, b_size, overlap = a1 - a0, b1 - b0, a1 - b0
        assert 1 <= a_size <= 5 and 1 <= b_size <= 5
        assert 1 <= overlap <= min(2, a_size, b_size)
        assert 0 <= a0 and b1 <= input_size
    # the whole published range is drawn (sizes 1 and 5, overlaps 1 and 2), not a corner of it
    assert {a1 - a0 for (a0, a1), _ in drawn} == {b1 - b0 for _, (b0, b1) in drawn} == {1, 2, 3, 4, 5}
    assert {a1 - b0 for (_, a1), (b0, _) in drawn} == {1, 2}
    if input_size == 9:  # sizes 5 and 5 overlapping by 1 fill it exactly
        assert max(b1 - a0 for (a0, _), (_, b1) in drawn) == 9
    assert recurrent_spec(seed=7, input_size=input_size).subsets == tasks.draw_recurrent_subsets(input_size, 7)


def test_recurrent_batches_in_graph_and_numpy_agree_and_sum_every_step():
    spec = recurrent_spec("mul", seed=2, length=7)
    key = tasks.stream_key(2, tasks.TRAIN_STREAM)
    x_tf, y_tf = tasks.sample_batch_tf(spec, 16, key, tf.constant(3, tf.int64))
    x_np, y_np = tasks.sample_batch_numpy(spec, 16, key, 3)
    assert x_np.shape == (16, 7, 10) and y_np.shape == (16, 1)
    np.testing.assert_array_equal(x_tf.numpy(), x_np)
    np.testing.assert_allclose(y_tf.numpy(), y_np, rtol=1e-6)
    (a0, a1), (b0, b1) = spec.subsets
    x64 = x_np.astype(np.float64)
    a, b = x64[:, :, a0:a1].sum(axis=(1, 2)), x64[:, :, b0:b1].sum(axis=(1, 2))
    np.testing.assert_allclose(y_np[:, 0], a * b, rtol=1e-6)
    assert not np.allclose(y_np[:, 0], x64[:, -1, a0:a1].sum(axis=1) * x64[:, -1, b0:b1].sum(axis=1))


def test_recurrent_batches_for_many_streams_match_one_stream_at_a_time():
    specs = [recurrent_spec("mul", seed=s, length=6) for s in range(3)]
    assert len({s.subsets for s in specs}) > 1
    keys = [tasks.stream_key(s, tasks.TRAIN_STREAM) for s in range(3)]
    x, y = tasks.sample_batches_tf(specs, 16, keys, tf.constant(4, tf.int64))
    assert x.shape == (3, 16, 6, 10) and y.shape == (3, 16, 1)
    for spec, key, x_r, y_r in zip(specs, keys, x.numpy(), y.numpy()):
        x_one, y_one = tasks.sample_batch_numpy(spec, 16, key, 4)
        np.testing.assert_array_equal(x_r, x_one)
        np.testing.assert_allclose(y_r, y_one, rtol=1e-5)
    with pytest.raises(ValueError, match="share op"):  # sequences of another length are another shape
        shorter = recurrent_spec("mul", seed=1, length=5)
        tasks.sample_batches_tf([specs[0], shorter], 16, keys[:2], tf.constant(4, tf.int64))


def test_recurrent_validation_and_test_sets_have_their_lengths_and_targets():
    spec = recurrent_spec("sub", seed=1, length=6, extrapolation_length=13, validation_size=20, test_size=7,
                          interpolation_range=[[-2, -1], [1, 2]])
    x_val, y_val = tasks.validation_set(spec)
    x_test, y_test = tasks.test_set(spec)
    assert (x_val.shape, y_val.shape, x_test.shape, y_test.shape) == ((20, 6, 10), (20, 1), (7, 13, 10), (7, 1))
    for x, y in ((x_val, y_val), (x_test, y_test)):
        assert np.all((np.abs(x) >= 1) & (np.abs(x) <= 2))  # the test range is the interpolation range by default
        np.testing.assert_allclose(y, tasks.targets_numpy(spec, x), rtol=1e-6)
        (a0, a1), (b0, b1) = spec.subsets
        x64 = x.astype(np.float64)
        np.testing.assert_allclose(y[:, 0], x64[:, :, a0:a1].sum(axis=(1, 2)) - x64[:, :, b0:b1].sum(axis=(1, 2)),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tasks.validation_set(spec)[0], x_val)
    assert tasks.TaskSpec.from_dict(spec.to_dict()) == spec


def test_recurrent_formula_sums_every_step():
    spec = recurrent_spec("mul", subsets=[[2, 5], [4, 7]])
    assert spec.formula() == "(sum_t sum(x_t[2:5])) * (sum_t sum(x_t[4:7]))"


def test_recurrent_threshold_simulation_is_the_perturbed_cell_run_step_by_step():
    """The closed form in near_recurrent against h_t = x_t W_x + h_{t-1} W_h run directly (float64)."""
    spec = recurrent_spec("mul", seed=3)
    (a0, a1), (b0, b1) = spec.subsets
    eps, n = thresholds.SUCCESS_EPSILON, spec.input_size
    x = np.random.default_rng(0).uniform(1, 2, (20, 30, n))
    a, b = tasks.slice_sums(spec, x)
    near_a, near_b = thresholds.near_recurrent(x[:, :, a0:a1].sum(axis=2), x[:, :, b0:b1].sum(axis=2), x.sum(axis=2))
    w_x = np.full((n, 2), eps)
    w_x[a0:a1, 0] = w_x[b0:b1, 1] = 1 - eps
    w_h = np.array([[1 - eps, eps], [eps, 1 - eps]])
    h = np.zeros((len(x), 2))
    for t in range(x.shape[1]):
        h = x[:, t] @ w_x + h @ w_h
    # the deviations from the exact a and b (what the threshold measures), not only the values
    np.testing.assert_allclose(near_a - a, h[:, 0] - a, rtol=1e-8)
    np.testing.assert_allclose(near_b - b, h[:, 1] - b, rtol=1e-8)


def test_recurrent_threshold_depends_on_slice_sizes_and_overlap_not_on_placement():
    by_shape = {}
    for seed in range(60):
        spec = recurrent_spec("mul", seed=seed, extrapolation_length=20)
        (a0, a1), (b0, b1) = spec.subsets
        by_shape.setdefault((a1 - a0, b1 - b0, a1 - b0), []).append(spec)
    shape, specs = next((k, v) for k, v in by_shape.items() if len({s.subsets for s in v}) > 1)
    placed = {s.subsets: s for s in specs}
    first, second = list(placed.values())[:2]
    threshold = thresholds.success_threshold(first, samples=1_000)
    assert thresholds.success_threshold(second, samples=1_000) == threshold
    other = next(v[0] for k, v in by_shape.items() if k[:2] != shape[:2])
    assert thresholds.success_threshold(other, samples=1_000) != threshold
