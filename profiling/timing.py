"""Measured per-unit times (DESIGN.md §1a): time each unit on this host, import the tables a
user measured elsewhere, and fit the efficiencies and overheads that carry them to
processors known only by their FLOP/s.

Why: time proportional to MACs at one rate per processor misorders cuts (early layers run
slower per FLOP than late ones; small units are dominated by per-unit overhead). A profile
therefore carries, per processor, a table of measured fp32 unit times; the cost model uses
it where the request names that processor (``system.cost.unit_time``).

The fit, on the reference tables (those this host measured): per processor p and unit l

    t[p, l] = o_p + 2 macs[l] / (F_p eff[l])

with eff shared by all processors (a property of the unit) and o_p, F_p per processor,
by least squares on relative residuals (t_pred / t_meas - 1: units differ by orders of
magnitude in time), alternating between (o_p, F_p) per processor (o_p >= 0) and eff per
unit, both linear. eff is normalised to a MAC-weighted harmonic mean of 1
(sum macs/eff = sum macs), so a network's time at F is unchanged and F stays the
whole-network effective FLOP/s that catalog figures quote. A unit without MACs keeps
eff = 1 (its modelled time is o alone), and eff stays within [1e-4, 1e4] before
normalisation (a unit the overhead alone explains has no finite best eff). With one
reference processor eff is fitted exactly; with two or more (thread counts, machines) the
fit tests that eff belongs to the unit, and ``carried`` predicts each processor from the
others' eff and its own FLOP/s (and o) only, the case of a catalog processor.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from profiling.timecheck import mape
from system.cost import UnitTime
from system.errors import QsplitInputError, check_finite, shown
from system.loaders import cell_float, cell_int, parse_csv, read_text
from system.profiles import (
    MAX_UNIT_TIME_S,
    ModelProfile,
    TimeTable,
    UnitEfficiency,
    check_processor_name,
)

FIT_METHOD = ("least squares on relative residuals of t = o_p + 2 macs / (F_p eff), eff shared "
              "by the reference processors, MAC-weighted harmonic mean of eff = 1")
_ITERS = 5000
#: 1/eff is kept within [G_MIN, 1/G_MIN]: a unit whose time the overhead alone explains
#: (a tiny fc layer) has no finite best eff, and gets the bound.
G_MIN = 1e-4
#: The longest idle gap before a timed unit (``time-units --idle-ms``): 10 s.
MAX_IDLE_S = 10.0


def now_utc() -> str:
    """The date a measurement is recorded with (ISO 8601, UTC, seconds)."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def cpu_model() -> str:
    """This machine's CPU model as the OS reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def host_processor_name(threads: int) -> str:
    """``host-<cpu model>-<threads>t``: the processor a table measured here is recorded as."""
    slug = "-".join(re.findall(r"[a-z0-9]+", cpu_model().lower()))[:60] or "cpu"
    return f"host-{slug}-{threads}t"


# ----------------------------------------------------------------------------- timing (torch)

def time_units(units: Sequence[Any], x: Any, *, threads: int, repeats: int = 30,
               warmup: int = 5, idle_s: float = 0.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Median fp32 time of each unit at batch 1 on this host, and its provenance.

    ``units`` run in a chain from ``x`` (``profiling.profiler.split_units``). Each round
    times every unit on its own input, then the whole chain; rounds interleave the units so
    that a burst of load from elsewhere spreads over all of them. Torch runs on ``threads``
    threads (restored afterwards), in inference mode, after ``warmup`` untimed rounds.
    ``idle_s`` > 0 sleeps that long before each round's units (timed in chain order, as a
    head or a tail runs them) and before the whole chain: a unit run once per request after
    the link's idle time is slower than one run back to back (caches and the core's clock go
    cold), and a table meant for that use is timed that way. Its provenance records
    ``idle_ms``, and it is kept out of the eff fit (eff is the unit's warm speed).
    """
    import time

    import torch

    for flag, v, lo, hi in (("--threads", threads, 1, 1024), ("--repeats", repeats, 1, 1_000_000),
                            ("--warmup", warmup, 0, 1_000_000)):
        if not lo <= v <= hi:
            raise ValueError(f"{flag}: {v} is outside the allowed range [{lo}, {hi}]")
    check_finite("idle_s", idle_s, lo=0.0, hi=MAX_IDLE_S, unit="s")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            inputs = []
            y = x
            for u in units:
                inputs.append(y)
                y = u(y)
            samples = np.empty((repeats, len(units)))
            whole = np.empty(repeats)
            load0 = os.getloadavg()
            for r in range(-warmup, repeats):
                if idle_s > 0:
                    time.sleep(idle_s)
                for i, (u, xi) in enumerate(zip(units, inputs, strict=True)):
                    t0 = time.perf_counter()
                    u(xi)
                    if r >= 0:
                        samples[r, i] = time.perf_counter() - t0
                if idle_s > 0:
                    time.sleep(idle_s)
                t0 = time.perf_counter()
                y = x
                for u in units:
                    y = u(y)
                if r >= 0:
                    whole[r] = time.perf_counter() - t0
            load1 = os.getloadavg()
    finally:
        torch.set_num_threads(before)
    med = np.median(samples, axis=0)
    q1, q3 = np.percentile(samples, [25, 75], axis=0)
    prov = {
        "method": "profiler", "date": now_utc(),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.machine()} "
                   f"{platform.system()}",
        "torch": torch.__version__, "threads": threads, "repeats": repeats, "warmup": warmup,
        "batch": 1, "statistic": "median over repeats, units interleaved per round",
        "idle_ms": round(idle_s * 1e3, 3),
        "iqr_over_median_max": round(float(np.max((q3 - q1) / med)), 4),
        "whole_chain_median_s": float(np.median(whole)),
        "sum_of_units_over_whole": round(float(med.sum() / np.median(whole)), 4),
        "loadavg_1min": [round(load0[0], 2), round(load1[0], 2)],
    }
    return med, prov


# ----------------------------------------------------------------------------- fit (numpy)

def _solve_oc(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """min sum ((o + c x - t) / t)^2 over o >= 0, c > 0."""
    w = 1.0 / t ** 2
    a = np.array([[w.sum(), (w * x).sum()], [(w * x).sum(), (w * x * x).sum()]])
    rhs = np.array([(w * t).sum(), (w * x * t).sum()])
    if np.linalg.det(a) > 1e-12 * a[0, 0] * a[1, 1]:
        o, c = np.linalg.solve(a, rhs)
        if o >= 0.0 and c > 0.0:
            return float(o), float(c)
    return 0.0, float(rhs[1] / a[1, 1])


def _quality(pred: np.ndarray, t: np.ndarray) -> dict[str, float]:
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum((pred - t) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return {"r2": round(r2, 6), "mape": round(mape(pred, t), 6)}


def predict(macs: np.ndarray, eff: np.ndarray, flops_per_s: float, overhead_s: float) -> np.ndarray:
    """The modelled fp32 unit times: system.cost's UnitTime, the cost model's own formula."""
    return UnitTime(overhead_s, 2.0 * macs / eff, False).seconds(flops_per_s)


def fit_efficiency(macs: np.ndarray, tables: Mapping[str, np.ndarray]
                   ) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """eff (L,) and per processor F (flops_per_s), o (overhead_s) with R² and MAPE."""
    names = sorted(tables)
    T = np.array([tables[n] for n in names], dtype=np.float64)
    f = 2.0 * np.asarray(macs, dtype=np.float64)
    work = f > 0
    g = np.ones(len(f))
    oc = [(0.0, 0.0)] * len(names)
    prev = None
    for _ in range(_ITERS):
        oc = [_solve_oc(f * g, T[p]) for p in range(len(names))]
        o = np.array([v[0] for v in oc])[:, None]
        c = np.array([v[1] for v in oc])[:, None]
        w = 1.0 / T ** 2
        num = np.sum(w * c * f * (T - o), axis=0)
        den = np.sum(w * (c * f) ** 2, axis=0)
        g = np.where(work, np.clip(num / np.where(den > 0, den, 1.0), G_MIN, 1.0 / G_MIN), 1.0)
        pred = o + c * f * g
        if prev is not None and np.max(np.abs(pred / prev - 1.0)) < 1e-13:
            break
        prev = pred
    s = float(np.sum(f * g) / np.sum(f))
    eff = np.where(work, 1.0 / (g / s), 1.0)
    out = {}
    for p, n in enumerate(names):
        o_p, c_p = _solve_oc(f / eff, T[p])
        out[n] = {"flops_per_s": 1.0 / c_p, "overhead_s": o_p,
                  **_quality(predict(macs, eff, 1.0 / c_p, o_p), T[p])}
    return eff, out


def _total_rate(macs: np.ndarray, eff: np.ndarray, t: np.ndarray) -> float:
    """The effective FLOP/s a processor known only by its whole-network time would quote."""
    return float(np.sum(2.0 * macs / eff) / np.sum(t))


def compare_models(macs: np.ndarray, tables: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Per processor, the fit of MACs alone (F fitted), MACs with o, and the full §1a fit;
    and with two or more processors, each predicted from the others' eff and its own
    whole-network FLOP/s only (``carried``) against MACs alone at that FLOP/s."""
    ones = np.ones(len(macs))
    out: dict[str, Any] = {"macs_only": {}, "macs_overhead": {}}
    f = 2.0 * np.asarray(macs, dtype=np.float64)
    for n, t in sorted(tables.items()):
        c = float(np.sum(f * t / t ** 2) / np.sum(f * f / t ** 2))
        out["macs_only"][n] = {"flops_per_s": 1.0 / c, **_quality(predict(macs, ones, 1.0 / c, 0.0), t)}
        o, c = _solve_oc(f, t)
        out["macs_overhead"][n] = {"flops_per_s": 1.0 / c, "overhead_s": o,
                                   **_quality(predict(macs, ones, 1.0 / c, o), t)}
    if len(tables) >= 2:
        out["carried"] = {}
        for n, t in sorted(tables.items()):
            eff, _ = fit_efficiency(macs, {k: v for k, v in tables.items() if k != n})
            out["carried"][n] = _carried(macs, eff, t)
    return out


def _carried(macs: np.ndarray, eff: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """MAPE of ``t`` predicted with ``eff`` against eff = 1: from the whole-network FLOP/s
    alone (o = 0), and with F and o fitted to ``t`` (two numbers, as a catalog entry gives)."""
    ones = np.ones(len(macs))
    f = 2.0 * np.asarray(macs, dtype=np.float64)
    out = {}
    for key, e in (("eff", eff), ("macs", ones)):
        out[f"mape_{key}"] = _quality(predict(macs, e, _total_rate(macs, e, t), 0.0), t)["mape"]
        o, c = _solve_oc(f / e, t)
        out[f"mape_{key}_with_o"] = _quality(predict(macs, e, 1.0 / c, o), t)["mape"]
    return out


def reference_names(profile: ModelProfile) -> list[str]:
    """The tables eff is fitted on: those this project's profiler measured back to back (a
    table timed after idle gaps carries wake-up time, not the unit's speed)."""
    return sorted(n for n, t in profile.time_tables.items()
                  if t.provenance.get("method") == "profiler" and not t.provenance.get("idle_ms"))


def refit(profile: ModelProfile) -> ModelProfile:
    """The profile with eff fitted anew on its reference tables (none: no eff)."""
    ref = reference_names(profile)
    if not ref:
        return replace(profile, efficiency=None)
    tables = {n: profile.time_tables[n].time_s for n in ref}
    eff, per = fit_efficiency(profile.macs, tables)
    fit = {"method": FIT_METHOD, "date": now_utc(), "reference": ref, "processors": per,
           "comparison": compare_models(profile.macs, tables)}
    return replace(profile, efficiency=UnitEfficiency(eff, fit))


def with_table(profile: ModelProfile, processor: str, time_s: np.ndarray,
               provenance: dict[str, Any]) -> ModelProfile:
    """The profile with ``processor``'s table set (replaced if present), eff refitted."""
    check_processor_name("--processor", processor)
    tables = {**profile.time_tables, processor: TimeTable(np.asarray(time_s, dtype=np.float64),
                                                          provenance)}
    return refit(replace(profile, time_tables=tables))


def carried_fit(profile: ModelProfile, processor: str) -> dict[str, float]:
    """How well the profile's eff predicts ``processor``'s table from its FLOP/s (and o)."""
    eff = profile.efficiency.eff if profile.efficiency is not None else np.ones(profile.n_units)
    return _carried(profile.macs, eff, profile.time_tables[processor].time_s)


# ----------------------------------------------------------------------------- import (CSV)

def _time_cell(label: str, text: object, lo_open: bool) -> float:
    return check_finite(label, cell_float(label, text), lo=0.0, hi=MAX_UNIT_TIME_S,
                        lo_open=lo_open, unit="s")


def read_times_csv(path: str | Path, profile: ModelProfile) -> tuple[str, dict[str, np.ndarray]]:
    """A user's measured times: ``("units", {"time_s"})`` from rows ``unit,time_s`` or
    ``("splits", {"head", "tail"})`` per-unit times from rows ``split,head_time_s,tail_time_s``.

    Per-unit rows name every unit of the profile once (its name as in the profile). Per-split
    rows give every split 0..L once: the cumulative time of units 1..p on the device
    (head) and of units p+1..L on the server (tail); head times must increase with the
    split and tail times decrease, each unit's time being the difference.
    """
    where = f"times {Path(path).name}"
    rows = parse_csv(read_text(path, "times CSV"), where, ())
    if not rows:
        raise QsplitInputError(f"{where}: no rows; expected a header and one row per unit or split")
    header = set(rows[0][1])
    L, names = profile.n_units, list(profile.unit_names)
    if {"unit", "time_s"} <= header:
        seen: dict[str, int] = {}
        t = np.zeros(L)
        for line, r in rows:
            u = r["unit"].strip()
            if u not in names:
                raise QsplitInputError(f"{where} line {line}: unit {shown(u)} is not a unit of "
                                       f"{profile.name} ({', '.join(names)})")
            if u in seen:
                raise QsplitInputError(f"{where} line {line}: unit {u!r} already given on line {seen[u]}")
            seen[u] = line
            t[names.index(u)] = _time_cell(f"{where} line {line}: time_s", r["time_s"], True)
        missing = [n for n in names if n not in seen]
        if missing:
            raise QsplitInputError(f"{where}: missing unit(s) {missing}: every unit of "
                                   f"{profile.name} needs a row")
        return "units", {"time_s": t}
    if {"split", "head_time_s", "tail_time_s"} <= header:
        at: dict[int, tuple[int, float, float]] = {}
        for line, r in rows:
            p = cell_int(f"{where} line {line}: split", r["split"])
            if not 0 <= p <= L:
                raise QsplitInputError(f"{where} line {line}: split {p} is outside [0, {L}] "
                                       f"(units on the device; {profile.name} has {L})")
            if p in at:
                raise QsplitInputError(f"{where} line {line}: split {p} already given on line {at[p][0]}")
            at[p] = (line, _time_cell(f"{where} line {line}: head_time_s", r["head_time_s"], False),
                     _time_cell(f"{where} line {line}: tail_time_s", r["tail_time_s"], False))
        for col, k, sign, word in (("head_time_s", 1, 1.0, "above"), ("tail_time_s", 2, -1.0, "below")):
            for p in (q for q in range(1, L + 1) if q in at and q - 1 in at):
                (line, *now), (prev_line, *before) = at[p], at[p - 1]
                if not sign * (now[k - 1] - before[k - 1]) > 0:
                    raise QsplitInputError(
                        f"{where} line {line}: {col} {now[k - 1]:g} s at split {p} is not {word} "
                        f"{before[k - 1]:g} s at split {p - 1} (line {prev_line}): cumulative times "
                        f"must be monotone, else unit {names[p - 1]!r} takes no time")
        missing_p = [p for p in range(L + 1) if p not in at]
        if missing_p:
            raise QsplitInputError(f"{where}: missing split(s) {missing_p}: every split 0..{L} "
                                   "needs a row (its units' times are differences of neighbours)")
        head = np.array([at[p][1] for p in range(L + 1)])
        tail = np.array([at[p][2] for p in range(L + 1)])
        return "splits", {"head": np.diff(head), "tail": -np.diff(tail)}
    raise QsplitInputError(f"{where}: header {shown(sorted(header))} is neither per-unit "
                           "(unit,time_s) nor per-split (split,head_time_s,tail_time_s)")


def imported_tables(path: str | Path, profile: ModelProfile, processor: str,
                    tail_processor: str = "", note: str = "") -> dict[str, TimeTable]:
    """The tables a CSV gives: per-unit rows, or per-split rows whose head column is
    ``processor``'s and tail column ``tail_processor``'s (empty: the same processor, whose
    table is then the mean of the two columns' unit times, their disagreement recorded)."""
    check_processor_name("--processor", processor)
    kind, t = read_times_csv(path, profile)
    prov = {"method": f"import-{kind}", "date": now_utc(), "source": Path(path).name,
            **({"note": note} if note else {})}
    if kind == "units":
        return {processor: TimeTable(t["time_s"], prov)}
    if tail_processor and tail_processor != processor:
        check_processor_name("--tail-processor", tail_processor)
        return {processor: TimeTable(t["head"], {**prov, "column": "head_time_s"}),
                tail_processor: TimeTable(t["tail"], {**prov, "column": "tail_time_s"})}
    both = (t["head"] + t["tail"]) / 2.0
    gap = float(np.max(np.abs(t["head"] - t["tail"]) / both))
    return {processor: TimeTable(both, {**prov, "column": "mean of head and tail",
                                        "max_relative_gap": round(gap, 4)})}
