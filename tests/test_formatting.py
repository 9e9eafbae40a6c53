"""Numbers and input ranges as every table and report of the CLI prints them."""

import pytest

from nalu_cli.formatting import format_number, format_range


def test_none_is_a_dash():
    """Not measured, or never reached (e.g. the step a run that never solved was solved at)."""
    assert format_number(None) == "-"


@pytest.mark.parametrize("value, text", [(True, "yes"), (False, "no")])
def test_bools_are_yes_or_no_not_numbers(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(
    "value, text", [(float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "nan")]
)
def test_non_finite_floats_are_spelt_out(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(
    "value, text",
    [
        (0.0012341, "0.001234"),
        (2.4371e-13, "2.437e-13"),
        (1234.5678, "1235"),
        (123456.0, "1.235e+05"),
        (1.0, "1"),
        (0.0, "0"),
        (-0.5, "-0.5"),
    ],
)
def test_floats_have_four_significant_digits(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("digits, text", [(3, "0.00123"), (6, "0.00123457")])
def test_digits_sets_the_significant_digits_of_a_float(digits, text):
    assert format_number(0.0012345678, digits=digits) == text


@pytest.mark.parametrize(
    "value, text", [(0, "0"), (999, "999"), (28_000, "28,000"), (1_234_567, "1,234,567"), (-5_000, "-5,000")]
)
def test_ints_have_thousands_separators_and_every_digit(value, text):
    assert format_number(value) == text


def test_digits_does_not_round_an_int():
    assert format_number(28_123, digits=2) == "28,123"


def test_other_values_are_printed_as_they_are():
    assert format_number("overflow") == "overflow"


def test_a_range_is_a_uniform_interval():
    assert format_range([(1, 2)]) == "U[1, 2]"


def test_a_union_of_ranges_is_joined_with_the_union_sign():
    assert format_range([(1, 2), (4, 5)]) == "U[1, 2] ∪ U[4, 5]"


def test_range_bounds_print_without_trailing_zeros():
    assert format_range([(0.5, 2.0), (-3.0, 1e-05)]) == "U[0.5, 2] ∪ U[-3, 1e-05]"
