"""The request as flat floats: intake, strict validation and the observation, in pure Python.

A numpy call costs about a microsecond, so the single-request path of the dispatcher reads a
request into a tuple of floats (:data:`FIELDS`, from :mod:`system.fields`), validates it with
comparisons and computes each feature of :class:`system.codec.ObservationEncoder` as
straight-line Python generated from the same text as the encoder's quantities
(:data:`system.codec.QUANTITIES`): the same IEEE operations in the same order, so the
float32 observation is the same bit for bit (tests/test_runtime.py checks it on many
requests). Generated code pays for itself: 2.0 us a request for the shipped encoder's 21
features, against 7.4 us for a loop of closures over the same expressions and 79 us for the
encoder's numpy code on one row (here; the ``features`` entry of
``benchmarks/bench_dispatcher.py``'s breakdown tracks the first).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping

import numpy as np

from system.bits import KERNEL_WIDTHS
from system.codec import BASE_QUANTITIES, QUANTITIES, ObservationEncoder
from system.errors import QsplitInputError
from system.fields import (
    FLAT_NAMES,
    FLAT_RANGES,
    LABELS,
    REQUEST_FIELDS,
    SCALAR_NAMES,
    WIDTH_FIELDS,
    RequestField,
    check_width_entries,
    column_names,
    explain_flat,
    flat_in_range,
)
from system.hardware import parse_kappa
from system.request import Request

#: Scalar request fields in SI units, in the order of the flat tuple; then the per-width ones.
SCALAR_FIELDS = SCALAR_NAMES
FIELDS = FLAT_NAMES
#: Allowed range of each entry of the flat tuple: (lo, hi, lo_open, hi_open).
RANGES: dict[str, tuple[float, float, bool, bool]] = dict(zip(FIELDS, FLAT_RANGES, strict=True))
I_EPS = FIELDS.index("eps_pp")
_DEFAULTS = {f.name: f.default for f in REQUEST_FIELDS if f.default is not None}
_ALLOWED = frozenset((*(f.name for f in REQUEST_FIELDS), *LABELS))
#: Identifier of each flat entry in generated code (the per-width columns, e.g. dev_kappa_8).
_VARS = (*SCALAR_NAMES, *(c for f in WIDTH_FIELDS for c in column_names(f)))


def from_request(r: Request) -> tuple[float, ...]:
    """A Request (validated when it was built) as the flat tuple, without checks."""
    return r.flat_row


def to_request(t: tuple[float, ...], device: str = "", server: str = "") -> Request:
    """The flat tuple as a Request (for callers that gave a mapping or arrays), labelled."""
    n, k = len(SCALAR_FIELDS), len(KERNEL_WIDTHS)
    widths = {f.name: tuple(t[n + i * k:n + (i + 1) * k]) for i, f in enumerate(WIDTH_FIELDS)}
    return Request(**dict(zip(SCALAR_FIELDS, t[:n], strict=True)), **widths, device=device,
                   server=server)


def _compile(name: str, lines: list[str], scope: dict[str, object]) -> Callable:
    """Define the function ``name`` from source lines built here from the field table."""
    exec(compile("\n".join(lines), f"<qsplit {name}>", "exec"), scope)
    return scope[name]  # type: ignore[return-value]


def _range_test(var: str, lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    left = f"{lo!r} {'<' if lo_open else '<='} {var}"
    right = f"< {hi!r}" if hi_open or hi == math.inf else f"<= {hi!r}"
    return f"{left} {right}"


def _validator() -> Callable[[tuple[float, ...]], bool]:
    """in_range(t): every entry within its range, and each 32-bit speedup exactly 1."""
    tests = [_range_test(v, *RANGES[n]) for v, n in zip(_VARS, FIELDS, strict=True)]
    tests += [f"{c} == 1.0" for f in WIDTH_FIELDS for c in column_names(f) if c.endswith("_32")]
    return _compile("in_range", ["def in_range(t):", f"    {', '.join(_VARS)} = t",
                                 f"    return {' and '.join(tests)}"], {"inf": math.inf})


_in_range = _validator()


def _width_entries(f: RequestField, entries: object, where: str) -> tuple[float, ...] | list:
    """A per-width field given as a mapping keyed by width ({"32": 1, "8": 3.2}, strict) or
    another sequence; anything else is refused naming the field."""
    if isinstance(entries, Mapping):
        return parse_kappa(f"{where}.{f.name}", dict(entries))
    if isinstance(entries, (str, bytes)) or not hasattr(entries, "__len__") \
            or len(entries) != len(KERNEL_WIDTHS):  # type: ignore[arg-type]
        check_width_entries(f, f"{where}.{f.name}", entries)
    return list(entries)  # type: ignore[call-overload]


def from_mapping(d: Mapping[str, object], where: str = "request") -> tuple[float, ...]:
    """Validate a request given as a mapping of SI fields (Request's names) and flatten it.

    A per-width field (``dev_kappa``) is a sequence over :data:`system.bits.KERNEL_WIDTHS`
    (0 = no kernel) or a mapping keyed by width; a field with a default may be left out;
    ``device`` and ``server`` are labels and ignored. Anything missing, unknown, non-numeric,
    non-finite or out of range raises :class:`QsplitInputError` naming the field.
    """
    if not isinstance(d, Mapping):
        raise QsplitInputError(f"{where}: expected a mapping of request fields, got "
                               f"{type(d).__name__}")
    if not _ALLOWED.issuperset(d):
        unknown = sorted(str(k) for k in set(d) - _ALLOWED)
        raise QsplitInputError(f"{where}: unknown key(s) {unknown}; allowed keys are "
                               f"{sorted(_ALLOWED)}")
    try:
        vals = [d[f] if f in d or f not in _DEFAULTS else _DEFAULTS[f] for f in SCALAR_FIELDS]
        for f in WIDTH_FIELDS:
            entries = d[f.name]
            if type(entries) is not list and type(entries) is not tuple:
                entries = _width_entries(f, entries, where)
            elif len(entries) != len(KERNEL_WIDTHS):
                check_width_entries(f, f"{where}.{f.name}", entries)
            vals.extend(entries)
    except KeyError as exc:
        raise QsplitInputError(f"{where}: missing required key {exc.args[0]!r}") from None
    for v in vals:
        if type(v) is not float and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise explain_flat(where, vals)
    try:
        t = tuple(float(v) for v in vals)
    except OverflowError:                     # an integer beyond the largest double
        raise explain_flat(where, vals) from None
    if not _in_range(t):
        raise explain_flat(where, vals)
    return t


def matrix_of(rows: list[tuple[float, ...]]) -> np.ndarray:
    """Flat tuples as an (N, F) float64 matrix, one request a row."""
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FIELDS))


def columns(M: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of a matrix of flat tuples as :func:`system.request.request_arrays` output."""
    out = {f: M[:, i] for i, f in enumerate(SCALAR_FIELDS)}
    n, k = len(SCALAR_FIELDS), len(KERNEL_WIDTHS)
    for i, f in enumerate(WIDTH_FIELDS):
        out[f.name] = M[:, n + i * k:n + (i + 1) * k]
    return out


def matrix_from_arrays(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Validate request arrays field by field (errors name the field and the first bad row);
    the requests as :func:`matrix_of` gives them."""
    if not isinstance(arrays, Mapping):
        raise QsplitInputError("requests: expected a mapping of field -> array")
    if not _ALLOWED.issuperset(arrays):
        unknown = sorted(str(k) for k in set(arrays) - _ALLOWED)
        raise QsplitInputError(f"requests: unknown key(s) {unknown}; allowed keys are "
                               f"{sorted(_ALLOWED)}")
    n = None
    cols: list[np.ndarray | None] = []
    for f in REQUEST_FIELDS:
        if f.name not in arrays:
            if f.default is not None:
                cols.append(None)
                continue
            raise QsplitInputError(f"requests: missing required key {f.name!r}")
        a = np.asarray(arrays[f.name])
        if a.dtype.kind not in "fiu":
            raise QsplitInputError(f"requests.{f.name}: expected numbers, got dtype {a.dtype}")
        n = (a.shape[0] if a.ndim else -1) if n is None else n
        shape = (n, len(KERNEL_WIDTHS)) if f.per_width else (n,)
        if a.shape != shape:
            raise QsplitInputError(f"requests.{f.name}: expected shape {shape}, got {a.shape}")
        cols.append(a.astype(np.float64))
    assert n is not None
    full = {f.name: c if c is not None else np.full(n, f.default)
            for f, c in zip(REQUEST_FIELDS, cols, strict=True)}
    M = np.column_stack([*(full[f] for f in SCALAR_FIELDS), *(full[f.name] for f in WIDTH_FIELDS)]) \
        if n else np.zeros((0, len(FIELDS)))
    ok = flat_in_range(M)
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        raise explain_flat(f"request[{i}]", M[i].tolist())
    return M


def _div(a: float, b: float) -> float:
    """a / b with numpy's semantics for b == 0 (srv * load can underflow to 0.0)."""
    if b != 0.0:
        return a / b
    return math.nan if a == 0.0 or a != a else math.copysign(math.inf, a)


def _log10(x: float) -> float:
    """numpy's log10 semantics for x >= 0 (and NaN): log10(0) = -inf, no exception."""
    if x > 0.0:
        return math.log10(x)
    return -math.inf if x == 0.0 else math.nan


def feature_function(encoder: ObservationEncoder, source: str = "tuple"
                     ) -> Callable[[Request | tuple[float, ...]], list[float]]:
    """f(x) -> the encoder's features as float64 values, before the float32 rounding.

    ``x`` is the flat tuple (``source="tuple"``) or a :class:`Request` (``"request"``, read
    by attribute: no tuple to build). The function is straight-line Python generated from
    the encoder's features: each feature is its quantity's expression from
    :data:`system.codec.QUANTITIES` (module text, chosen by a name the encoder has
    validated) with the feature's numbers written as exact float literals; clipping follows
    ``np.clip`` (NaN stays NaN).
    """
    clip = float(encoder.clip)
    body = []
    for i, f in enumerate(encoder.features):
        body.append(f"    x = {QUANTITIES[f.quantity]} + {float(f.shift)!r}")
        if f.transform == "log10":
            body.append("    x = log10(x) if x > 0.0 else _log10(x)")
        body.append(f"    v = (x - {float(f.center)!r}) / {float(f.scale)!r}")
        body.append(f"    v{i} = {-clip!r} if v < {-clip!r} else ({clip!r} if v > {clip!r} else v)")
    body.append(f"    return [{', '.join(f'v{i}' for i in range(len(encoder.features)))}]")
    if source == "tuple":
        head = [f"    {', '.join(_VARS)} = t"]
    else:
        text = "\n".join(body)
        attrs = {c: f"{f.name}[{j}]" for f in WIDTH_FIELDS
                 for j, c in enumerate(column_names(f))}
        head = [f"    {q} = t.{attrs.get(q, q)}" for q in BASE_QUANTITIES
                if re.search(rf"\b{q}\b", text)]
    scope: dict[str, object] = {"log10": math.log10, "_log10": _log10, "div": _div}
    return _compile("features", ["def features(t, log10=log10, _log10=_log10, div=div):",
                                 *head, *body], scope)
