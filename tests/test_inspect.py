"""nalu inspect: reading the learned formula from hand-set weights, and snapping it to exact arithmetic."""

import json

import numpy as np
import pytest

from nalu_cli import config, config_files, export, inspection, tasks
from nalu_cli.errors import NaluError
from nalu_cli.inspection.loading import _weight_key, load
from nalu_cli.model import build_model, set_params
from nalu_cli.rundir import CONFIG_FILE, KERAS_FILE, METRICS_FILE, SAVED_MODEL_DIR, atomic_write_text
from tests.conftest import invoke

A_SLICE, B_SLICE = (3, 28), (16, 41)
A = np.zeros(100, np.float32)
A[slice(*A_SLICE)] = 1
B = np.zeros(100, np.float32)
B[slice(*B_SLICE)] = 1


def column(*values):
    return np.array(values, np.float32).reshape(-1, 1)


def hidden(*forms):
    return {"w": np.stack(forms, axis=1).astype(np.float32)}


# The recurrent task: x_t of 10 numbers, a = sum_t sum(x_t[2:5]), b = sum_t sum(x_t[4:7]).
RECURRENT_SLICES = ((2, 5), (4, 7))
RECURRENT_INPUT = 10


def cell(*slices, recurrence=None, initial=None):
    """An NAU cell's weights: W = [[slice masks], [recurrence (default the identity: an accumulator)]]."""
    units = len(slices)
    w = np.zeros((RECURRENT_INPUT + units, units))
    for j, (lo, hi) in enumerate(slices):
        w[lo:hi, j] = 1
    w[RECURRENT_INPUT:] = np.eye(units) if recurrence is None else recurrence
    return {"w": w, "initial_state": np.zeros(units) if initial is None else np.asarray(initial, np.float64)}


# op, layers, layer parameters, the expression `nalu inspect` prints
SOLVED = {
    "add": ("add", ["nau", "nau"], [hidden(A, B), {"w": column(1, 1)}], "y = sum(x[3:28]) + sum(x[16:41])"),
    "sub": ("sub", ["nau", "nau"], [hidden(A, B), {"w": column(1, -1)}], "y = sum(x[3:28]) - sum(x[16:41])"),
    "mul": ("mul", ["nau", "nmu"], [hidden(A, B), {"w": column(1, 1)}], "y = sum(x[3:28]) * sum(x[16:41])"),
    "square": ("square", ["nau", "nmu"], [hidden(A, A), {"w": column(1, 1)}], "y = sum(x[3:28])^2"),
    "div-nmru": (
        "div", ["nau", "nmru"], [hidden(A, B), {"w": column(1, 0, 0, 1)}], "y = sum(x[3:28]) / sum(x[16:41])"
    ),
    "div-realnpu": (
        "div",
        ["nau", "realnpu"],
        [hidden(A, B), {"w_real": column(1, -1), "g": np.ones(2, np.float32)}],
        "y = sum(x[3:28]) / sum(x[16:41])",
    ),
    "sqrt": (
        "sqrt",
        ["nau", "realnpu"],
        [hidden(A, B), {"w_real": column(0.5, 0), "g": np.array([1, 0], np.float32)}],
        "y = sqrt(sum(x[3:28]))",
    ),
}


def make_model(op, layers, params, kind="static"):
    slices = [list(A_SLICE), list(B_SLICE)] if kind == "static" else [list(s) for s in RECURRENT_SLICES]
    cfg = config.resolve({"task": {"op": op, "kind": kind, "subsets": slices}, "model": {"layers": layers}})
    spec = tasks.TaskSpec.from_config(cfg.task, seed=0)
    model = build_model(cfg.model, spec.input_size, seed=0, kind=kind)
    set_params(model, params)
    return cfg, spec, model


def saved_model(tmp_path, op, layers, params, name="model", kind="static"):
    """A bare SavedModel carrying its task spec, as `nalu export` writes."""
    cfg, spec, model = make_model(op, layers, params, kind)
    path = tmp_path / name
    export.write_saved_model(model, export.make_meta(spec.to_dict(), cfg.to_dict()["model"]), path)
    return path


def run_dir(tmp_path, op, layers, params, name="run", kind="static"):
    """A run directory as `nalu train` writes it (config, metrics, model.keras, saved_model/)."""
    cfg, spec, model = make_model(op, layers, params, kind)
    path = tmp_path / name
    path.mkdir()
    atomic_write_text(path / CONFIG_FILE, config_files.dump_yaml(cfg))
    (path / METRICS_FILE).write_text("")
    model.save(str(path / KERAS_FILE))
    export.write_saved_model(model, export.make_meta(spec.to_dict(), cfg.to_dict()["model"]), path / SAVED_MODEL_DIR)
    return path


def perturbed(params, amount=0.01):
    """Every weight off its exact value by `amount`: inwards for clipped weights (1 -> 0.99, 0 -> 0.01),
    upwards for RealNPU's unclipped powers."""
    def move(name, value):
        if name == "w_real":
            return value + amount
        return np.where(value > 0.5, value - amount, value + amount).astype(np.float32)

    return [{name: move(name, value) for name, value in layer.items()} for layer in params]


@pytest.mark.parametrize("case", list(SOLVED))
def test_hand_set_weights_read_as_the_task_formula(tmp_path, case):
    op, layers, params, expression = SOLVED[case]
    report = inspection.inspect(saved_model(tmp_path, op, layers, params))
    assert report["expression"] == expression
    assert report["matches"] is True
    assert report["deviating_weights"] == []
    assert report["snappable"] is True


def test_a_sum_split_across_hidden_units_matches_and_simplifies(tmp_path):
    # As trained NAUs often end up: the elements in one slice only are shared out between the
    # hidden units (even ones to the first, odd ones to the second); both hold the overlap.
    overlap = A * B
    alone = A + B - 2 * overlap
    even = (np.arange(100) % 2 == 0).astype(np.float32)
    first, second = overlap + alone * even, overlap + alone * (1 - even)
    report = inspection.inspect(saved_model(tmp_path, "add", ["nau", "nau"], [hidden(first, second), {"w": column(1, 1)}]))
    assert report["matches"] is True
    assert report["simplified"] == "y = sum(x[3:16]) + 2*sum(x[16:28]) + sum(x[28:41])"
    assert report["expression"] != report["simplified"]


def test_a_run_directory_is_read_from_its_keras_model(tmp_path):
    op, layers, params, expression = SOLVED["mul"]
    report = inspection.inspect(run_dir(tmp_path, op, layers, params))
    assert report["expression"] == expression and report["matches"] is True
    assert report["model"] == {"units": ["nau", "nmu"], "hidden_size": 2}


def test_product_matches_in_either_order_and_with_both_factors_negated(tmp_path):
    report = inspection.inspect(saved_model(tmp_path, "mul", ["nau", "nmu"], [hidden(-B, -A), {"w": column(1, 1)}]))
    assert report["expression"] == "y = (-sum(x[16:41])) * (-sum(x[3:28]))"
    assert report["matches"] is True


def test_subtraction_in_the_wrong_order_does_not_match(tmp_path):
    report = inspection.inspect(saved_model(tmp_path, "sub", ["nau", "nau"], [hidden(A, B), {"w": column(-1, 1)}]))
    assert report["expression"] == "y = -sum(x[3:28]) + sum(x[16:41])"
    assert report["matches"] is False


def test_wrong_slices_do_not_match(tmp_path):
    wrong = np.zeros(100, np.float32)
    wrong[50:75] = 1
    report = inspection.inspect(saved_model(tmp_path, "mul", ["nau", "nmu"], [hidden(wrong, B), {"w": column(1, 1)}]))
    assert report["expression"] == "y = sum(x[50:75]) * sum(x[16:41])"
    assert report["true_expression"] == "y = sum(x[3:28]) * sum(x[16:41])"
    assert report["matches"] is False


def test_a_product_of_the_right_slices_is_not_their_sum(tmp_path):
    op, layers, params, _ = SOLVED["mul"]
    report = inspection.inspect(saved_model(tmp_path, "add", layers, params))
    assert report["matches"] is False


def test_weights_off_their_exact_values_are_listed_largest_first(tmp_path):
    params = [hidden(A, B), {"w": column(1, 1)}]
    params[0]["w"][3, 0] = 0.99  # on the a slice
    params[0]["w"][60, 1] = -0.02  # off both slices
    report = inspection.inspect(saved_model(tmp_path, "add", ["nau", "nau"], params))
    assert report["matches"] is True  # rounding still reads the right formula
    assert [(row["layer"], row["weight"], row["exact"]) for row in report["deviating_weights"]] == [
        ("layer_1", "w[60, 1]", 0.0),
        ("layer_1", "w[3, 0]", 1.0),
    ]
    assert report["deviating_weights"][0]["value"] == pytest.approx(-0.02)
    assert report["sparsity_error"] == pytest.approx(0.02)
    assert report["weights_total"] == 202


def test_tolerance_decides_what_counts_as_deviating(tmp_path):
    params = perturbed(SOLVED["add"][2], amount=0.001)
    path = saved_model(tmp_path, "add", ["nau", "nau"], params)
    assert len(inspection.inspect(path, tolerance=1e-4)["deviating_weights"]) == 202
    assert inspection.inspect(path, tolerance=0.01)["deviating_weights"] == []


@pytest.mark.parametrize("case", list(SOLVED))
def test_snapping_a_nearly_right_model_is_exact_far_outside_the_training_range(tmp_path, case):
    op, layers, params, expression = SOLVED[case]
    result = inspection.snap(saved_model(tmp_path, op, layers, perturbed(params)), tmp_path / "snapped")
    assert result["accepted"] and result["saved"]
    assert result["interpolation_mse_after"] < result["interpolation_mse_before"]
    far = result["far"]
    assert far["factor"] == 1e6
    assert far["relative_error_after"] <= inspection.FLOAT_PRECISION < far["relative_error_before"]
    assert far["exact"] is True
    again = inspection.inspect(tmp_path / "snapped")
    assert again["expression"] == expression and again["matches"] is True
    assert again["deviating_weights"] == [] and again["sparsity_error"] in (0.0, 0.5)  # sqrt's power is 0.5


def test_snapped_model_is_saved_as_saved_model_and_keras(tmp_path):
    op, layers, params, _ = SOLVED["mul"]
    result = inspection.snap(run_dir(tmp_path, op, layers, perturbed(params)), tmp_path / "snapped")
    out = tmp_path / "snapped"
    assert result["files"] == {"savedmodel": str(out), "keras": str(out / KERAS_FILE)}
    meta = json.loads((out / "assets.extra" / "nalu.json").read_text())
    assert meta["task"]["op"] == "mul" and meta["snapped_from"] == str(tmp_path / "run")
    keras_model = export.load_keras_model(out / KERAS_FILE)
    x, y = tasks.validation_set(tasks.TaskSpec.from_dict(meta["task"]))
    np.testing.assert_allclose(np.asarray(keras_model(x)), export.SavedModelPredictor(out)(x), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(keras_model(x)), y, rtol=1e-5)


def test_snapping_that_makes_the_error_grow_saves_nothing(tmp_path):
    # 0.4 on the right slices: y = 0.16 a b is closer to a b than the 0 that rounding gives.
    path = saved_model(tmp_path, "mul", ["nau", "nmu"], [hidden(0.4 * A, 0.4 * B), {"w": column(1, 1)}])
    result = inspection.snap(path, tmp_path / "snapped")
    assert result["accepted"] is False and result["saved"] is False
    assert result["interpolation_mse_after"] > result["interpolation_mse_before"]
    assert not (tmp_path / "snapped").exists()


def test_cli_says_a_rejected_snap_saved_nothing_with_exit_code_1(tmp_path):
    path = saved_model(tmp_path, "mul", ["nau", "nmu"], [hidden(0.4 * A, 0.4 * B), {"w": column(1, 1)}])
    result = invoke("inspect", path, "--snap", "--out", tmp_path / "snapped")
    assert result.exit_code == 1
    assert "WORSE: rejected" in result.stdout
    assert result.stderr.strip() == "snapping made the interpolation error worse; nothing saved"
    assert not (tmp_path / "snapped").exists()


def test_snap_refuses_an_existing_output_without_overwrite(tmp_path):
    op, layers, params, _ = SOLVED["add"]
    path = saved_model(tmp_path, op, layers, params)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = invoke("inspect", path, "--snap", "--out", tmp_path / "taken")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"nalu: error: {tmp_path / 'taken'} already exists; pass --overwrite to replace it"
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_snap_overwrites_its_own_output_with_overwrite(tmp_path):
    op, layers, params, _ = SOLVED["add"]
    path = saved_model(tmp_path, op, layers, perturbed(params))
    inspection.snap(path, tmp_path / "snapped")
    assert inspection.snap(path, tmp_path / "snapped", overwrite=True)["saved"] is True


def test_snap_without_out_is_a_one_line_error(tmp_path):
    result = invoke("inspect", tmp_path, "--snap")
    assert result.exit_code == 2
    assert result.stderr.strip() == "nalu: error: --snap needs --out DIR for the snapped model"


def test_inspect_of_a_missing_path_is_a_one_line_error(tmp_path):
    result = invoke("inspect", tmp_path / "nothing")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"nalu: error: no such file or directory: {tmp_path / 'nothing'}"


def test_cli_prints_the_reading_and_json_for_scripts(tmp_path):
    op, layers, params, expression = SOLVED["div-nmru"]
    path = saved_model(tmp_path, op, layers, params)
    text = invoke("inspect", path)
    assert text.exit_code == 0, text.stderr
    assert f"learned:  {expression}" in text.stdout and "matches:  yes" in text.stdout
    report = json.loads(invoke("inspect", path, "--json").stdout)
    assert report["expression"] == expression and report["matches"] is True


def test_nac_snaps_exactly_by_saturating_tanh_and_sigmoid(tmp_path):
    params = [
        {"w_hat": 3.0 * np.stack([A, -B], 1), "m_hat": np.full((100, 2), 4.0, np.float32)},
        {"w_hat": column(3, 3), "m_hat": column(4, 4)},
    ]
    path = saved_model(tmp_path, "sub", ["nac", "nac"], params)
    assert inspection.inspect(path)["expression"] == "y = sum(x[3:28]) - sum(x[16:41])"
    result = inspection.snap(path, tmp_path / "snapped")
    assert result["saved"] and result["far"]["exact"]
    assert inspection.inspect(tmp_path / "snapped")["deviating_weights"] == []


def test_nalu_reads_its_gate_but_cannot_snap(tmp_path):
    w_hat = 20.0 * np.stack([A, B], 1)
    layer_1 = {"w_hat": w_hat, "m_hat": np.full((100, 2), 20.0, np.float32), "g": np.full((100, 2), 0.1, np.float32)}
    # Second layer gate closed (sigmoid(x G) ~ 0 for positive x): the multiplicative path.
    layer_2 = {"w_hat": column(20, 20), "m_hat": column(20, 20), "g": column(-1, -1)}
    path = saved_model(tmp_path, "mul", ["nalu", "nalu"], [layer_1, layer_2])
    report = inspection.inspect(path)
    assert report["expression"] == "y = sum(x[3:28]) * sum(x[16:41])" and report["matches"] is True
    assert [o["path"] for o in report["layers"][0]["outputs"]] == ["sum", "sum"]
    assert report["layers"][1]["outputs"][0]["path"] == "product"
    assert report["snappable"] is False and report["cannot_snap"].startswith("layer_1 (nalu): its gate")
    with pytest.raises(NaluError, match=r"^cannot snap layer_1 \(nalu\): its gate sigmoid\(x G\) depends on the input"):
        inspection.snap(path, tmp_path / "snapped")
    assert not (tmp_path / "snapped").exists()


def test_relu_has_no_reading(tmp_path):
    cfg, spec, model = make_model("add", ["relu", "relu"], [])
    path = tmp_path / "relu"
    export.write_saved_model(model, export.make_meta(spec.to_dict(), cfg.to_dict()["model"]), path)
    report = inspection.inspect(path)
    assert report["expression"] is None and report["matches"] is False
    assert report["unreadable"] == "layer_1 (relu) has no exact reading"


def inalu_params(w_add, w_mul, gate_logits):
    """iNALU parameters whose weights are near w_add / w_mul (tanh(3) * sigmoid(4) = 0.977)."""
    return {
        "w_hat_add": 3.0 * w_add,
        "m_hat_add": np.full_like(w_add, 4.0),
        "w_hat_mul": 3.0 * w_mul,
        "m_hat_mul": np.full_like(w_mul, 4.0),
        "g": np.asarray(gate_logits, np.float32),
    }


def test_inalu_gates_are_listed_and_snap_but_its_capped_product_is_not_exact_far_out(tmp_path):
    first = np.stack([A, B], 1)
    layer_1 = inalu_params(first, np.zeros_like(first), [3.0, 3.0])  # gates sigmoid(3) = 0.95: the sum path
    layer_2 = inalu_params(np.zeros((2, 1), np.float32), np.ones((2, 1), np.float32), [-3.0])  # the product
    path = saved_model(tmp_path, "mul", ["inalu", "inalu"], [layer_1, layer_2])
    report = inspection.inspect(path)
    assert report["expression"] == "y = sum(x[3:28]) * sum(x[16:41])" and report["matches"] is True
    gates = [row for row in report["deviating_weights"] if row["weight"].startswith("gate")]
    assert sorted((row["layer"], row["weight"], row["exact"]) for row in gates) == [
        ("layer_1", "gate[0]", 1.0),
        ("layer_1", "gate[1]", 1.0),
        ("layer_2", "gate[0]", 0.0),
    ]
    result = inspection.snap(path, tmp_path / "snapped")
    assert result["saved"] and result["interpolation_mse_after"] < 1e-6
    # Its product path is exp(min(log|x| W, omega = 20)): capped at 4.9e8, far below a*b at 10^6x.
    assert result["far"]["exact"] is False and result["far"]["relative_error_after"] > 0.9
    assert inspection.inspect(tmp_path / "snapped")["deviating_weights"] == []


# -- recurrent models -------------------------------------------------------------------------------


def strict_json(text):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))


RECURRENT_SOLVED = {
    "mul": (["nau", "nmu"], "y = (sum_t sum(x_t[2:5])) * (sum_t sum(x_t[4:7]))"),
    "add": (["nau", "nau"], "y = (sum_t sum(x_t[2:5])) + (sum_t sum(x_t[4:7]))"),
}


@pytest.mark.parametrize("op", list(RECURRENT_SOLVED))
def test_an_exact_accumulator_reads_as_sums_over_the_steps(tmp_path, op):
    layers, expression = RECURRENT_SOLVED[op]
    params = [cell(*RECURRENT_SLICES), {"w": np.ones((2, 1))}]
    report = inspection.inspect(run_dir(tmp_path, op, layers, params, kind="recurrent"))
    assert report["expression"] == expression == report["true_expression"]
    assert report["matches"] is True and report["unreadable"] is None
    first = report["layers"][0]
    assert first["recurrent"] is True and first["accumulates"] is True
    assert [o["step"] for o in first["outputs"]] == [
        "h_t[0] = sum(x_t[2:5]) + h_{t-1}[0]",
        "h_t[1] = sum(x_t[4:7]) + h_{t-1}[1]",
    ]
    assert [o["expression"] for o in first["outputs"]] == ["sum_t sum(x_t[2:5])", "sum_t sum(x_t[4:7])"]
    assert [o["initial_state"] for o in first["outputs"]] == [0.0, 0.0]
    assert report["deviating_weights"] == [] and report["snappable"] is True
    assert report["weights_total"] == 24 + 2 + 2  # W, the initial state, the output layer


def test_a_recurrent_reading_is_over_the_steps_totals_not_the_static_inputs(tmp_path):
    params = [cell(*RECURRENT_SLICES), {"w": np.ones((2, 1))}]
    _, recurrent_spec, _ = make_model("mul", ["nau", "nmu"], params, kind="recurrent")
    static_spec = tasks.TaskSpec(**{**recurrent_spec.to_dict(), "kind": "static", "length": None,
                                    "extrapolation_length": None})
    assert inspection.true_canon(recurrent_spec) != inspection.true_canon(static_spec)
    wrong = [cell((2, 5), (5, 8)), {"w": np.ones((2, 1))}]
    report = inspection.inspect(saved_model(tmp_path, "mul", ["nau", "nmu"], wrong, kind="recurrent"))
    assert report["expression"] == "y = (sum_t sum(x_t[2:5])) * (sum_t sum(x_t[5:8]))"
    assert report["matches"] is False


def test_a_split_accumulator_simplifies_to_one_sum_over_the_steps(tmp_path):
    # a + b, with x_t[4] (in both slices) counted by both hidden units.
    report = inspection.inspect(
        saved_model(tmp_path, "add", ["nau", "nau"], [cell((2, 5), (4, 7)), {"w": np.ones((2, 1))}], kind="recurrent")
    )
    assert report["matches"] is True
    assert report["simplified"] == "y = sum_t (sum(x_t[2:4]) + 2*x_t[4] + sum(x_t[5:7]))"


def test_a_recurrence_that_does_not_accumulate_has_no_closed_form(tmp_path):
    params = [cell(*RECURRENT_SLICES, recurrence=[[1, 1], [0, 1]], initial=[0, 2]), {"w": np.ones((2, 1))}]
    path = saved_model(tmp_path, "mul", ["nau", "nmu"], params, kind="recurrent")
    report = inspection.inspect(path)
    assert report["expression"] is None and report["simplified"] is None and report["matches"] is False
    assert report["unreadable"] == (
        "layer_1 (nau) is no exact accumulator (h_t[1] reads h_{t-1} by [1, 1], not by the identity; "
        "h_0[1] = 2, not 0): the recurrence has no closed form"
    )
    first, second = report["layers"]
    assert first["accumulates"] is False
    assert [o["step"] for o in first["outputs"]] == [
        "h_t[0] = sum(x_t[2:5]) + h_{t-1}[0]",
        "h_t[1] = sum(x_t[4:7]) + sum(h_{t-1}[0:2])",
    ]
    assert [o["initial_state"] for o in first["outputs"]] == [0.0, 2.0]
    assert [o["expression"] for o in first["outputs"]] == [None, None]
    assert second["outputs"][0]["expression"] == "h_T[0] * h_T[1]"
    text = invoke("inspect", path)
    assert text.exit_code == 0, text.stderr
    assert "h_t[1] = sum(x_t[4:7]) + sum(h_{t-1}[0:2]), h_0[1] = 2" in text.stdout
    assert "          y = h_T[0] * h_T[1]" in text.stdout
    assert f"learned:  {report['unreadable']}" in text.stdout and "matches:  no" in text.stdout
    assert strict_json(invoke("inspect", path, "--json").stdout)["unreadable"] == report["unreadable"]


def test_a_nearly_exact_recurrent_model_snaps_exact_at_ten_thousand_steps(tmp_path):
    params = perturbed([cell(*RECURRENT_SLICES), {"w": np.ones((2, 1))}])  # initial state 0.01 too
    path = run_dir(tmp_path, "mul", ["nau", "nmu"], params, kind="recurrent")
    report = inspection.inspect(path)
    assert report["matches"] is True  # read at the rounded weights
    rows = [(row["layer"], row["weight"], row["exact"]) for row in report["deviating_weights"]]
    assert ("layer_1", "initial_state[0]", 0.0) in rows
    out = tmp_path / "snapped"
    result = inspection.snap(path, out)
    assert result["accepted"] and result["saved"] and result["matches"]
    assert result["interpolation_mse_after"] < result["interpolation_mse_before"]
    far = result["far"]
    assert far["length"] == inspection.FAR_LENGTH == 10_000 and far["factor"] == 1.0
    assert far["samples"] == inspection.FAR_SEQUENCES and far["range"] == [[1.0, 2.0]]
    assert far["relative_error_after"] <= inspection.FLOAT_PRECISION < far["relative_error_before"]
    assert far["exact"] is True
    # model.keras loads back with plain Keras once nalu's units are registered, and computes the task.
    import keras

    import nalu_cli.units  # noqa: F401

    keras_model = keras.saving.load_model(str(out / KERAS_FILE), compile=False)
    spec = tasks.TaskSpec.from_dict(json.loads((out / "assets.extra" / "nalu.json").read_text())["task"])
    x, y = tasks.validation_set(spec)
    np.testing.assert_allclose(np.asarray(keras_model(x)), y, rtol=1e-6)
    np.testing.assert_allclose(export.SavedModelPredictor(out)(x), y, rtol=1e-6)
    # The snapped SavedModel (no run directory around it) reads back exactly.
    again = inspection.inspect(out)
    assert again["expression"] == RECURRENT_SOLVED["mul"][1] and again["matches"] is True
    assert again["deviating_weights"] == [] and again["sparsity_error"] == 0.0


def test_cli_prints_a_recurrent_reading_and_its_far_check_at_a_length(tmp_path):
    params = [cell(*RECURRENT_SLICES), {"w": np.ones((2, 1))}]
    path = saved_model(tmp_path, "mul", ["nau", "nmu"], params, kind="recurrent")
    text = invoke("inspect", path, "--snap", "--out", tmp_path / "snapped")
    assert text.exit_code == 0, text.stderr
    assert f"model:    nau-nmu, recurrent ({path})" in text.stdout
    assert "h_t[0] = sum(x_t[2:5]) + h_{t-1}[0], h_0[0] = 0" in text.stdout
    assert "h_T[1] = sum_t sum(x_t[4:7])" in text.stdout
    assert f"learned:  {RECURRENT_SOLVED['mul'][1]}" in text.stdout and "matches:  yes" in text.stdout
    assert "relative error at T = 10,000 steps on the extrapolation range, U[1, 2]:" in text.stdout
    assert "(at float precision)" in text.stdout
    report = strict_json(invoke("inspect", path, "--json").stdout)
    assert report["expression"] == RECURRENT_SOLVED["mul"][1] and report["matches"] is True
    assert report["layers"][0]["outputs"][1]["expression"] == "sum_t sum(x_t[4:7])"


def test_a_bare_recurrent_saved_model_is_rebuilt_from_its_nested_cell_variables(tmp_path):
    params = [cell(*RECURRENT_SLICES, initial=[0.25, -0.25]), {"w": np.ones((2, 1))}]
    path = saved_model(tmp_path, "mul", ["nau", "nmu"], params, kind="recurrent")
    loaded = load(path)
    np.testing.assert_array_equal(loaded.params[0]["w"], params[0]["w"])
    np.testing.assert_array_equal(loaded.params[0]["initial_state"], [0.25, -0.25])
    roots = {"layer_1", "layer_2"}
    assert sorted(_weight_key(w.path, roots) for w in loaded.model.weights) == [
        "layer_1/initial_state", "layer_1/unit/regularizer_strength", "layer_1/unit/w",
        "layer_2/regularizer_strength", "layer_2/w",
    ]
    # A model loaded from model.keras names its variables without the model and the RNN layer.
    assert _weight_key("layer_1/unit/w:0", roots) == _weight_key("nau_nmu_model/recurrence/layer_1/unit/w:0", roots)
    report = inspection.inspect(path)
    assert report["expression"] == RECURRENT_SOLVED["mul"][1] and report["matches"] is True  # h_0 rounds to 0
    assert [(row["weight"], row["value"], row["exact"]) for row in report["deviating_weights"]] == [
        ("initial_state[0]", 0.25, 0.0),
        ("initial_state[1]", -0.25, 0.0),
    ]


def test_a_bare_saved_model_written_before_units_had_a_regularizer_strength_still_loads(tmp_path, monkeypatch):
    from nalu_cli.units import NAU, NMU

    for unit in (NAU, NMU):  # units without a schedule have no strength variable, as before nalu_cli.keras
        monkeypatch.setattr(unit, "regularizer_schedule", (0.0, 0, 1))
    op, layers, params, expression = SOLVED["mul"]
    path = saved_model(tmp_path, op, layers, params)
    assert "regularizer_strength" not in (path / "saved_model.pb").read_bytes().decode("latin-1")
    monkeypatch.undo()
    loaded = load(path)
    np.testing.assert_array_equal(loaded.params[0]["w"], params[0]["w"])
    assert [float(unit.regularizer_strength.numpy()) for unit in loaded.layers] == [0.0, 0.0]
    assert inspection.inspect(path)["expression"] == expression


@pytest.mark.parametrize("unit", ["lstm", "gru"])
def test_lstm_and_gru_cells_have_no_exact_reading(tmp_path, unit):
    cfg, spec, model = make_model("mul", [unit, "nmu"], [], kind="recurrent")
    path = tmp_path / unit
    export.write_saved_model(model, export.make_meta(spec.to_dict(), cfg.to_dict()["model"]), path)
    report = inspection.inspect(path)
    assert report["expression"] is None and report["matches"] is False
    assert report["unreadable"] == f"layer_1 ({unit}) has no exact reading"
    assert report["snappable"] is False and report["cannot_snap"].startswith(f"layer_1 ({unit}): ")
    with pytest.raises(NaluError, match=rf"^cannot snap layer_1 \({unit}\): "):
        inspection.snap(path, tmp_path / "snapped")
    assert strict_json(invoke("inspect", path, "--json").stdout)["unreadable"] == report["unreadable"]
