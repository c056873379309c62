"""Devices and servers: effective compute, kernel speedups and powers, with their sources.

The catalog lives in ``system/data/hardware.json`` (package data); every entry names the
public figure it comes from, and which numbers are derived or assumed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from system.bits import KERNEL_WIDTHS
from system.errors import QsplitInputError, check_finite, check_keys


def parse_kappa(field_name: str, table: object) -> tuple[float, ...]:
    """Turn ``{"32": 1, "8": 3.2}`` into a vector over :data:`KERNEL_WIDTHS` (0 = no kernel)."""
    if not isinstance(table, dict):
        raise QsplitInputError(f"{field_name}: expected an object keyed by kernel width")
    out = [0.0] * len(KERNEL_WIDTHS)
    for key, value in table.items():
        try:
            width = int(key)
        except (TypeError, ValueError):
            width = -1
        if width not in KERNEL_WIDTHS:
            raise QsplitInputError(
                f"{field_name}: kernel width {key!r} is not one of {list(KERNEL_WIDTHS)}")
        out[KERNEL_WIDTHS.index(width)] = check_finite(
            f"{field_name}[{key}]", value, lo=0.0, lo_open=True)
    if out[KERNEL_WIDTHS.index(32)] != 1.0:
        raise QsplitInputError(f"{field_name}[32]: must be 1.0 (speedups are relative to fp32)")
    return tuple(out)


def kappa_to_dict(kappa: tuple[float, ...]) -> dict[str, float]:
    """Inverse of :func:`parse_kappa`, for JSON output."""
    return {str(w): float(k) for w, k in zip(KERNEL_WIDTHS, kappa, strict=True) if k > 0}


@dataclass(frozen=True)
class UnitTiming:
    """How a processor's per-unit time is modelled where no table was measured on it
    (DESIGN.md §1a): t[l](b) = overhead_s + 2 macs[l] / (F eff[l] kappa(b)).

    ``carry_eff``: use the profile's fitted unit efficiencies on this processor (else
    eff = 1). Both are off by default: each changes the decisions of every request that
    names the processor, so a catalog entry turns them on with its evidence.
    """

    overhead_s: float = 0.0     # per-unit overhead (launch, dispatch), not sped up by kappa
    carry_eff: bool = False
    overhead_source: str = field(default="", compare=False)


UNIFORM = UnitTiming()
#: Optional catalog keys of a processor's unit timing.
_TIMING_KEYS = ("overhead_s", "overhead_source", "carry_eff")


def _timing(where: str, e: dict) -> UnitTiming:
    """The catalog entry's unit timing; a nonzero overhead must cite its source."""
    o = check_finite(f"{where}: overhead_s", e.get("overhead_s", 0.0), lo=0.0, hi=1.0, unit="s")
    src = e.get("overhead_source", "")
    if not isinstance(src, str) or (o > 0 and not src.strip()):
        raise QsplitInputError(f"{where}: overhead_source: expected the source of overhead_s "
                               f"{o:g} s as text")
    carry = e.get("carry_eff", False)
    if not isinstance(carry, bool):
        raise QsplitInputError(f"{where}: carry_eff: expected true or false, got {carry!r}")
    return UnitTiming(overhead_s=o, carry_eff=carry, overhead_source=src)


@lru_cache(maxsize=256)
def processor_timing(name: str) -> UnitTiming:
    """The unit timing of a catalog device or server by name; a name outside the catalog
    (or empty) has none: eff = 1 and no overhead, the MAC-proportional model."""
    cat = _catalog()
    for kind in ("devices", "servers"):
        if name in cat[kind]:
            return _timing(f"{kind[:-1]} {name}", cat[kind][name])
    return UNIFORM


@dataclass(frozen=True)
class Device:
    """A device that runs the head of the network and talks over a radio."""

    name: str
    flops_per_s: float          # effective fp32 FLOP/s at batch 1
    kappa: tuple[float, ...]    # speedup per kernel width in KERNEL_WIDTHS, 0 = none
    p_comp_w: float             # power while computing
    p_tx_w: float               # power while transmitting
    p_rx_w: float               # power while receiving
    p_idle_w: float             # power while waiting for the server
    label: str = ""
    source: str = field(default="", compare=False)
    timing: UnitTiming = field(default_factory=lambda: UNIFORM)

    def __post_init__(self) -> None:
        check_finite(f"device {self.name}: flops_per_s", self.flops_per_s, lo=0.0, lo_open=True)
        for f in ("p_comp_w", "p_tx_w", "p_rx_w", "p_idle_w"):
            check_finite(f"device {self.name}: {f}", getattr(self, f), lo=0.0)


@dataclass(frozen=True)
class Server:
    """The edge server that holds the network and runs the tail at fp32.

    Only its compute enters the cost (the tail runs at fp32 and the device's energy is what
    is counted); the catalog also records its kernel speedups and power, for readers.
    """

    name: str
    flops_per_s: float          # effective fp32 FLOP/s at batch 1
    label: str = ""
    source: str = field(default="", compare=False)
    timing: UnitTiming = field(default_factory=lambda: UNIFORM)

    def __post_init__(self) -> None:
        check_finite(f"server {self.name}: flops_per_s", self.flops_per_s, lo=0.0, lo_open=True)


@lru_cache(maxsize=1)
def _catalog() -> dict:
    text = resources.files("system").joinpath("data/hardware.json").read_text(encoding="utf-8")
    return json.loads(text)


def _entry(kind: str, name: str) -> dict:
    table = _catalog()[kind]
    if name not in table:
        raise QsplitInputError(f"{kind[:-1]}: unknown name {name!r}; known: {sorted(table)}")
    return table[name]


def device_names() -> list[str]:
    """Names of the catalog's devices."""
    return sorted(_catalog()["devices"])


def server_names() -> list[str]:
    """Names of the catalog's servers."""
    return sorted(_catalog()["servers"])


def get_device(name: str) -> Device:
    """A catalog device by name (see :func:`device_names`)."""
    e = check_keys(f"device {name}", _entry("devices", name),
                   ["label", "gflops", "kappa", "p_comp_w", "p_tx_w", "p_rx_w", "p_idle_w",
                    "source"], _TIMING_KEYS)
    return Device(name=name, flops_per_s=float(e["gflops"]) * 1e9,
                  kappa=parse_kappa(f"device {name}: kappa", e["kappa"]),
                  p_comp_w=e["p_comp_w"], p_tx_w=e["p_tx_w"], p_rx_w=e["p_rx_w"],
                  p_idle_w=e["p_idle_w"], label=e["label"], source=e["source"],
                  timing=_timing(f"device {name}", e))


def get_server(name: str) -> Server:
    """A catalog server by name (see :func:`server_names`)."""
    e = check_keys(f"server {name}", _entry("servers", name),
                   ["label", "gflops", "kappa", "p_comp_w", "source"], _TIMING_KEYS)
    parse_kappa(f"server {name}: kappa", e["kappa"])
    check_finite(f"server {name}: p_comp_w", e["p_comp_w"], lo=0.0, unit="W")
    return Server(name=name, flops_per_s=float(e["gflops"]) * 1e9, label=e["label"],
                  source=e["source"], timing=_timing(f"server {name}", e))


def catalog_entries(kind: str) -> dict[str, dict]:
    """The catalog's ``devices`` or ``servers`` as written (units and sources), each validated.

    Includes the figures the cost model does not read (a server's kernel speedups and power).
    """
    load = get_device if kind == "devices" else get_server
    out = {}
    for name in sorted(_catalog()[kind]):
        load(name)
        out[name] = dict(_entry(kind, name))
    return out
