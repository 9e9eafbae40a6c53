import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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


@pytest.fixture(scope="session")
def add_run(tmp_path_factory):
    """A trained a+b run directory, made through the CLI, shared by the tests that read runs."""
    out = tmp_path_factory.mktemp("runs") / "add"
    result = invoke(*ADD_RUN_ARGS, "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    return out


@pytest.fixture(scope="session")
def exported(add_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "add"
    result = invoke("export", add_run, "--out", out, "--format", "keras", "--format", "tflite", "--format", "onnx")
    assert result.exit_code == 0, result.output + result.stderr
    return out
