"""The request schema: one table of fields, from which every form of a request is derived.

Each :class:`RequestField` says how :class:`system.request.Request` holds a value (SI name and
unit), which values are allowed, how a user writes it in JSON (name, unit, power-of-ten
scale), its default, which catalog entry can supply it, and whether the observation encoder
may read it. Request's validation, its JSON parser and writer, the help text, the CSV columns,
the encoder's base quantities, the runtime's flat tuple and the request pools' arrays are
all read off :data:`REQUEST_FIELDS`; adding a field means adding a row here and an attribute
to ``Request``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from system.bits import KERNEL_WIDTHS
from system.errors import QsplitInputError, check_finite, interval_text

INF = math.inf


@dataclass(frozen=True)
class RequestField:
    """One request field (see the module docstring); SI value = JSON value x 10**json_exp."""

    name: str                 # as Request holds it
    unit: str                 # SI unit ("" = unitless)
    doc: str
    lo: float = 0.0
    hi: float = INF           # an infinite end is open: values must be finite
    lo_open: bool = False
    hi_open: bool = False
    json_name: str = ""       # "" = the same as name
    json_unit: str = ""       # "" = the same as unit
    json_exp: int = 0
    default: float | None = None
    catalog: str = ""         # "device.flops_per_s": what a catalog entry named in the JSON supplies
    observed: bool = True     # the observation encoder may read it
    per_width: bool = False   # one value per kernel width of KERNEL_WIDTHS

    @property
    def json_key(self) -> str:
        """The name a user writes in a request JSON file."""
        return self.json_name or self.name

    @property
    def json_units(self) -> str:
        """The unit of the JSON value."""
        return self.json_unit or self.unit

    def to_si(self, x: float) -> float:
        """JSON value -> SI (a product or quotient by an exact power of ten: correctly rounded)."""
        e = self.json_exp
        return x * 10.0 ** e if e >= 0 else x / 10.0 ** -e

    def to_json(self, x: float) -> float:
        """SI value -> JSON value, the inverse of :meth:`to_si`."""
        e = self.json_exp
        return x / 10.0 ** e if e >= 0 else x * 10.0 ** -e

    def check(self, value: object, label: str = "") -> float:
        """``value`` in SI units as a float, or an error naming ``label`` (default: the name)."""
        if type(value) is float and _inside(value, self.lo, self.hi, self.lo_open, self.hi_open):
            return value                       # what check_finite returns, without its call
        return check_finite(label or self.name, value, lo=self.lo, hi=self.hi,
                            lo_open=self.lo_open, hi_open=self.hi_open, unit=self.unit)

    @cached_property
    def json_range(self) -> tuple[float, float]:
        """(lo, hi) in JSON units."""
        return self.to_json(self.lo), self.to_json(self.hi)

    def check_json(self, value: object, label: str = "") -> float:
        """``value`` as the user wrote it (JSON units), checked against the range in those units."""
        lo, hi = self.json_range
        if type(value) is float and _inside(value, lo, hi, self.lo_open, self.hi_open):
            return value
        return check_finite(label or self.json_key, value, lo=lo, hi=hi, lo_open=self.lo_open,
                            hi_open=self.hi_open, unit=self.json_units)

    def help(self) -> str:
        """One line for the JSON field list: what it is, its unit, range and default."""
        unit = f", {self.json_units}" if self.json_units else ""
        rng = interval_text(self.to_json(self.lo), self.to_json(self.hi), self.lo_open,
                            self.hi_open)
        if self.per_width:
            rng = (f"keyed by width {{{', '.join(repr(str(w)) for w in KERNEL_WIDTHS)}}}, "
                   f"each in {interval_text(self.lo, self.hi, True, self.hi_open)}, '32' = 1")
        default = "" if self.default is None else f"; default {self.default:g}"
        source = f"; from the catalog {self.catalog.split('.')[0]} if not given" \
            if self.catalog else ""
        return f"{self.doc}{unit}, {rng}{default}{source}"


def _inside(x: float, lo: float, hi: float, lo_open: bool, hi_open: bool) -> bool:
    """Whether a float passes :func:`system.errors.check_finite` with this range (finite and
    inside it); False sends it to check_finite, which decides and words the error."""
    return math.isfinite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)


#: The request fields, in the order of Request's attributes.
REQUEST_FIELDS: tuple[RequestField, ...] = (
    RequestField("dev_flops_per_s", "FLOP/s", "device effective fp32 compute", lo_open=True,
                 json_name="dev_gflops", json_unit="GFLOP/s", json_exp=9,
                 catalog="device.flops_per_s"),
    RequestField("dev_kappa", "", "device kernel speedups over fp32 (0 = no kernel)",
                 catalog="device.kappa", per_width=True),
    RequestField("p_comp_w", "W", "device power computing", catalog="device.p_comp_w"),
    RequestField("p_tx_w", "W", "device power transmitting", catalog="device.p_tx_w"),
    RequestField("p_rx_w", "W", "device power receiving", catalog="device.p_rx_w"),
    RequestField("p_idle_w", "W", "device power waiting for the server",
                 catalog="device.p_idle_w"),
    RequestField("srv_flops_per_s", "FLOP/s", "server effective fp32 compute", lo_open=True,
                 json_name="srv_gflops", json_unit="GFLOP/s", json_exp=9,
                 catalog="server.flops_per_s"),
    RequestField("srv_load", "", "share of the server available to this request", hi=1.0,
                 lo_open=True, default=1.0),
    RequestField("up_bps", "bit/s", "uplink rate", lo_open=True, json_name="up_mbps",
                 json_unit="Mbit/s", json_exp=6),
    RequestField("down_bps", "bit/s", "downlink rate", lo_open=True, json_name="down_mbps",
                 json_unit="Mbit/s", json_exp=6),
    RequestField("rtt_s", "s", "round-trip time", json_name="rtt_ms", json_unit="ms",
                 json_exp=-3),
    RequestField("eps_pp", "pp", "accuracy budget, percentage points of top-1", hi=100.0),
    RequestField("beta_s_per_j", "s/J", "energy weight in cost = latency_s + beta * energy_j",
                 default=0.0),
    RequestField("reuse", "", "inferences served by one shipped head (1 = ship per request)",
                 lo=1.0, default=1.0),
)
#: Label fields of Request (text, not validated, not observed).
LABELS: tuple[str, ...] = ("device", "server")

FIELD_BY_NAME: dict[str, RequestField] = {f.name: f for f in REQUEST_FIELDS}
#: Names of the scalar fields, in table order.
SCALAR_NAMES: tuple[str, ...] = tuple(f.name for f in REQUEST_FIELDS if not f.per_width)
#: The per-width fields (the kernel speedups); each takes one entry per KERNEL_WIDTHS.
WIDTH_FIELDS: tuple[RequestField, ...] = tuple(f for f in REQUEST_FIELDS if f.per_width)
#: Names of the entries of the flat form: the scalars, then each per-width entry.
FLAT_NAMES: tuple[str, ...] = (*SCALAR_NAMES, *(f"{f.name}[{w}]" for f in WIDTH_FIELDS
                                                for w in KERNEL_WIDTHS))
#: The allowed range of each entry of the flat form: (lo, hi, lo_open, hi_open).
FLAT_RANGES: tuple[tuple[float, float, bool, bool], ...] = tuple(
    (f.lo, f.hi, f.lo_open, f.hi_open)
    for f in (*(FIELD_BY_NAME[n] for n in SCALAR_NAMES),
              *(f for f in WIDTH_FIELDS for _ in KERNEL_WIDTHS)))
_FLAT_32 = [j for j, name in enumerate(FLAT_NAMES) if name.endswith("[32]")]


def inside_array(x: np.ndarray, lo: float, hi: float, lo_open: bool, hi_open: bool) -> np.ndarray:
    """:func:`system.errors.check_finite`'s test elementwise: finite and inside the range."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & ((x > lo) if lo_open else (x >= lo)) & \
            ((x < hi) if hi_open else (x <= hi))


def flat_in_range(M: np.ndarray) -> np.ndarray:
    """Whether each row of flat values (N, len(FLAT_NAMES)) passes Request's checks: every
    entry finite and inside its range, and each 32-bit speedup exactly 1."""
    ok = np.all(M[:, _FLAT_32] == 1.0, axis=1)
    for j, bounds in enumerate(FLAT_RANGES):
        ok &= inside_array(M[:, j], *bounds)
    return ok


def column_names(f: RequestField) -> tuple[str, ...]:
    """The CSV / array column(s) of a field: its name, or ``name_<width>`` per kernel width."""
    return tuple(f"{f.name}_{w}" for w in KERNEL_WIDTHS) if f.per_width else (f.name,)


def observed_names(f: RequestField) -> tuple[str, ...]:
    """The encoder's base quantities a field gives (a speedup at 32 bits is 1 by definition)."""
    if not f.observed:
        return ()
    return tuple(c for c in column_names(f) if not c.endswith("_32")) if f.per_width \
        else (f.name,)


def check_width_entries(f: RequestField, label: str, values: object) -> tuple[float, ...]:
    """A per-width field's SI entries: one finite number per kernel width, the 32-bit one 1."""
    k = len(KERNEL_WIDTHS)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise QsplitInputError(f"{label}: expected {k} numbers for widths {list(KERNEL_WIDTHS)}")
    if len(values) != k:  # type: ignore[arg-type]
        raise QsplitInputError(f"{label}: expected {k} entries for widths {list(KERNEL_WIDTHS)}, "
                               f"got {len(values)}")  # type: ignore[arg-type]
    out = tuple(f.check(v, f"{label}[{w}]")
                for w, v in zip(KERNEL_WIDTHS, values, strict=True))  # type: ignore[call-overload]
    if out[-1] != 1.0:
        raise QsplitInputError(f"{label}[32]: must be 1.0 (speedups are relative to fp32)")
    return out


def explain_flat(where: str, values: list[object]) -> QsplitInputError:
    """The precise error for flat values that failed a fast check (the first bad entry wins)."""
    n = len(SCALAR_NAMES)
    for name, v in zip(SCALAR_NAMES, values, strict=False):
        FIELD_BY_NAME[name].check(v, f"{where}.{name}")
    for i, f in enumerate(WIDTH_FIELDS):
        k = len(KERNEL_WIDTHS)
        check_width_entries(f, f"{where}.{f.name}", values[n + i * k:n + (i + 1) * k])
    return QsplitInputError(f"{where}: invalid request")
