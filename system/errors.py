"""One error type for bad input, so every entry point can print one line and exit 2."""

from __future__ import annotations

import functools
import math
import numbers
import os
import reprlib
import sys
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, ParamSpec, overload

P = ParamSpec("P")


class QsplitInputError(ValueError):
    """Bad input from a user: the message names the field and the allowed range."""


class _Shown(reprlib.Repr):
    """reprlib's bounded repr; an integer too long for ``repr`` is described, not printed."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 3300:
            return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


_SHOWN = _Shown()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlong = 40


def shown(value: object) -> str:
    """A user's value as an error message shows it: a repr, cut short, on one line."""
    return _SHOWN.repr(value)


def _magnitude(value: object) -> str:
    """A number too large for a float, written as ``%g`` writes floats (``1e+400``)."""
    if not isinstance(value, int):
        return shown(value)
    mantissa, exp = f"{Decimal(value):.5e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp):+03d}"


_Errors = tuple[type[Exception], ...]


@overload
def cli_main(main: Callable[P, int], *, errors: _Errors = ...) -> Callable[P, int]: ...
@overload
def cli_main(main: None = None, *,
             errors: _Errors = ...) -> Callable[[Callable[P, int]], Callable[P, int]]: ...
def cli_main(main: Callable[P, int] | None = None, *, errors: _Errors = (QsplitInputError,)) -> Any:
    """Decorate a command's ``main``: bad input prints ``error: <one line>`` and returns 2.

    ``errors`` are the exception types that mean bad input (QsplitInputError by default, which
    every loader raises); anything else is a bug and keeps its traceback. ``@cli_main`` or
    ``@cli_main(errors=(...))``.
    """
    def wrap(func: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return func(*args, **kwargs)
            except errors as exc:
                print(f"error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
                return 2
            except BrokenPipeError:          # output piped into e.g. `head`, which stopped reading
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 1
        return run
    return wrap(main) if main is not None else wrap


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
    t = type(value)      # float and int first: the ABC check below costs microseconds
    if t is not float and t is not int and (
            isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise QsplitInputError(f"{field}: expected a number{f' in {unit}' if unit else ''}, "
                               f"got {shown(value)}")
    try:
        x = float(value)
    except OverflowError:
        raise QsplitInputError(
            f"{field}: {_magnitude(value)} is outside the allowed range "
            f"{interval_text(lo, hi, lo_open, hi_open)}{f' {unit}' if unit else ''} "
            f"(numbers must be finite, at most {sys.float_info.max:.6g})") from None
    if not math.isfinite(x):
        raise QsplitInputError(f"{field}: expected a finite number, got {shown(value)}")
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
        raise QsplitInputError(f"{where}: expected a mapping, got {type(data).__name__}")
    required = list(required)
    allowed = set(required) | set(optional)
    unknown = sorted((k for k in data if k not in allowed), key=repr)
    if unknown:
        raise QsplitInputError(
            f"{where}: unknown key(s) {shown(unknown)}; allowed keys are {sorted(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise QsplitInputError(f"{where}: missing required key(s) {missing}")
    return data
