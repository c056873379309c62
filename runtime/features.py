"""The request as flat floats: strict validation and the observation, in pure Python.

A numpy call costs about a microsecond, so the single-request path of the dispatcher reads
the request into a tuple of 17 floats (:data:`FIELDS`), validates it with ``math.isfinite``
and comparisons, and computes each feature of :class:`system.codec.ObservationEncoder` with
``math.log10``, in the same order of IEEE operations as the encoder's numpy code, so the
float32 observation is the same bit for bit (tests/test_runtime.py checks it on many
requests). A feature whose quantity has no pure-Python twin here is computed by the encoder
itself (slower, still identical).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping

import numpy as np

from system.bits import KERNEL_WIDTHS
from system.codec import ObservationEncoder
from system.errors import QsplitInputError, check_finite
from system.hardware import parse_kappa
from system.request import Request

#: Request fields in SI units, in the order of the flat tuple; then the 4 kappa entries.
SCALAR_FIELDS = ("dev_flops_per_s", "p_comp_w", "p_tx_w", "p_rx_w", "p_idle_w",
                 "srv_flops_per_s", "srv_load", "up_bps", "down_bps", "rtt_s", "eps_pp",
                 "beta_s_per_j", "reuse")
FIELDS = (*SCALAR_FIELDS, *(f"dev_kappa[{w}]" for w in KERNEL_WIDTHS))
_I = {f: i for i, f in enumerate(SCALAR_FIELDS)}
I_EPS = _I["eps_pp"]
_OPTIONAL = {"beta_s_per_j": 0.0, "reuse": 1.0}
_LABELS = ("device", "server")
_ALLOWED = frozenset((*SCALAR_FIELDS, "dev_kappa", *_LABELS))
#: Allowed range of each scalar field: (lo, hi, lo_open, hi_open), as Request enforces.
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "dev_flops_per_s": (0.0, None, True, False), "srv_flops_per_s": (0.0, None, True, False),
    "srv_load": (0.0, 1.0, True, False), "up_bps": (0.0, None, True, False),
    "down_bps": (0.0, None, True, False), "rtt_s": (0.0, None, False, False),
    "eps_pp": (0.0, 100.0, False, False), "beta_s_per_j": (0.0, None, False, False),
    "reuse": (1.0, None, False, False), "p_comp_w": (0.0, None, False, False),
    "p_tx_w": (0.0, None, False, False), "p_rx_w": (0.0, None, False, False),
    "p_idle_w": (0.0, None, False, False),
}
_INF = math.inf


def from_request(r: Request) -> tuple[float, ...]:
    """A Request (validated when it was built) as the flat tuple, without checks."""
    k = r.dev_kappa
    return (r.dev_flops_per_s, r.p_comp_w, r.p_tx_w, r.p_rx_w, r.p_idle_w, r.srv_flops_per_s,
            r.srv_load, r.up_bps, r.down_bps, r.rtt_s, r.eps_pp, r.beta_s_per_j, r.reuse,
            k[0], k[1], k[2], k[3])


def _explain(where: str, vals: list[object]) -> QsplitInputError:
    """The precise error for values that failed the fast check (first bad field wins)."""
    for f, v in zip(SCALAR_FIELDS, vals, strict=False):
        lo, hi, lo_open, hi_open = RANGES[f]
        check_finite(f"{where}.{f}", v, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)
    for w, v in zip(KERNEL_WIDTHS, vals[len(SCALAR_FIELDS):], strict=True):
        check_finite(f"{where}.dev_kappa[{w}]", v, lo=0.0)
    return QsplitInputError(f"{where}.dev_kappa[32]: must be 1.0 (speedups are relative to fp32)")


def from_mapping(d: Mapping[str, object], where: str = "request") -> tuple[float, ...]:
    """Validate a request given as a mapping of SI fields (Request's names) and flatten it.

    ``dev_kappa`` is a sequence over :data:`system.bits.KERNEL_WIDTHS` (0 = no kernel) or a
    mapping keyed by width; ``beta_s_per_j`` and ``reuse`` may be left out (0 and 1);
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
        vals = [d[f] if f in d or f not in _OPTIONAL else _OPTIONAL[f] for f in SCALAR_FIELDS]
        kap = d["dev_kappa"]
    except KeyError as exc:
        raise QsplitInputError(f"{where}: missing required key {exc.args[0]!r}") from None
    if isinstance(kap, Mapping):
        kap = parse_kappa(f"{where}.dev_kappa", dict(kap))     # {"32": 1, "8": 3.2}, strict
    elif isinstance(kap, (str, bytes)) or not hasattr(kap, "__len__"):
        raise QsplitInputError(f"{where}.dev_kappa: expected {len(KERNEL_WIDTHS)} numbers for "
                               f"widths {list(KERNEL_WIDTHS)}")
    if len(kap) != len(KERNEL_WIDTHS):
        raise QsplitInputError(f"{where}.dev_kappa: expected {len(KERNEL_WIDTHS)} entries for "
                               f"widths {list(KERNEL_WIDTHS)}, got {len(kap)}")
    vals.extend(kap)
    for v in vals:
        if type(v) is not float and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise _explain(where, vals)
    t = tuple(float(v) for v in vals)
    (dev, pc, ptx, prx, pidle, srv, load, up, down, rtt, eps, beta, reuse, k4, k8, k16, k32) = t
    if not (0.0 < dev < _INF and 0.0 < srv < _INF and 0.0 < load <= 1.0 and 0.0 < up < _INF
            and 0.0 < down < _INF and 0.0 <= rtt < _INF and 0.0 <= eps <= 100.0
            and 0.0 <= beta < _INF and 1.0 <= reuse < _INF and 0.0 <= pc < _INF
            and 0.0 <= ptx < _INF and 0.0 <= prx < _INF and 0.0 <= pidle < _INF
            and 0.0 <= k4 < _INF and 0.0 <= k8 < _INF and 0.0 <= k16 < _INF and k32 == 1.0):
        raise _explain(where, vals)
    return t


def to_request(t: tuple[float, ...]) -> Request:
    """The flat tuple as a Request (for the slow paths: repair, optimizer, local search)."""
    n = len(SCALAR_FIELDS)
    return Request(**dict(zip(SCALAR_FIELDS, t[:n], strict=True)), dev_kappa=tuple(t[n:]))


def to_arrays(rows: list[tuple[float, ...]]) -> dict[str, np.ndarray]:
    """Flat tuples as :func:`system.codec.request_arrays` output."""
    a = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FIELDS))
    out = {f: a[:, i] for i, f in enumerate(SCALAR_FIELDS)}
    out["dev_kappa"] = a[:, len(SCALAR_FIELDS):]
    return out


# Pure-Python twins of system.codec.QUANTITIES as expressions over the unpacked fields:
# same operands, same order of IEEE operations, so the same float64 values.
_WEIGHT = {"wc": "(1.0 + beta * pc)", "wt": "(1.0 + beta * ptx)", "wr": "(1.0 + beta * prx)",
           "wi": "(1.0 + beta * pidle)"}
_UNPACK = "dev, pc, ptx, prx, pidle, srv, load, up, down, rtt, eps, beta, reuse, k4, k8, k16, k32"
PY_QUANTITIES: dict[str, str] = {
    "dev_flops_per_s": "dev", "p_comp_w": "pc", "p_tx_w": "ptx", "p_rx_w": "prx",
    "p_idle_w": "pidle", "srv_flops_per_s": "srv", "srv_load": "load", "up_bps": "up",
    "down_bps": "down", "rtt_s": "rtt", "eps_pp": "eps", "beta_s_per_j": "beta",
    "reuse": "reuse", "dev_kappa_4": "k4", "dev_kappa_8": "k8", "dev_kappa_16": "k16",
    "srv_eff_flops_per_s": "(srv * load)",
    "dev_cost_per_flop": "({wc} / dev)",
    "srv_cost_per_flop": "_div({wi}, srv * load)",
    "up_cost_per_bit": "({wt} / up)",
    "down_cost_per_bit": "({wr} / (down * reuse))",
    "rtt_cost_s": "(rtt * (0.5 * {wt} + {wr} / reuse))",
}


def _div(a: float, b: float) -> float:
    """a / b with numpy's semantics for b == 0 (srv * load can underflow to 0.0)."""
    if b != 0.0:
        return a / b
    return math.nan if a == 0.0 or a != a else math.copysign(math.inf, a)


def _log10(x: float) -> float:
    """numpy's log10 semantics for x >= 0 (and NaN): log10(0) = -inf, no exception."""
    if x > 0.0:
        return math.log10(x)
    return -_INF if x == 0.0 else math.nan


def feature_function(encoder: ObservationEncoder, source: str = "tuple"
                     ) -> Callable[[object], list[float]]:
    """f(x) -> the encoder's features as float64 values, before the float32 rounding.

    ``x`` is the flat tuple (``source="tuple"``) or a :class:`Request` (``"request"``, read
    by attribute: no tuple to build on the fast path). The function is straight-line
    Python generated from the encoder's features (a loop of closures costs twice as much):
    each feature is its quantity's expression from :data:`PY_QUANTITIES` (fixed text,
    chosen by a name the encoder has validated) with the feature's numbers written as exact
    float literals. Clipping follows ``np.clip`` (NaN stays NaN). If a quantity has no twin
    here, the encoder's numpy code is used instead.
    """
    clip = float(encoder.clip)
    if not all(f.quantity in PY_QUANTITIES for f in encoder.features):
        def via_numpy(x: object) -> list[float]:
            t = from_request(x) if isinstance(x, Request) else x      # type: ignore[arg-type]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return encoder.encode_arrays(to_arrays([t]))[0].astype(np.float64).tolist()
        return via_numpy
    body = []
    for i, f in enumerate(encoder.features):
        expr = PY_QUANTITIES[f.quantity].format(**_WEIGHT)
        body.append(f"    x = {expr} + {float(f.shift)!r}")
        if f.transform == "log10":
            body.append("    x = log10(x) if x > 0.0 else _log10(x)")
        body.append(f"    v = (x - {float(f.center)!r}) / {float(f.scale)!r}")
        body.append(f"    v{i} = {-clip!r} if v < {-clip!r} else ({clip!r} if v > {clip!r} else v)")
    body.append(f"    return [{', '.join(f'v{i}' for i in range(len(encoder.features)))}]")
    if source == "tuple":
        head = [f"    {_UNPACK} = t"]
    else:
        text = "\n".join(body)
        names = _UNPACK.split(", ")
        used = [n for n in names if re.search(rf"\b{n}\b", text)]
        attrs = dict(zip(names, [*SCALAR_FIELDS, "dev_kappa[0]", "dev_kappa[1]",
                                 "dev_kappa[2]", "dev_kappa[3]"], strict=True))
        head = [f"    {n} = t.{attrs[n]}" for n in used]
    lines = ["def features(t, log10=log10, _log10=_log10, _div=_div):", *head, *body]
    scope: dict[str, object] = {"log10": math.log10, "_log10": _log10, "_div": _div}
    exec(compile("\n".join(lines), f"<qsplit features {len(encoder.features)}>", "exec"), scope)
    fn = scope["features"]
    return fn  # type: ignore[return-value]
