"""nalu benchmark: Wilson intervals, resume after interruption, backends agree, table layouts."""

import json

import pytest

from nalu_cli.benchmark import markdown, parse_seeds, run_benchmark, summarize, trask_table, wilson_interval
from nalu_cli.errors import NaluError
from tests.conftest import invoke

# A small task so a grid trains in seconds; sub with NAC solves within 2,000 steps on some seeds.
SMALL = {"task": {"input_size": 20}, "training": {"steps": 2000, "eval_every": 500, "learning_rate": 0.1}}


def comparable(records):
    """Everything but wall-clock seconds, which no two runs share."""
    return sorted(
        ({k: v for k, v in r.items() if k != "solved_at_seconds"} for r in records), key=lambda r: (r["unit"], r["seed"])
    )


@pytest.mark.parametrize(
    "successes, trials, low, high",
    [(0, 4, 0.0, 0.4899), (4, 4, 0.5101, 1.0), (5, 10, 0.2366, 0.7634), (98, 100, 0.9300, 0.9945), (0, 10, 0.0, 0.2775)],
)
def test_wilson_interval_matches_known_values(successes, trials, low, high):
    lo, hi = wilson_interval(successes, trials)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_seed_specs():
    assert parse_seeds("4") == [0, 1, 2, 3]
    assert parse_seeds("10:13") == [10, 11, 12]
    assert parse_seeds("3,5") == [3, 5]
    with pytest.raises(NaluError):
        parse_seeds("x")


def test_interrupted_benchmark_resumes_only_missing_seeds_with_identical_results(tmp_path, in_process_workers):
    grid = dict(ops=["sub"], units=["nac"], seeds=[0, 1, 2, 3], base_settings=SMALL, replicas=2, workers=1)
    seen = []

    def interrupt_after_first_group(records):
        seen.extend(records)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(out=tmp_path / "resumed", on_results=interrupt_after_first_group, **grid)
    lines = (tmp_path / "resumed" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and {json.loads(line)["seed"] for line in lines} == {r["seed"] for r in seen}

    trained = []
    resumed = run_benchmark(out=tmp_path / "resumed", on_results=trained.append, **grid)
    fresh_seeds = {r["seed"] for batch in trained[1:] for r in batch}  # batch 0 replays the finished seeds
    assert fresh_seeds == {0, 1, 2, 3} - {r["seed"] for r in seen}
    assert len((tmp_path / "resumed" / "results.jsonl").read_text().splitlines()) == 4

    uninterrupted = run_benchmark(out=tmp_path / "whole", **grid)
    assert comparable(resumed) == comparable(uninterrupted)


ONE_SEED = dict(ops=["sub"], units=["nac"], seeds=[0], base_settings=SMALL, workers=1)


@pytest.fixture(scope="module")
def one_seed_results(tmp_path_factory):
    """A finished one-seed benchmark directory (trained once, in this process, for the module)."""
    from nalu_cli import benchmark
    from tests.conftest import in_process_runner

    out = tmp_path_factory.mktemp("benchmark") / "one_seed"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(benchmark.RUNNERS, "local", in_process_runner)
        run_benchmark(out=out, **ONE_SEED)
    return out


@pytest.fixture
def finished(one_seed_results, tmp_path):
    """A copy of `one_seed_results` this test may change."""
    import shutil

    return shutil.copytree(one_seed_results, tmp_path / "finished")


def test_a_worker_trains_its_next_group_of_a_cell_on_the_graphs_of_the_last(tmp_path, in_process_workers, monkeypatch):
    """A worker keeps the graphs of its last group's cell: the next group of that cell reuses
    them (no tracing, no XLA compilation) and trains exactly as on graphs of its own; another
    cell starts afresh, so a worker never holds more than one cell's graphs."""
    from nalu_cli.benchmark import worker
    from nalu_cli.training.architecture import Graphs

    made, make = [], Graphs.get_or_make

    def counting(graphs, key, build):
        return make(graphs, key, lambda: made.append(key[0]) or build())

    monkeypatch.setattr(Graphs, "get_or_make", counting)
    monkeypatch.setattr(worker, "_graphs", (None, None))
    grid = dict(ops=["sub", "add"], units=["nac"], seeds=[0, 1, 2, 3], base_settings=SMALL, replicas=2, workers=1)
    reused = run_benchmark(out=tmp_path / "reused", **grid)
    assert made == ["chunk", "scores"] * 2  # sub's first group, add's first group
    assert worker._graphs[0][0] == "add" and len(worker._graphs[1]) == 2

    run_group = worker.run_group

    def on_fresh_graphs(item, threads=1):  # as if every group ran in a worker of its own
        worker._graphs = (None, None)
        return run_group(item, threads)

    monkeypatch.setattr(worker, "run_group", on_fresh_graphs)  # the in-process runner imports it per call
    made.clear()
    alone = run_benchmark(out=tmp_path / "alone", **grid)
    assert made == ["chunk", "scores"] * 4
    assert comparable(reused) == comparable(alone)


def test_results_of_other_settings_are_not_mixed(finished):
    with pytest.raises(NaluError, match="other settings"):
        run_benchmark(out=finished, **{**ONE_SEED, "steps": 1000})


def test_results_of_another_nalu_version_are_not_resumed(finished, monkeypatch):
    """A nalu that trains differently must not pass off an older version's results as its own."""
    import nalu_cli

    monkeypatch.setattr(nalu_cli, "__version__", nalu_cli.__version__ + ".post1")
    with pytest.raises(NaluError, match="other settings"):
        run_benchmark(out=finished, **ONE_SEED)


def test_ray_backend_matches_local_backend(tmp_path, monkeypatch):
    """Ray's workers compute what the local backend's do. The local backend runs in this process
    here (both call `run_group` on the same work items; the CLI test below runs its process pool);
    Ray runs as a user runs it, `nalu benchmark --backend ray` in a process of its own: under
    pytest's output capture Ray took 105-179 s here against 20 s without."""
    import subprocess
    import sys

    from nalu_cli import benchmark
    from tests.conftest import in_process_runner

    pytest.importorskip("ray")
    # Two groups of seeds ([0, 1] and [2]), the second smaller than --replicas; one Ray worker runs
    # both (a second would import TensorFlow again beside the suite's other workers).
    grid = dict(ops=["sub"], units=["nau"], seeds=[0, 1, 2], base_settings=SMALL, replicas=2)
    with monkeypatch.context() as patch:
        patch.setitem(benchmark.RUNNERS, "local", in_process_runner)
        local = run_benchmark(out=tmp_path / "local", backend="local", workers=2, **grid)
    config = tmp_path / "small.yaml"
    config.write_text(json.dumps(SMALL))
    command = [sys.executable, "-m", "nalu_cli", "benchmark", "--ops", "sub", "--units", "nau", "--seeds", "3",
               "--replicas", "2", "--config", str(config), "--backend", "ray", "--workers", "1",
               "--out", str(tmp_path / "ray")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    remote = [json.loads(line) for line in (tmp_path / "ray" / "results.jsonl").read_text().splitlines()]
    assert len(local) == 3
    assert comparable(remote) == comparable(local)


def test_a_ray_cluster_started_here_runs_its_workers_at_nice_0():
    """Ray's default worker niceness, 15, starves them beside any busy process (README, "Stopped,
    killed, or a Ray node lost"); a cluster nalu starts runs them as the local backend does."""
    from nalu_cli.benchmark.runners import init_ray

    class Ray:
        def __init__(self):
            self.calls = []

        def init(self, **kwargs):
            self.calls.append(kwargs)

    ray = Ray()
    init_ray(ray, 2, None)
    (started,) = ray.calls
    assert started["num_cpus"] == 2 and started["_system_config"] == {"worker_niceness": 0}


def test_a_ray_address_where_no_cluster_answers_is_one_line_at_once(tmp_path):
    """ray.init retries such an address for minutes (measured: over 200 s), printing warnings."""
    pytest.importorskip("ray")
    result = invoke("benchmark", "--ops", "add", "--units", "nac", "--seeds", "1", "--backend", "ray",
                    "--ray-address", "127.0.0.1:1", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith("nalu: error: cannot reach a Ray cluster at 127.0.0.1:1")
    assert len(result.stderr.splitlines()) == 1


def test_trask_layout_has_normalized_errors_per_op_and_unit():
    records = [
        {"op": op, "unit": unit, "seed": 0, "success": False, "solved_at_step": None, "solved_at_seconds": None,
         "sparsity_error": 0.1, "extrapolation_mse": 1.0, "normalized_interpolation": ni, "normalized_extrapolation": ne}
        for op, unit, ni, ne in [("add", "nac", 0.0, 0.1), ("add", "nalu", 0.5, 20.0), ("mul", "nac", 40.0, 33.3),
                                 ("mul", "nalu", 1.0, 2.4728877342789281e22)]
    ]
    header, body = trask_table(summarize(records))
    assert header == ["split", "op", "nac", "nalu"]
    assert body == [
        ["interpolation", "a+b", "0.0", "0.5"],
        ["interpolation", "a*b", "40.0", "1.0"],
        ["extrapolation", "a+b", "0.1", "20.0"],
        ["extrapolation", "a*b", "33.3", "2.5e+22"],  # a runaway error, not 23 digits
    ]
    assert markdown(header, body).splitlines()[1] == "|---|---|---|---|"


def test_cli_benchmark_prints_markdown_and_reports_trask_errors(tmp_path):
    """End to end, with the local backend's worker process."""
    config = tmp_path / "small.yaml"
    config.write_text(json.dumps(SMALL))
    result = invoke(
        "benchmark", "--ops", "sub", "--units", "nac", "--seeds", "2", "--config", config, "--out", tmp_path / "b",
        "--protocol", "trask", "--markdown", "--workers", "1",
    )
    assert result.exit_code == 0, result.stderr
    assert "| split | op | nac |" in result.stdout
    assert "| extrapolation | a-b |" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert all(r["normalized_extrapolation"] is not None and r["normalized_extrapolation"] >= 0 for r in records)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ops", "pow"], "unknown op 'pow' in --ops"),
        (["--units", "abc"], "unknown unit 'abc'"),
        (["--seeds", "x"], "--seeds must be"),
        (["--backend", "spark"], "Invalid value for '--backend'"),
    ],
)
def test_cli_benchmark_bad_input(tmp_path, args, message):
    result = invoke("benchmark", "--out", tmp_path / "b", *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_second_benchmark_on_the_same_out_is_refused(finished):
    from nalu_cli.rundir import run_lock

    with run_lock(finished):  # as if another nalu benchmark were writing here
        with pytest.raises(NaluError, match="being written by another nalu process"):
            run_benchmark(out=finished, **{**ONE_SEED, "seeds": [0, 1]})
    assert len((finished / "results.jsonl").read_text().splitlines()) == 1


def test_a_benchmark_seed_and_nalu_train_write_the_same_result_record(tmp_path):
    """One record, two writers: a seed's line in results.jsonl carries the fields of summary.json
    under the same names, with the same values, for the same config and seed."""
    from nalu_cli.benchmark import run_group
    from nalu_cli.config import resolve
    from nalu_cli.training import train

    config = resolve({**SMALL, "task": {**SMALL["task"], "op": "sub"}, "model": {"unit": "nac"}, "seed": 1})
    summary = train(config, tmp_path / "run")
    (record,) = run_group({"op": "sub", "unit": "nac", "seeds": (1,), "config": config.to_dict(), "settings": "k",
                           "protocol": "mj"})
    shared = set(summary) & set(record)
    assert {"success", "success_threshold", "selected_step", "interpolation_mse", "extrapolation_mse",
            "solved_at_step", "sparsity_error", "steps_trained", "divergence_events", "chosen_restart"} <= shared
    assert {key: summary[key] for key in shared - {"solved_at_seconds"}} == {
        key: record[key] for key in shared - {"solved_at_seconds"}}


def test_the_default_model_and_its_architecture_with_one_restart_are_distinct_cells():
    """`--units default,nau-gated`: the default model is nau-gated with restarts; the two must
    never share result lines (they were both named nau-gated, and one cell's seeds were dropped)."""
    from nalu_cli.benchmark import make_cells, plan

    cells = make_cells(["sub"], ["default", "nau-gated", "default"], {}, steps=None)
    assert [cell.unit for cell in cells] == ["default", "nau-gated"]
    assert cells[0].config["model"] != cells[1].config["model"]
    work = plan(cells, seeds=[0], replicas=1, key="k", protocol="mj", done={("sub", "nau-gated", 0)})
    assert [(item["unit"], item["seeds"]) for item in work] == [("default", (0,))]


ORPHAN_SCRIPT = """
import os, sys, time
from nalu_cli.benchmark.runners import worker_pool

if __name__ == "__main__":
    pool = worker_pool(1)
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 60)
    time.sleep(60)
"""


def test_benchmark_workers_exit_when_their_parent_is_killed(tmp_path):
    """kill -9 of `nalu benchmark` (the OOM killer, a scheduler) runs no cleanup: its workers
    must notice and exit rather than sit idle for good, each holding TensorFlow's memory."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT)
    # stderr: the killed parent's resource tracker reports its leaked semaphores there.
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                return handle.read().split(") ")[1][0] != "Z"  # a zombie has exited
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)


def test_benchmark_task_recurrent_trains_the_recurrent_task(tmp_path, in_process_workers):
    """--task recurrent reaches every cell's config; the Trask protocol's random baseline runs recurrent models."""
    from nalu_cli import tasks, thresholds
    from nalu_cli.config import resolve

    config = tmp_path / "small.yaml"
    config.write_text("task: {validation_size: 100, test_size: 20, extrapolation_length: 20}\n"
                      "training: {eval_every: 100}\n")
    out = tmp_path / "recurrent"
    result = invoke("benchmark", "--task", "recurrent", "--ops", "add", "--units", "nau", "--seeds", "2",
                    "--steps", "100", "--config", config, "--workers", "1", "--protocol", "trask", "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records) == [0, 1]
    for record in records:
        task = resolve({"task": {"kind": "recurrent", "op": "add", "test_size": 20, "extrapolation_length": 20}}).task
        spec = tasks.TaskSpec.from_config(task, record["seed"])
        assert record["success_threshold"] == pytest.approx(thresholds.success_threshold(spec, length=20), rel=1e-6)
        assert record["normalized_extrapolation"] is not None
