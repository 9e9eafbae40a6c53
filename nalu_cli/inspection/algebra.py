"""The learned expression as text and as algebra, and the task's formula in the same algebra.

A term's `canon` is what it computes, in a form where equal maths compare equal:
  ("linear", ((i, c), ...))              sum_i c x_i, nonzero c, sorted by i
  ("product", sign, ((form, p), ...))    sign * prod form^p over linear forms, merged, sorted
  ("opaque", text)                       anything else (equal to no task formula)
Pure Python: no numpy, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nalu_cli import ops

if TYPE_CHECKING:
    from nalu_cli.tasks import TaskSpec


@dataclass(frozen=True)
class Term:
    text: str
    canon: tuple
    compound: bool = False  # the text needs parentheses inside a product or a power
    index: int | None = None  # set for the input x[i] itself
    negation_of: str | None = None  # text is "-" + this single piece: a sum can fold the sign in


def _linear(coefficients: dict) -> tuple:
    return ("linear", tuple(sorted((i, c) for i, c in coefficients.items() if c != 0)))


def _product(sign: float, factors: list) -> tuple:
    merged: dict = {}
    for form, power in factors:
        if not form:  # the zero form
            if power > 0:
                return _linear({})
            if power < 0:
                return ("opaque", "division by zero")
            continue
        if form[0][1] < 0 and float(power).is_integer():  # -A and A are one factor: move the sign out
            form = tuple((i, -c) for i, c in form)
            sign *= (-1) ** int(power)
        merged[form] = merged.get(form, 0.0) + power
    factors = tuple(sorted((form, power) for form, power in merged.items() if power != 0))
    if len(factors) == 1 and factors[0][1] == 1:
        return _linear({i: sign * c for i, c in factors[0][0]})
    return ("product", sign, factors)


def true_canon(spec: TaskSpec) -> tuple:
    """The task's formula in the same algebraic form as a reading."""
    (a0, a1), (b0, b1) = spec.subsets
    a = {i: 1.0 for i in range(a0, a1)}
    b = {i: 1.0 for i in range(b0, b1)}
    op = ops.get(spec.op)
    if op.sum_sign is not None:
        total = dict(a)
        for i, c in b.items():
            total[i] = total.get(i, 0.0) + op.sum_sign * c
        return _linear(total)
    factors = [(form, power) for form, power in zip((_linear(a)[1], _linear(b)[1]), op.powers) if power != 0]
    return _product(1.0, factors)


def input_terms(input_size: int) -> list[Term]:
    return [Term(f"x[{i}]", ("linear", ((i, 1.0),)), index=i) for i in range(input_size)]


def _runs(weighted: list[tuple[float, Term]]) -> list[tuple[float, str, bool, int | None, int | None]]:
    """(weight, text, compound, first, last) pieces: consecutive inputs x[first..last] with one weight
    become one slice; other terms with equal text merge (their weights add)."""
    pieces: list[list] = []  # [weight, text, compound, first index, last index]
    for weight, term in weighted:
        last = pieces[-1] if pieces else None
        if (
            term.index is not None
            and last is not None
            and last[3] is not None
            and last[0] == weight
            and last[4] == term.index - 1
        ):
            last[4] = term.index
            continue
        same = next((p for p in pieces if p[3] is None and p[1] == term.text), None)
        if same is not None:
            same[0] += weight
            continue
        pieces.append([weight, term.text, term.compound, term.index, term.index])
    return [(weight, text, compound, first, last) for weight, text, compound, first, last in pieces]


def _slice_text(kind: str, text: str, first: int | None, last: int | None) -> tuple[str, bool]:
    if first is None or first == last:
        return text, False
    return f"{'sum' if kind == 'sum' else 'prod'}(x[{first}:{last + 1}])", False


def _number(value: float) -> str:
    return f"{value:g}"


def sum_term(weighted: list[tuple[float, Term]]) -> Term:
    used = [(w, t) for w, t in weighted if w != 0]
    if all(t.canon[0] == "linear" for _, t in used):
        coefficients: dict = {}
        for weight, term in used:
            for i, c in term.canon[1]:
                coefficients[i] = coefficients.get(i, 0.0) + weight * c
        canon = _linear(coefficients)
    else:
        canon = None
    # w * (-t) reads better as -w * t inside a sum.
    unfolded = [(-w, Term(t.negation_of, t.canon)) if t.negation_of else (w, t) for w, t in used]
    parts = []
    for weight, text, compound, first, last in _runs(unfolded):
        if weight == 0:
            continue
        if first is not None:
            text, compound = _slice_text("sum", text, first, last)
        magnitude = abs(weight)
        body = f"({text})" if compound and (weight < 0 or magnitude != 1) else text
        if magnitude != 1:
            body = f"{_number(magnitude)}*{body}"
        if not parts:
            parts.append(body if weight > 0 else f"-{body}")
        else:
            parts.append(f"{'+' if weight > 0 else '-'} {body}")
    text = " ".join(parts) or "0"
    compound = len(parts) > 1 or text.startswith("-") or (len(parts) == 1 and "*" in parts[0])
    negation_of = text[1:] if len(parts) == 1 and text.startswith("-") and "*" not in text else None
    return Term(text, canon if canon is not None else ("opaque", text), compound, negation_of=negation_of)


def product_term(weighted: list[tuple[float, Term]]) -> Term:
    used = [(p, t) for p, t in weighted if p != 0]
    sign, factors, opaque = 1.0, [], False
    for power, term in used:
        kind = term.canon[0]
        if kind == "linear":
            factors.append((term.canon[1], power))
        elif kind == "product" and (term.canon[1] > 0 or float(power).is_integer()):
            sign *= term.canon[1] ** power
            factors.extend((form, inner * power) for form, inner in term.canon[2])
        else:
            opaque = True
    numerator, denominator = [], []
    for power, text, compound, first, last in _runs(used):
        if power == 0:
            continue
        if first is not None:
            text, compound = _slice_text("product", text, first, last)
        (numerator if power > 0 else denominator).append(_power_text(text, compound, abs(power)))
    text = " * ".join(numerator) or "1"
    if denominator:
        below = denominator[0] if len(denominator) == 1 else f"({' * '.join(denominator)})"
        text = f"{text} / {below}"
    compound = len(numerator) + len(denominator) > 1
    return Term(text, ("opaque", text) if opaque else _product(sign, factors), compound)


def _power_text(text: str, compound: bool, power: float) -> str:
    if power == 0.5:
        return f"sqrt({text})"
    base = f"({text})" if compound else text
    return base if power == 1 else f"{base}^{_number(power)}"


def _linear_term(form: tuple, input_size: int) -> Term:
    inputs = input_terms(input_size)
    return sum_term([(c, inputs[i]) for i, c in form])


def canon_text(canon: tuple, input_size: int) -> str | None:
    """The simplest text of what a reading computes (merged slices and factors); None if opaque."""
    if canon[0] == "linear":
        return f"y = {_linear_term(canon[1], input_size).text}"
    if canon[0] == "product":
        _, sign, factors = canon
        text = product_term([(power, _linear_term(form, input_size)) for form, power in factors]).text
        return f"y = {text}" if sign > 0 else f"y = -({text})"
    return None
