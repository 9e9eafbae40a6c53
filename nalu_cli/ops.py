"""The six ops of the static task, y = op(a, b) over two slice sums a and b: one record each.

Everything that names, prints, computes or reads an op takes it from here: the config's
op names (`NAMES`), the task's formula (`Op.formula`), its targets (`Op.function`), the
benchmark table's symbols (`SYMBOLS`) and the algebraic form `nalu inspect` compares a
learned expression with (`Op.sum_sign` or `Op.powers`).
This module imports neither TensorFlow nor numpy: config validation reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Op:
    """One op. Exactly one of `sum_sign` and `powers` is set: an op is a sum or a product of a and b.

    Args:
        name: the op's name in configs and on the command line ("mul").
        symbol: the op over a and b, compact, for tables ("a*b").
        template: the formula over the slice sums' texts `{a}` and `{b}` ("{a} * {b}").
        function: y = function(a, b, sqrt), elementwise on numpy arrays or tensors alike;
            `sqrt` is the square root matching them (np.sqrt, tf.sqrt).
        sum_sign: for a sum, y = a + sum_sign * b.
        powers: for a product, (p, q) with y = a^p * b^q (q = 0: b is not used).
    """

    name: str
    symbol: str
    template: str
    function: Callable
    sum_sign: float | None = None
    powers: tuple[float, float] | None = None

    def __post_init__(self):
        if (self.sum_sign is None) == (self.powers is None):
            raise ValueError(f"op {self.name!r} must set exactly one of sum_sign and powers")

    def formula(self, a: str, b: str) -> str:
        """The formula with `a` and `b` standing for the slice sums' texts."""
        return self.template.format(a=a, b=b)


# y is computed as written here: `a * a`, not `a ** 2`, so targets stay the numbers they were.
TABLE: dict[str, Op] = {
    op.name: op
    for op in (
        Op("add", "a+b", "{a} + {b}", lambda a, b, sqrt: a + b, sum_sign=1.0),
        Op("sub", "a-b", "{a} - {b}", lambda a, b, sqrt: a - b, sum_sign=-1.0),
        Op("mul", "a*b", "{a} * {b}", lambda a, b, sqrt: a * b, powers=(1.0, 1.0)),
        Op("div", "a/b", "{a} / {b}", lambda a, b, sqrt: a / b, powers=(1.0, -1.0)),
        Op("square", "a^2", "{a}^2", lambda a, b, sqrt: a * a, powers=(2.0, 0.0)),
        Op("sqrt", "sqrt(a)", "sqrt({a})", lambda a, b, sqrt: sqrt(a), powers=(0.5, 0.0)),
    )
}
NAMES: tuple[str, ...] = tuple(TABLE)
SYMBOLS: dict[str, str] = {name: op.symbol for name, op in TABLE.items()}


def get(name: str) -> Op:
    """The op called `name`; ValueError for an unknown name (config validation names the choices)."""
    try:
        return TABLE[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}") from None
