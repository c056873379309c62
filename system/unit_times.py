"""Measured per-unit times of a profile (DESIGN.md §1a): the tables and fitted efficiencies,
and their strict JSON form (the ``unit_times`` key of a profile)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from system.errors import QsplitInputError, check_finite, check_keys, shown

#: How a measured time table was obtained (its provenance's ``method``).
TIME_METHODS = ("profiler", "import-units", "import-splits")
#: A processor name: what a request's ``device`` or ``server`` label is matched against.
PROCESSOR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,99}")
MAX_UNIT_TIME_S = 1e6


@dataclass(frozen=True, eq=False)
class TimeTable:
    """Measured fp32 time of every unit on one processor at batch 1 (DESIGN.md §1a), and how
    it was measured (``provenance``: method, date, machine, threads, repeats, source ...)."""

    time_s: np.ndarray
    provenance: dict


@dataclass(frozen=True, eq=False)
class UnitEfficiency:
    """eff[l]: a unit's speed relative to its MAC share, fitted on reference processors and
    carried to processors that have only FLOP/s; ``fit`` records the fit and its quality."""

    eff: np.ndarray
    fit: dict


def check_processor_name(where: str, name: object) -> str:
    """A processor name (1-100 letters, digits, '_', '.', '+', '@' or '-')."""
    if not isinstance(name, str) or not PROCESSOR_NAME.fullmatch(name):
        raise QsplitInputError(f"{where}: {shown(name)} is not a processor name (1-100 letters, "
                               "digits, '_', '.', '+', '@' or '-', not starting with a sign)")
    return name


def _per_unit(where: str, values: object, n: int, lo: float, hi: float, unit: str) -> np.ndarray:
    if not isinstance(values, list) or len(values) != n:
        raise QsplitInputError(f"{where}: expected a list of {n} numbers (one per unit) in {unit}")
    return np.array([check_finite(f"{where}[{i}]", v, lo=lo, hi=hi, lo_open=True, unit=unit)
                     for i, v in enumerate(values)], dtype=np.float64)


def _unit_times(where: str, data: object, macs: np.ndarray
                ) -> tuple[dict[str, TimeTable], UnitEfficiency | None]:
    """The measured time tables and fitted efficiencies of a profile (DESIGN.md §1a)."""
    if data is None:
        return {}, None
    d = check_keys(where, data, ("tables",), ("eff", "fit"))
    if not isinstance(d["tables"], dict):
        raise QsplitInputError(f"{where}.tables: expected an object keyed by processor name")
    tables = {}
    for name, t in d["tables"].items():
        tw = f"{where}.tables[{name!r}]"
        check_processor_name(tw, name)
        t = check_keys(tw, t, ("time_s", "provenance"))
        prov = t["provenance"]
        if not isinstance(prov, dict) or not isinstance(prov.get("date"), str):
            raise QsplitInputError(f"{tw}.provenance: expected an object with at least 'method' "
                                   "and 'date' (how and when the times were measured)")
        if prov.get("method") not in TIME_METHODS:
            raise QsplitInputError(f"{tw}.provenance.method: {shown(prov.get('method'))} is not one "
                                   f"of {list(TIME_METHODS)}")
        tables[name] = TimeTable(_per_unit(f"{tw}.time_s", t["time_s"], len(macs), 0.0,
                                           MAX_UNIT_TIME_S, "s"), prov)
    if ("eff" in d) != ("fit" in d):
        raise QsplitInputError(f"{where}: eff and fit go together (the efficiencies and the fit "
                               "they come from)")
    if "eff" not in d:
        return tables, None
    eff = _per_unit(f"{where}.eff", d["eff"], len(macs), 0.0, 1e6, "(unitless)")
    idle = np.flatnonzero((macs == 0) & (eff != 1.0))
    if idle.size:
        raise QsplitInputError(f"{where}.eff[{idle[0]}]: {eff[idle[0]]:g} on a unit without MACs; "
                               "expected 1")
    mean = float(np.sum(macs / eff) / np.sum(macs))
    if abs(mean - 1.0) > 1e-9:
        raise QsplitInputError(f"{where}.eff: MAC-weighted harmonic mean {mean:.12g}; expected 1 "
                               "(sum macs/eff = sum macs, within 1e-9)")
    fit = check_keys(f"{where}.fit", d["fit"], ("method", "reference", "processors"),
                     ("comparison", "date", "carried"))
    ref = fit["reference"]
    if not isinstance(ref, list) or not ref or any(r not in tables for r in ref):
        raise QsplitInputError(f"{where}.fit.reference: expected a non-empty list of the names "
                               f"of tables in {where}.tables, got {shown(ref)}")
    return tables, UnitEfficiency(eff, fit)
