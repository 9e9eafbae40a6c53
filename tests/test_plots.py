"""Pictures: `nalu extrapolate --plot` and `nalu plot RUN` write real images; without matplotlib they say how to get it."""

import sys

import numpy as np
import pytest

from nalu_cli import plots
from tests.conftest import invoke

PIL = pytest.importorskip("PIL.Image")  # comes with matplotlib
INSTALL_HINT = "nalu: error: plotting needs the plot extra: pip install 'nalu-cli[plot]'"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots") / "add"
    result = invoke("train", "--op", "add", "--unit", "nau", "--steps", "3000", "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    return out


def assert_picture(path):
    """A PNG of the fixed figure size with more than a few colours (axes, curves, shading, text)."""
    image = PIL.open(path)
    assert image.format == "PNG"
    assert image.size == (int(plots.FIGURE_SIZE[0] * plots.DPI), int(plots.FIGURE_SIZE[1] * plots.DPI)) == (800, 500)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(np.uint32)
    colours = pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2]  # one number a colour: ~50x faster than axis=0
    assert len(np.unique(colours)) > 50


def test_extrapolate_plot_draws_error_against_input_magnitude(short_run, tmp_path):
    result = invoke("extrapolate", short_run, "--plot", tmp_path / "extrapolation.png")
    assert result.exit_code == 0, result.stderr
    assert f"plot: {tmp_path / 'extrapolation.png'}" in result.stdout
    assert_picture(tmp_path / "extrapolation.png")


def test_extrapolate_json_names_the_plot(short_run, tmp_path):
    import json

    result = invoke("extrapolate", short_run, "--range", "2:6", "--json", "--plot", tmp_path / "e.png")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["plot"] == str(tmp_path / "e.png")
    assert_picture(tmp_path / "e.png")


def test_plot_draws_the_training_curves(short_run, tmp_path):
    result = invoke("plot", short_run, "--out", tmp_path / "curves.png")
    assert result.exit_code == 0, result.stderr
    assert_picture(tmp_path / "curves.png")


def test_plot_writes_into_the_run_by_default(short_run):
    target = short_run / plots.TRAINING_PLOT_FILE
    result = invoke("plot", short_run, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"plot: {target}"
    assert_picture(target)


def test_an_existing_picture_is_kept_without_overwrite(short_run, tmp_path):
    target = tmp_path / "curves.png"
    target.write_bytes(b"mine")
    for args in (("plot", short_run, "--out", target), ("extrapolate", short_run, "--plot", target)):
        result = invoke(*args)
        assert result.exit_code == 2
        assert result.stderr.strip() == f"nalu: error: {target} already exists; pass --overwrite to replace it"
    assert target.read_bytes() == b"mine"
    assert invoke("plot", short_run, "--out", target, "--overwrite").exit_code == 0
    assert_picture(target)


def test_an_unknown_image_format_is_a_one_line_error(short_run, tmp_path):
    result = invoke("plot", short_run, "--out", tmp_path / "curves.jpg")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"nalu: error: plot file {tmp_path / 'curves.jpg'} must end in .png, .svg or .pdf"


def test_plot_of_something_that_is_not_a_run_is_a_one_line_error(tmp_path):
    result = invoke("plot", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"nalu: error: {tmp_path} is not a nalu run directory (no config.yaml and metrics.jsonl)"
    )


@pytest.mark.parametrize("command", ["plot", "extrapolate"])
def test_without_matplotlib_the_plot_options_say_how_to_install_it(short_run, tmp_path, monkeypatch, command):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    args = ("plot", short_run, "--out", tmp_path / "p.png") if command == "plot" else (
        "extrapolate", short_run, "--plot", tmp_path / "p.png"
    )
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.strip() == INSTALL_HINT
    assert not (tmp_path / "p.png").exists()


def test_extrapolate_plot_of_a_recurrent_model_draws_error_against_length(recurrent_run, tmp_path):
    result = invoke("extrapolate", recurrent_run, "--length", "5,10,40", "--samples", "20",
                    "--plot", tmp_path / "t.png")
    assert result.exit_code == 0, result.stderr
    assert f"plot: {tmp_path / 't.png'}" in result.stdout
    assert_picture(tmp_path / "t.png")
