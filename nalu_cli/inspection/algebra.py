"""The learned expression as text and as algebra, and the task's formula in the same algebra.

A term's `canon` is what it computes, in a form where equal maths compare equal:
  ("linear", ((v, c), ...))              sum_v c v, nonzero c, sorted by v
  ("product", sign, ((form, p), ...))    sign * prod form^p over linear forms, merged, sorted
  ("opaque", text)                       anything else (equal to no task formula)
A variable v is an input: x[i] of a static model is the key i; the recurrent task's
sum_t x_t[i], the total of input i over every step, is ("sum_t", i). A recurrent cell's
step reads ("x_t", i) and ("h_{t-1}", k). A reading's keys are all of one kind: ints,
or tuples (which sort among themselves).
Pure Python: no numpy, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nalu_cli import ops

if TYPE_CHECKING:
    from nalu_cli.tasks import TaskSpec

SUM_T = "sum_t"  # the tag of a variable summed over every step of a sequence


@dataclass(frozen=True)
class Term:
    text: str
    canon: tuple
    compound: bool = False  # the text needs parentheses inside a product or a power
    index: int | None = None  # set for the variable base[i] itself
    negation_of: str | None = None  # text is "-" + this single piece: a sum can fold the sign in
    base: str = "x"  # the variable an indexed term reads ("x", "x_t", "h_{t-1}"): its slices
    binder: bool = False  # the text starts with "sum_t", which reaches to the end: parenthesised next to others


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
    """The task's formula in the same algebraic form as a reading (over sum_t x_t[i] for the recurrent task)."""
    (a0, a1), (b0, b1) = spec.subsets
    key = (lambda i: (SUM_T, i)) if spec.recurrent else (lambda i: i)
    a = {key(i): 1.0 for i in range(a0, a1)}
    b = {key(i): 1.0 for i in range(b0, b1)}
    op = ops.get(spec.op)
    if op.sum_sign is not None:
        total = dict(a)
        for i, c in b.items():
            total[i] = total.get(i, 0.0) + op.sum_sign * c
        return _linear(total)
    factors = [(form, power) for form, power in zip((_linear(a)[1], _linear(b)[1]), op.powers) if power != 0]
    return _product(1.0, factors)


def input_terms(input_size: int, base: str = "x") -> list[Term]:
    """The inputs x[i] of a static model (keys i), or base[i] of a recurrent cell's step (keys (base, i))."""
    return [variable_term(i if base == "x" else (base, i)) for i in range(input_size)]


def variable_term(key) -> Term:
    """The term of one variable key: i is x[i], (base, i) is base[i]; (SUM_T, i) is sum_t x_t[i]."""
    if isinstance(key, int):
        return Term(f"x[{key}]", ("linear", ((key, 1.0),)), index=key)
    base, i = key
    if base == SUM_T:
        return accumulated(variable_term(("x_t", i)))
    return Term(f"{base}[{i}]", ("linear", ((key, 1.0),)), index=i, base=base)


def accumulated(term: Term) -> Term:
    """sum_t of a linear term over the step's input x_t: a linear term over the totals sum_t x_t[i]."""
    if term.canon[0] != "linear" or any(not isinstance(k, tuple) or k[0] != "x_t" for k, _ in term.canon[1]):
        raise ValueError(f"only a linear form in x_t accumulates, got {term.text}")
    canon = _linear({(SUM_T, i): c for (_, i), c in term.canon[1]})
    if not canon[1]:
        return Term("0", canon)
    return Term(f"{SUM_T} ({term.text})" if term.compound else f"{SUM_T} {term.text}", canon, True, binder=True)


@dataclass
class _Piece:
    weight: float
    text: str
    compound: bool
    first: int | None
    last: int | None
    base: str
    binder: bool


def _runs(weighted: list[tuple[float, Term]]) -> list[_Piece]:
    """Pieces: consecutive variables base[first..last] with one weight become one slice; other terms
    with equal text merge (their weights add)."""
    pieces: list[_Piece] = []
    for weight, term in weighted:
        last = pieces[-1] if pieces else None
        if (
            term.index is not None
            and last is not None
            and last.first is not None
            and last.base == term.base
            and last.weight == weight
            and last.last == term.index - 1
        ):
            last.last = term.index
            continue
        same = next((p for p in pieces if p.first is None and p.text == term.text), None)
        if same is not None:
            same.weight += weight
            continue
        pieces.append(_Piece(weight, term.text, term.compound, term.index, term.index, term.base, term.binder))
    return pieces


def _slice_text(kind: str, piece: _Piece) -> tuple[str, bool]:
    if piece.first is None or piece.first == piece.last:
        return piece.text, piece.compound
    return f"{'sum' if kind == 'sum' else 'prod'}({piece.base}[{piece.first}:{piece.last + 1}])", False


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
    pieces = [piece for piece in _runs(unfolded) if piece.weight != 0]
    parts = []
    for piece in pieces:
        weight = piece.weight
        text, compound = _slice_text("sum", piece)
        magnitude = abs(weight)
        parenthesised = compound and (weight < 0 or magnitude != 1 or (piece.binder and len(pieces) > 1))
        body = f"({text})" if parenthesised else text
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
    for piece in _runs(used):
        if piece.weight == 0:
            continue
        text, compound = _slice_text("product", piece)
        (numerator if piece.weight > 0 else denominator).append(_power_text(text, compound, abs(piece.weight)))
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


def _linear_term(form: tuple) -> Term:
    """A linear form as one sum; over the totals sum_t x_t[i], as sum_t of one sum over x_t."""
    if form and all(isinstance(key, tuple) and key[0] == SUM_T for key, _ in form):
        return accumulated(sum_term([(c, variable_term(("x_t", i))) for (_, i), c in form]))
    return sum_term([(c, variable_term(key)) for key, c in form])


def canon_text(canon: tuple, input_size: int | None = None) -> str | None:
    """The simplest text of what a reading computes (merged slices and factors); None if opaque."""
    if canon[0] == "linear":
        return f"y = {_linear_term(canon[1]).text}"
    if canon[0] == "product":
        _, sign, factors = canon
        text = product_term([(power, _linear_term(form)) for form, power in factors]).text
        return f"y = {text}" if sign > 0 else f"y = -({text})"
    return None
