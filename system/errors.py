"""One error type for bad input, so every entry point can print one line and exit 2."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable


class QsplitInputError(ValueError):
    """Bad input from a user: the message names the field and the allowed range."""


def check_finite(field: str, value: object, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """Return ``value`` as a float, or raise naming ``field`` and the allowed range.

    Nothing is clamped: a value outside the range is refused, never moved into it.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise QsplitInputError(f"{field}: expected a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise QsplitInputError(f"{field}: expected a finite number, got {value!r}")
    bad_lo = lo is not None and (x <= lo if lo_open else x < lo)
    bad_hi = hi is not None and (x >= hi if hi_open else x > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise QsplitInputError(f"{field}: {x:g} is outside the allowed range {left}{lo_s}, {hi_s}{right}")
    return x


def check_keys(where: str, data: object, required: Iterable[str],
               optional: Iterable[str] = ()) -> dict:
    """Reject a mapping with unknown or missing keys, naming them."""
    if not isinstance(data, dict):
        raise QsplitInputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    required = list(required)
    allowed = set(required) | set(optional)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise QsplitInputError(
            f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise QsplitInputError(f"{where}: missing required key(s) {missing}")
    return data
