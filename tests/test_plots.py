"""Pictures: `nalu extrapolate --plot`, `nalu plot RUN` and `nalu benchmark --plot` write real images;
without matplotlib they say how to get it."""

import sys

import numpy as np
import pytest

from nalu_cli import benchmark, plots
from nalu_cli.benchmark import summarize
from tests.conftest import fake_runner, invoke

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


# -- nalu benchmark --plot: the table as a picture ------------------------------------------------------

BENCHMARK = ["benchmark", "--ops", "add,sub", "--units", "nac,nau", "--seeds", "4", "--replicas", "2", "--workers", "1"]
# Which seeds succeed in each cell, so that no two cells draw alike: all, the even ones, none, one.
SOLVED = {("add", "nac"): {0, 1, 2, 3}, ("add", "nau"): {0, 2}, ("sub", "nac"): set(), ("sub", "nau"): {3}}


def varied_runner(work, collect, workers, address):
    """fake_runner, with SOLVED's seeds succeeding, each at its own step."""

    def vary(records):
        for record in records:
            success = record["seed"] in SOLVED[record["op"], record["unit"]]
            step = 1000 * (record["seed"] + 1) + (500 if record["unit"] == "nau" else 0)
            record.update(success=success, solved_at_step=step if success else None,
                          solved_at_seconds=1.0 if success else None, sparsity_error=0.0 if success else None)
        collect(records)

    fake_runner(work, vary, workers, address)


def no_training(work, collect, workers, address):
    raise AssertionError(f"{len(work)} groups were trained")


@pytest.fixture
def finished_benchmark(tmp_path, monkeypatch):
    """A benchmark directory holding every seed of BENCHMARK's grid, made by `nalu benchmark --plot` with a
    fake trainer, the plot inside the directory it makes; from then on, training fails the test."""
    monkeypatch.setitem(benchmark.RUNNERS, "local", varied_runner)
    out = tmp_path / "bench"
    result = invoke(*BENCHMARK, "--out", out, "--plot", out / "success.png")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().endswith(f"plot: {out / 'success.png'}")
    monkeypatch.setitem(benchmark.RUNNERS, "local", no_training)
    return out


def test_benchmark_plot_is_drawn_after_training_and_again_from_the_results_without_training(finished_benchmark,
                                                                                            tmp_path):
    assert_picture(finished_benchmark / "success.png")
    results = (finished_benchmark / "results.jsonl").read_bytes()
    again = tmp_path / "again.png"
    again.write_bytes(b"mine")
    refused = invoke(*BENCHMARK, "--out", finished_benchmark, "--plot", again)
    assert refused.exit_code == 2
    assert refused.stderr.strip() == f"nalu: error: {again} already exists; pass --overwrite to replace it"
    assert again.read_bytes() == b"mine"
    result = invoke(*BENCHMARK, "--out", finished_benchmark, "--plot", again, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().endswith(f"plot: {again}")
    assert_picture(again)
    assert (finished_benchmark / "results.jsonl").read_bytes() == results


def test_benchmark_figure_draws_summarize_rates_intervals_and_solved_steps(tmp_path, monkeypatch):
    plt = plots.require_matplotlib()
    monkeypatch.setitem(benchmark.RUNNERS, "local", varied_runner)
    records = benchmark.run_benchmark(["add", "sub"], ["nac", "nau"], [0, 1, 2, 3], tmp_path / "b", replicas=2)
    rows = {(row["op"], row["unit"]): row for row in summarize(records)}
    assert {cell: row["success_rate"] for cell, row in rows.items()} == {
        ("add", "nac"): 1.0, ("add", "nau"): 0.5, ("sub", "nac"): 0.0, ("sub", "nau"): 0.25}
    figure = plots.benchmark_figure(plt, list(rows.values()), kind="static")
    rates, steps = figure.axes
    assert [tick.get_text() for tick in rates.get_xticklabels()] == ["a+b", "a-b"]
    drawn = {}
    for container in rates.containers:  # one errorbar per unit: its points, and its interval bars
        points, _, (bars,) = container.lines
        for x, rate, segment in zip(points.get_xdata(), points.get_ydata(), bars.get_segments()):
            op = ["add", "sub"][round(x)]
            assert segment[0][0] == segment[1][0] == x
            drawn[op, container.get_label()] = (x - round(x), rate, segment[0][1], segment[1][1])
    assert drawn.keys() == rows.keys()
    for (op, unit), row in rows.items():  # nac left of each op's tick, nau right; the table's rate and interval
        offset = -0.2 if unit == "nac" else 0.2
        assert drawn[op, unit] == pytest.approx((offset, row["success_rate"], row["wilson_low"], row["wilson_high"]))
    solved = {line.get_gid(): list(line.get_ydata()) for line in steps.get_lines() if line.get_gid()}
    assert solved == {f"solved {op} {unit}": row["solved_at_steps"] for (op, unit), row in rows.items()
                      if row["solved_at_steps"]}
    assert solved["solved sub nau"] == [4500]  # and (sub, nac), solved by no seed, draws nothing
    medians = {lines.get_gid(): lines.get_segments()[0][0][1] for lines in steps.collections if lines.get_gid()}
    assert medians == {f"median {op} {unit}": row["median_solved_at_step"] for (op, unit), row in rows.items()
                       if row["solved_at_steps"]}
    assert not [text for text in steps.texts if "no seed" in text.get_text()]
    assert figure.texts[0].get_text() == "nalu benchmark, static task: 4 seeds per op and unit"
    plt.close(figure)

    figure = plots.benchmark_figure(plt, [rows["sub", "nac"]])
    assert [text.get_text() for text in figure.axes[1].texts] == ["no seed was solved"]
    plt.close(figure)


@pytest.mark.parametrize(
    "plot, extra, message",
    [
        ("success.jpg", [], "plot file {tmp}/success.jpg must end in .png, .svg or .pdf"),
        ("missing/success.png", [], "cannot write {tmp}/missing/success.png: directory {tmp}/missing does not exist"),
        ("mine.png", [], "{tmp}/mine.png already exists; pass --overwrite to replace it"),
        (None, ["--overwrite"], "--overwrite replaces a --plot file and needs --plot; a benchmark's results are "
                                "never replaced (use another --out to start afresh)"),
        ("success.png", ["matplotlib missing"], INSTALL_HINT.removeprefix("nalu: error: ")),
    ],
    ids=["format", "no directory", "existing file", "overwrite alone", "no matplotlib"],
)
def test_benchmark_plot_problems_are_one_line_before_any_training(tmp_path, monkeypatch, plot, extra, message):
    monkeypatch.setitem(benchmark.RUNNERS, "local", no_training)
    (tmp_path / "mine.png").write_bytes(b"mine")
    if extra == ["matplotlib missing"]:
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        extra = []
    result = invoke(*BENCHMARK, "--out", tmp_path / "bench", *(["--plot", tmp_path / plot] if plot else []), *extra)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"nalu: error: {message.format(tmp=tmp_path)}"
    assert not (tmp_path / "bench").exists() and (tmp_path / "mine.png").read_bytes() == b"mine"
