import contextlib
import fcntl
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# No XLA cache in ~/.cache from the tests, nor one run's compilations skipped by another's:
# tests/test_xla_cache.py turns it on where it is tested (this holds for the processes tests start).
os.environ["NALU_XLA_CACHE"] = "off"

import pytest
from typer.testing import CliRunner

from nalu_cli._tf import import_tensorflow

import_tensorflow()

from nalu_cli.cli import app  # noqa: E402

# A short a+b run that reaches the Madsen & Johansen success criterion (measured: step ~30k).
ADD_RUN_ARGS = ["train", "--op", "add", "--unit", "nac", "--lr", "0.1", "--steps", "60000", "--seed", "0"]


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Default output paths (runs/...) land in a temporary directory, never in the checkout."""
    monkeypatch.chdir(tmp_path)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def metrics_without_timing(run):
    """A run's metrics.jsonl without the figures no two runs share (seconds, speed)."""
    import json

    return [
        {k: v for k, v in json.loads(line).items() if k not in ("elapsed_seconds", "steps_per_second")}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def weights(run):
    from nalu_cli.export import load_keras_model
    from nalu_cli.model import get_params

    return get_params(load_keras_model(run / "model.keras"))


def assert_same_weights(first, second):
    import numpy as np

    for layer_a, layer_b in zip(weights(first), weights(second)):
        for name in layer_a:
            np.testing.assert_array_equal(layer_a[name], layer_b[name])


@contextlib.contextmanager
def shared_directory(tmp_path_factory, name: str):
    """A directory made once for the whole test run, not once per xdist worker.

    Yields (path, done): if `done` is False the caller makes `path` (it does not exist yet);
    an exception leaves nothing behind. Under xdist the workers share their base directory's
    parent and take turns under a file lock, so the first to ask makes it and the others wait
    for it (both workers made the recurrent run, 26-28 s each under load, and the a+b run, 10-19 s).
    A directory is complete once its marker is written, so a worker killed while making it
    leaves only something the next asker deletes and makes again.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # no xdist: a session fixture is made once anyway
        yield tmp_path_factory.mktemp(name) / name, False
        return
    root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    path, marker = root / name, root / f"{name}.complete"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if marker.exists():
            yield path, True
            return
        shutil.rmtree(path, ignore_errors=True)
        try:
            yield path, False
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        marker.touch()


@pytest.fixture(scope="session")
def add_run(tmp_path_factory):
    """A trained a+b run directory, made through the CLI, shared by the tests that read runs."""
    with shared_directory(tmp_path_factory, "add") as (out, done):
        if not done:
            result = invoke(*ADD_RUN_ARGS, "--out", out)
            assert result.exit_code == 0, result.output + result.stderr
    return out


# A run that trains in about a second (a linear model, three chunks, no early stop): for the tests
# that interrupt a run and compare it with its uninterrupted twin.
QUICK_CONFIG = """\
task: {op: add, input_size: 10, validation_size: 100, test_size: 100}
model: {unit: linear}
training: {steps: 300, eval_every: 100, early_stop: false}
"""


@pytest.fixture
def add_copy(add_run, tmp_path):
    """A copy of `add_run` (a finished run) this test may damage."""
    return Path(shutil.copytree(add_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def exported(add_run, tmp_path_factory):
    with shared_directory(tmp_path_factory, "exported-add") as (out, done):
        if not done:
            result = invoke("export", add_run, "--out", out, "--format", "keras", "--format", "tflite",
                            "--format", "onnx")
            assert result.exit_code == 0, result.output + result.stderr
    return out


# A tiny recurrent a+b run: 250 steps, short test sequences (T=50), small sets; it need not
# solve the task, only exercise every command on a recurrent model (about 10 s).
RECURRENT_RUN_CONFIG = """\
task: {op: add, validation_size: 200, test_size: 100, extrapolation_length: 50}
model: {unit: nau}
training: {steps: 250, eval_every: 125, learning_rate: 0.05}
"""


@pytest.fixture(scope="session")
def recurrent_run(tmp_path_factory):
    """A recurrent run directory made through the CLI (--task recurrent over a --config), shared."""
    with shared_directory(tmp_path_factory, "recurrent-add") as (out, done):
        if not done:
            config = tmp_path_factory.mktemp("config") / "recurrent.yaml"
            config.write_text(RECURRENT_RUN_CONFIG)
            result = invoke("train", "--config", config, "--task", "recurrent", "--seed", "0", "--out", out)
            assert result.exit_code == 0, result.output + result.stderr
    return out


@pytest.fixture(scope="session")
def recurrent_exported(recurrent_run, tmp_path_factory):
    with shared_directory(tmp_path_factory, "exported-recurrent") as (out, done):
        if not done:
            result = invoke("export", recurrent_run, "--out", out, "--format", "keras", "--format", "onnx")
            assert result.exit_code == 0, result.output + result.stderr
    return out


# A benchmark grid for tests of its files: trained by `fake_runner`, which makes one record per
# seed without training (monkeypatch it into nalu_cli.benchmark.RUNNERS["local"]).
GRID = dict(ops=["add"], units=["nac"], seeds=[0, 1, 2, 3], replicas=2, workers=1)


def fake_runner(work, collect, workers, address):
    """Even seeds succeed, solved at step 1,000 x (seed + 1); records carry what `summarize` reads."""
    for item in work:
        collect([{"op": item["op"], "unit": item["unit"], "seed": seed, "settings": item["settings"],
                  "success": seed % 2 == 0, "extrapolation_mse": seed / 10,
                  "solved_at_step": 1000 * (seed + 1) if seed % 2 == 0 else None,
                  "solved_at_seconds": seed + 1.0 if seed % 2 == 0 else None,
                  "sparsity_error": 0.0 if seed % 2 == 0 else None} for seed in item["seeds"]])


def in_process_runner(work, collect, workers, address):
    """The local backend without its worker processes: each group trains here, in turn.

    A spawned worker imports TensorFlow and compiles afresh (5-8 s each); tests of what a
    benchmark computes and writes use this; the process pool keeps its own tests
    (test_cli_benchmark_prints_markdown_and_reports_trask_errors, test_benchmark_workers_exit_when_their_parent_is_killed).
    """
    from nalu_cli.benchmark.worker import run_group

    for item in work:
        collect(run_group(item))


@pytest.fixture
def in_process_workers(monkeypatch):
    from nalu_cli import benchmark

    monkeypatch.setitem(benchmark.RUNNERS, "local", in_process_runner)
