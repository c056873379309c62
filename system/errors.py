"""One error type for bad input, so every entry point can print one line and exit 2."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable


class QsplitInputError(ValueError):
    """Bad input from a user: the message names the field and the allowed range."""


def interval_text(lo: float | None, hi: float | None, lo_open: bool = False,
                  hi_open: bool = False) -> str:
    """An allowed range as people write it, e.g. ``(0, inf)`` or ``[0, 100]``.

    An infinite end is always open: only finite numbers are accepted.
    """
    lo_s = "-inf" if lo is None or lo == -math.inf else f"{lo:g}"
    hi_s = "inf" if hi is None or hi == math.inf else f"{hi:g}"
    left = "(" if lo_open or lo_s == "-inf" else "["
    right = ")" if hi_open or hi_s == "inf" else "]"
    return f"{left}{lo_s}, {hi_s}{right}"


def check_finite(field: str, value: object, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, unit: str = "") -> float:
    """Return ``value`` as a float, or raise naming ``field``, its unit and the allowed range.

    The one format of a range error: ``up_mbps: -1 is outside the allowed range (0, inf)
    Mbit/s``. Nothing is clamped: a value outside the range is refused, never moved into it.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise QsplitInputError(f"{field}: expected a number{f' in {unit}' if unit else ''}, "
                               f"got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise QsplitInputError(f"{field}: expected a finite number, got {value!r}")
    bad_lo = lo is not None and (x <= lo if lo_open else x < lo)
    bad_hi = hi is not None and (x >= hi if hi_open else x > hi)
    if bad_lo or bad_hi:
        raise QsplitInputError(f"{field}: {x:g} is outside the allowed range "
                               f"{interval_text(lo, hi, lo_open, hi_open)}{f' {unit}' if unit else ''}")
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
