"""A request: the state the planner decides on (device, server, channel, budget, weights).

Internally everything is SI (FLOP/s, bit/s, s, W, J). The JSON form a user writes uses the
units people quote (GFLOP/s, Mbit/s, ms) and says so in every field name. Every field's
name, unit, range and JSON form comes from :data:`system.fields.REQUEST_FIELDS`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from system.bits import KERNEL_WIDTHS
from system.errors import QsplitInputError, check_finite, check_keys, interval_text, shown
from system.fields import (
    FIELD_BY_NAME,
    LABELS,
    REQUEST_FIELDS,
    SCALAR_NAMES,
    WIDTH_FIELDS,
    check_width_entries,
    column_names,
)
from system.hardware import Device, Server, get_device, get_server, kappa_to_dict, parse_kappa
from system.loaders import cell_float, parse_json, read_stdin, read_text

if TYPE_CHECKING:
    from system.fields import RequestField


@dataclass(frozen=True)
class Request:
    """Everything one decision depends on. Validated on construction; nothing is clamped.

    Copy or convert one with ``dataclasses.replace`` and ``dataclasses.asdict``: an instance
    also holds :attr:`flat_row`, which is not a field (so ``vars()`` is not the fields).
    """

    dev_flops_per_s: float      # device effective fp32 FLOP/s
    dev_kappa: tuple[float, ...]  # device speedup per kernel width (KERNEL_WIDTHS), 0 = none
    p_comp_w: float             # device power computing
    p_tx_w: float               # device power transmitting
    p_rx_w: float               # device power receiving
    p_idle_w: float             # device power waiting for the server
    srv_flops_per_s: float      # server effective fp32 FLOP/s
    srv_load: float             # share of the server available to this request, (0, 1]
    up_bps: float               # uplink rate
    down_bps: float             # downlink rate
    rtt_s: float                # round-trip time
    eps_pp: float               # accuracy budget, percentage points of top-1
    beta_s_per_j: float = 0.0   # energy weight: cost = latency_s + beta * energy_j
    reuse: float = 1.0          # inferences served by one shipped head (1 = ship per request)
    device: str = ""            # label only
    server: str = ""            # label only

    def __post_init__(self) -> None:
        flat = [FIELD_BY_NAME[name].check(getattr(self, name)) for name in SCALAR_NAMES]
        for f in WIDTH_FIELDS:
            flat.extend(check_width_entries(f, f.name, getattr(self, f.name)))
        # the values as checked, in the flat order (system.fields.FLAT_NAMES): the batch
        # runtime reads a request's row from here instead of field by field
        object.__setattr__(self, "flat_row", tuple(flat))

    #: The request's values in the flat order of :data:`system.fields.FLAT_NAMES` (SI, floats),
    #: made by the validation on construction and set on each instance (declared ClassVar so
    #: that it is not a dataclass field: not an argument, not compared, not in repr).
    flat_row: ClassVar[tuple[float, ...]]

    @classmethod
    def make(cls, device: Device, server: Server, *, up_bps: float, down_bps: float,
             rtt_s: float, eps_pp: float, beta_s_per_j: float = 0.0, reuse: float = 1.0,
             srv_load: float = 1.0, dev_speed_factor: float = 1.0) -> Request:
        """A request for catalog hardware; ``dev_speed_factor`` scales the device's FLOP/s."""
        values = catalog_values(device, server)
        values["dev_flops_per_s"] = values["dev_flops_per_s"] * dev_speed_factor  # type: ignore[operator]
        return cls(**values, srv_load=srv_load, up_bps=up_bps,  # type: ignore[arg-type]
                   down_bps=down_bps, rtt_s=rtt_s, eps_pp=eps_pp, beta_s_per_j=beta_s_per_j,
                   reuse=reuse, device=device.name, server=server.name)

    def with_budget(self, eps_pp: float) -> Request:
        """The same request with another accuracy budget."""
        return replace(self, eps_pp=eps_pp)

    def to_json_dict(self) -> dict:
        """The user-facing JSON form (GFLOP/s, Mbit/s, ms), fully explicit."""
        out: dict[str, object] = {
            f.json_key: kappa_to_dict(getattr(self, f.name)) if f.per_width
            else f.to_json(getattr(self, f.name)) for f in REQUEST_FIELDS}
        out.update({k: getattr(self, k) for k in LABELS if getattr(self, k)})
        return out


if tuple(f.name for f in fields(Request)) != (*(f.name for f in REQUEST_FIELDS), *LABELS):
    raise ImportError("system.request: Request's attributes differ from REQUEST_FIELDS")

#: JSON-only keys: catalog entries that fill in fields, and a speed factor on the device.
_JSON_EXTRAS: dict[str, str] = {
    "device": "catalog device name (optional if every dev_* and p_* field is given)",
    "server": "catalog server name (optional if srv_gflops is given)",
    "dev_speed_factor": "multiplier on the device's compute (load, DVFS), (0, inf); default 1",
}
#: Fields of the request JSON, with units, ranges and defaults.
REQUEST_JSON_FIELDS: dict[str, str] = {**_JSON_EXTRAS,
                                       **{f.json_key: f.help() for f in REQUEST_FIELDS}}
_REQUIRED = tuple(f.json_key for f in REQUEST_FIELDS if f.default is None and not f.catalog)


def catalog_values(device: Device | None, server: Server | None) -> dict[str, object]:
    """The SI values of the fields that these catalog entries supply (see RequestField.catalog)."""
    entries: dict[str, Device | Server | None] = {"device": device, "server": server}
    out: dict[str, object] = {}
    for f in REQUEST_FIELDS:
        kind, _, attr = f.catalog.partition(".")
        if f.catalog and entries[kind] is not None:
            out[f.name] = getattr(entries[kind], attr)
    return out


def request_from_json_dict(data: object, where: str = "request") -> Request:
    """Build a request from its JSON form; errors name the field as written, unit and range."""
    d = check_keys(where, data, _REQUIRED, [k for k in REQUEST_JSON_FIELDS if k not in _REQUIRED])
    for k in LABELS:
        if k in d and not isinstance(d[k], str):
            raise QsplitInputError(f"{k}: expected a catalog {k} name, got {shown(d[k])}")
    named = _catalog_si(d.get("device"), d.get("server"))
    values: dict[str, object] = {}
    for f in REQUEST_FIELDS:
        if f.json_key in d:
            raw = d[f.json_key]
        elif f.name in named:
            values[f.name] = named[f.name]
            continue
        elif f.catalog:
            raise QsplitInputError(f"{where}: missing {f.json_key!r} ({f.help()}); give it "
                                   f"or name a catalog {f.catalog.split('.')[0]}")
        else:
            raw = f.default
        values[f.name] = parse_kappa(f.json_key, raw) if f.per_width \
            else _si(f, f.check_json(raw))
    values["dev_flops_per_s"] = _scaled_device(values["dev_flops_per_s"],  # type: ignore[arg-type]
                                               d.get("dev_speed_factor", 1.0))
    return Request(**values, device=str(d.get("device", "")),  # type: ignore[arg-type]
                   server=str(d.get("server", "")))


@lru_cache(maxsize=256)
def _catalog_si(device: str | None, server: str | None) -> dict[str, object]:
    """What named catalog entries supply, each value written as a user would write it and
    read back the same way (so it passes the checks a written value passes); made once per
    pair of names, as the catalog does not change. Unknown names raise (never cached)."""
    named = catalog_values(get_device(device) if device is not None else None,
                           get_server(server) if server is not None else None)
    return {f.name: parse_kappa(f.json_key, kappa_to_dict(named[f.name])) if f.per_width
            else _si(f, f.check_json(f.to_json(named[f.name])))  # type: ignore[arg-type]
            for f in REQUEST_FIELDS if f.name in named}


def _finite_range(f: RequestField) -> str:
    """The range of ``f`` in JSON units, its top cut to the largest value finite in SI units."""
    top, hi = f.to_json(sys.float_info.max), f.to_json(f.hi)
    rng = interval_text(f.to_json(f.lo), min(hi, top), f.lo_open, f.hi_open and hi <= top)
    return f"{rng} {f.json_units}" + (f" (larger is not finite in {f.unit})" if top < hi else "")


def _si(f: RequestField, x: float) -> float:
    """A JSON value (checked) in SI units; one too large to stay finite there is refused."""
    si = f.to_si(x)
    if not math.isfinite(si):
        raise QsplitInputError(f"{f.json_key}: {x:g} is outside the allowed range {_finite_range(f)}")
    return si


def _scaled_device(flops_per_s: float, factor: object) -> float:
    """Device FLOP/s times ``dev_speed_factor``; a product that leaves (0, inf) names the factor."""
    speed = check_finite("dev_speed_factor", factor, lo=0.0, lo_open=True)
    out = flops_per_s * speed
    f = FIELD_BY_NAME["dev_flops_per_s"]
    if not (math.isfinite(out) and out > 0.0):
        raise QsplitInputError(
            f"dev_speed_factor: {speed:g} times {f.json_key} {f.to_json(flops_per_s):g} gives "
            f"{f.to_json(out):g} {f.json_units}; the product must lie in {_finite_range(f)}")
    return out


#: Request columns of a CSV row (SI units, as Request holds them; kappa split per width).
REQUEST_COLUMNS: tuple[str, ...] = (*LABELS, *(c for f in REQUEST_FIELDS for c in column_names(f)))


def request_to_row(r: Request) -> dict[str, object]:
    """A request as CSV columns (:data:`REQUEST_COLUMNS`)."""
    row: dict[str, object] = {k: getattr(r, k) for k in LABELS}
    for f in REQUEST_FIELDS:
        v = getattr(r, f.name)
        row.update(zip(column_names(f), v, strict=True) if f.per_width else {f.name: v})
    return row


def _number(label: str, value: object) -> float:
    """A number from a CSV cell (text) or a mapping (a number)."""
    return cell_float(label, value) if isinstance(value, str) else check_finite(label, value)


def request_from_row(row: Mapping[str, object], where: str = "row") -> Request:
    """The request a CSV row records (the inverse of :func:`request_to_row`)."""
    missing = [c for c in REQUEST_COLUMNS if c not in row]
    if missing:
        raise QsplitInputError(f"{where}: missing column(s) {missing}")
    values: dict[str, object] = {}
    for f in REQUEST_FIELDS:
        cols = column_names(f)
        nums = [_number(f"{where}.{c}", row[c]) for c in cols]
        values[f.name] = check_width_entries(f, f"{where}.{f.name}", nums) if f.per_width \
            else f.check(nums[0], f"{where}.{f.name}")
    return Request(**values, **{k: str(row[k]) for k in LABELS})  # type: ignore[arg-type]


def request_arrays(requests: list[Request] | tuple[Request, ...]) -> dict[str, np.ndarray]:
    """The fields of N requests as float64 arrays: (N,) per scalar, (N, widths) per-width."""
    n = len(requests)
    out = {f: np.fromiter((getattr(r, f) for r in requests), dtype=np.float64, count=n)
           for f in SCALAR_NAMES}
    for f in WIDTH_FIELDS:
        out[f.name] = np.asarray([getattr(r, f.name) for r in requests],
                                 dtype=np.float64).reshape(n, len(KERNEL_WIDTHS))
    return out


def requests_from_arrays(arrays: Mapping[str, np.ndarray],
                         labels: Mapping[str, np.ndarray] | None = None) -> tuple[Request, ...]:
    """Requests from :func:`request_arrays`' form (validated by Request), labels optional."""
    n = len(arrays[SCALAR_NAMES[0]])
    cols = {f: np.asarray(arrays[f], dtype=np.float64).tolist() for f in SCALAR_NAMES}
    widths = {f.name: [tuple(x) for x in np.asarray(arrays[f.name], dtype=np.float64).reshape(
        n, len(KERNEL_WIDTHS)).tolist()] for f in WIDTH_FIELDS}
    text = {k: [str(x) for x in labels[k]] if labels is not None and k in labels else [""] * n
            for k in LABELS}
    return tuple(Request(**{f: cols[f][i] for f in SCALAR_NAMES},
                         **{f: widths[f][i] for f in widths},
                         **{k: text[k][i] for k in LABELS}) for i in range(n))


def request_from_json_text(text: str, where: str = "request") -> Request:
    """Parse a request from JSON text; errors name ``where`` and the field."""
    return request_from_json_dict(parse_json(text, where), where=where)


def load_request_file(path: str | Path) -> Request:
    """Read a request JSON file (``-``: standard input); errors name the file and the field."""
    if str(path) == "-":
        return request_from_json_text(read_stdin("request <stdin>"), where="request <stdin>")
    p = Path(path)
    return request_from_json_text(read_text(p, "request"), where=f"request {p.name}")


def random_request(rng, device: str | None = None, server: str = "t4") -> Request:
    """A random but plausible request over the catalog (tests and benchmarks need many).

    Rates log-uniform 0.1-300 Mbit/s up and 0.3-1000 down, RTT 5-200 ms, budget log-uniform
    0.03-6 pp, beta from {0, 0.01, 0.1, 1} s/J, reuse from {1, 10, 1000}.
    """
    from system.hardware import device_names

    name = device if device is not None else str(rng.choice(device_names()))
    return Request.make(
        get_device(name), get_server(server),
        up_bps=float(10 ** rng.uniform(5.0, 8.5)), down_bps=float(10 ** rng.uniform(5.5, 9.0)),
        rtt_s=float(rng.uniform(0.005, 0.2)), eps_pp=float(10 ** rng.uniform(-1.5, 0.8)),
        beta_s_per_j=float(rng.choice([0.0, 0.01, 0.1, 1.0])),
        reuse=float(rng.choice([1.0, 1.0, 10.0, 1000.0])), srv_load=float(rng.uniform(0.2, 1.0)),
        dev_speed_factor=float(rng.uniform(0.5, 1.5)))
