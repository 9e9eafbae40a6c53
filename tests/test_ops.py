"""The op table: each op's name, symbol, formula, function and algebraic form, as the code before it had them."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from nalu_cli import config, ops, tasks
from nalu_cli.inspection import true_canon

# What each op was before the table: tasks.apply_op, TaskSpec.formula for slices x[3:28] and
# x[16:41], benchmark.OP_SYMBOLS, and inspection.true_canon for slices x[0:2] and x[1:3].
A_FORM, B_FORM = ((0, 1.0), (1, 1.0)), ((1, 1.0), (2, 1.0))
BEFORE = {
    "add": (
        lambda a, b: a + b, "a+b", "sum(x[3:28]) + sum(x[16:41])", ("linear", ((0, 1.0), (1, 2.0), (2, 1.0)))
    ),
    "sub": (lambda a, b: a - b, "a-b", "sum(x[3:28]) - sum(x[16:41])", ("linear", ((0, 1.0), (2, -1.0)))),
    "mul": (
        lambda a, b: a * b, "a*b", "sum(x[3:28]) * sum(x[16:41])", ("product", 1.0, ((A_FORM, 1.0), (B_FORM, 1.0)))
    ),
    "div": (
        lambda a, b: a / b, "a/b", "sum(x[3:28]) / sum(x[16:41])", ("product", 1.0, ((A_FORM, 1.0), (B_FORM, -1.0)))
    ),
    "square": (lambda a, b: a * a, "a^2", "sum(x[3:28])^2", ("product", 1.0, ((A_FORM, 2.0),))),
    "sqrt": (lambda a, b: np.sqrt(a), "sqrt(a)", "sqrt(sum(x[3:28]))", ("product", 1.0, ((A_FORM, 0.5),))),
}


def spec(op, subsets, input_size=100):
    return tasks.TaskSpec(op, input_size, subsets, ((1.0, 2.0),), ((2.0, 6.0),), seed=0)


def test_the_table_holds_the_six_ops_in_the_config_order():
    assert ops.NAMES == config.OPS == ("add", "sub", "mul", "div", "square", "sqrt")
    assert all(ops.get(name).name == name for name in ops.NAMES)


@pytest.mark.parametrize("name", list(BEFORE))
def test_function_gives_the_same_numbers_on_numpy_arrays(name):
    a = np.array([1.5, 2.25, 7.0, 1e6], np.float32)
    b = np.array([0.5, 3.0, 2.0, 3e-3], np.float32)
    function = BEFORE[name][0]
    np.testing.assert_array_equal(ops.get(name).function(a, b, np.sqrt), function(a, b))
    np.testing.assert_array_equal(tasks.apply_op(name, a, b), function(a, b))


@pytest.mark.parametrize("name", list(BEFORE))
def test_function_gives_the_same_numbers_on_tensors(name):
    a = np.array([1.5, 2.25, 7.0, 1e6], np.float32)
    b = np.array([0.5, 3.0, 2.0, 3e-3], np.float32)
    y = ops.get(name).function(tf.constant(a), tf.constant(b), tf.sqrt)
    assert isinstance(y, tf.Tensor)
    np.testing.assert_array_equal(y.numpy(), BEFORE[name][0](a, b))


def test_symbols_are_the_benchmark_table_symbols():
    assert ops.SYMBOLS == {name: symbol for name, (_, symbol, _, _) in BEFORE.items()}


@pytest.mark.parametrize("name", list(BEFORE))
def test_formula_names_the_slices(name):
    assert spec(name, ((3, 28), (16, 41))).formula() == BEFORE[name][2]


@pytest.mark.parametrize("name", list(BEFORE))
def test_true_canon_is_the_algebraic_form_of_the_formula(name):
    assert true_canon(spec(name, ((0, 2), (1, 3)), input_size=10)) == BEFORE[name][3]


def test_true_canon_merges_equal_slices():
    same = ((0, 2), (0, 2))
    assert true_canon(spec("sub", same, input_size=10)) == ("linear", ())
    assert true_canon(spec("mul", same, input_size=10)) == ("product", 1.0, ((A_FORM, 2.0),))
    assert true_canon(spec("div", same, input_size=10)) == ("product", 1.0, ())


def test_every_op_is_a_sum_or_a_product_not_both():
    for op in ops.TABLE.values():
        assert (op.sum_sign is None) != (op.powers is None)
    with pytest.raises(ValueError, match="exactly one"):
        ops.Op("both", "a?b", "{a} ? {b}", lambda a, b, sqrt: a, sum_sign=1.0, powers=(1.0, 1.0))


def test_an_unknown_op_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="unknown op 'pow'"):
        ops.get("pow")
    with pytest.raises(ValueError, match="unknown op 'pow'"):
        tasks.apply_op("pow", 1.0, 2.0)


def test_config_and_the_op_table_import_neither_numpy_nor_tensorflow():
    code = "import sys, nalu_cli.config, nalu_cli.ops; assert not {'numpy', 'tensorflow', 'keras'} & set(sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
