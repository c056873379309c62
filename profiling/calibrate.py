"""Sensitivity calibration: measure one tensor at a time at every width, fit the law, check it.

Why: the planner's accuracy model (DESIGN.md §1, ``system.accuracy``) is the additive law

    s(plan) = sum_{l<=p} sens_w[l] q(b_w[l]) + [0<p<L] sens_a[p] q(b_a),   q(b) = (2^b - 1)^-2,

mapped through a correction for compounding, drop = g(s) (``profiling.compounding``). Its
sensitivities must be measured on a real network and real data. Everything here works on a
network given as a chain of unit modules (``profiler.split_units``) and a labelled held-out
set (``profiling.chain``, quantizers in ``profiling.quantize``).

Rounding: **round-to-nearest**, as ``execution`` runs a plan (``execution.codec`` packs the
codes of ``profiling.quantize.weight_codes`` / ``activation_codes`` without a generator). So
every measurement is one deterministic top-1 evaluation; there are no rounding seeds.

One-tensor points: every weight tensor and every cut tensor at every width of the planner's
bit set below 32 (``system.bits.DEFAULT_BITS``: 2, 3, 4, 6, 8, 16); 32 is unquantized and
charged q(32), about 5e-20. Fit: least squares through the origin,
sens = sum_b q(b) d(b) / sum_b q(b)^2, over every width by default (``fit_cap_pp`` can leave
out points above a cap, but the widest two widths are always kept); negative estimates are
clipped to 0. Why no cap: with round-to-nearest a single tensor at 3 bits or more moves top-1
by a few decisions (at most 0.37 pp on the digits CNN, 1.26 pp on the digits ResNet), so the
2-bit point is the one that carries the sensitivity. A 5 pp cap dropped exactly that point
and made a tensor measured at 7 pp at 2 bits look like 0.55 pp. Least squares through the
origin is then set by the largest q(b) (2 bits); where the law does not carry that point to
the wider widths, the per-width table (:func:`law_table`: measured / fitted, per width, over
tensors) shows it, and the compounding correction g absorbs it on average.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profiling.chain import Chain, one_unit_plan
from system.bits import DEFAULT_BITS, q_noise

#: Every width the planner may choose below 32 (unquantized).
PLAN_BITS: tuple[int, ...] = tuple(b for b in DEFAULT_BITS if b < 32)
#: The resolution of a measured drop is one decision in ~1,350 (0.074 pp); a fitted drop
#: below this is not compared with its measurement in :func:`law_table`.
LAW_MIN_PRED_PP = 0.1


def fit_through_origin(
    bits: Sequence[int], drops_pp: Sequence[float], cap_pp: float
) -> tuple[float, list[int]]:
    """Least squares through the origin of drop = sens * q(b); returns sens and bits used.

    Points above ``cap_pp`` are left out (saturated: the small-noise law no longer applies),
    but the two widest widths are always kept so that every unit gets an estimate.
    """
    order = sorted(range(len(bits)), key=lambda i: -bits[i])
    used = [i for i in order if drops_pp[i] <= cap_pp]
    for i in order[:2]:
        if i not in used:
            used.append(i)
    q = q_noise(np.array([bits[i] for i in used]))
    d = np.array([drops_pp[i] for i in used])
    sens = float(q @ d / (q @ q))
    return max(sens, 0.0), sorted(bits[i] for i in used)


@dataclass
class Calibration:
    """Per-unit measured drops at each width and fitted sensitivities."""

    bits: tuple[int, ...]
    n_seeds: int            # 0: round-to-nearest (one deterministic evaluation per point)
    seed: int
    drops_w: dict[int, list[float]] = field(default_factory=dict)  # unit -> drop per bit width
    drops_a: dict[int, list[float]] = field(default_factory=dict)  # cut after unit -> drops
    sens_w: list[float] = field(default_factory=list)
    sens_a: list[float] = field(default_factory=list)
    fit_bits_w: dict[int, list[int]] = field(default_factory=dict)
    fit_bits_a: dict[int, list[int]] = field(default_factory=dict)
    seconds: float = 0.0


def calibrate(
    chain: Chain,
    bits: Sequence[int] = PLAN_BITS,
    n_seeds: int = 0,
    seed: int = 0,
    fit_cap_pp: float = float("inf"),
) -> Calibration:
    """Quantize one unit's weights or one cut tensor at a time, measure, fit sens_w / sens_a.

    ``n_seeds = 0`` is round-to-nearest (what execution does); n > 0 averages n
    stochastic-rounding draws instead.
    """
    t0 = time.perf_counter()
    L = chain.n_units
    cal = Calibration(tuple(bits), n_seeds, seed)

    def fit(i: int, kind: str, drops: dict[int, list[float]],
            fit_bits: dict[int, list[int]]) -> float:
        """Measure unit i's drop at every width (weights or its output tensor), fit the slope."""
        d = [float(chain.drop_pp(one_unit_plan(L, i, **{kind: b}), n_seeds, seed).mean())
             for b in bits]
        drops[i] = d
        s, fit_bits[i] = fit_through_origin(bits, d, fit_cap_pp)
        return s

    for i in range(L):
        cal.sens_w.append(fit(i, "w_bits", cal.drops_w, cal.fit_bits_w)
                          if chain.has_weights(i) else 0.0)
        cal.sens_a.append(fit(i, "a_bits", cal.drops_a, cal.fit_bits_a) if i < L - 1 else 0.0)
    cal.seconds = time.perf_counter() - t0
    return cal


def law_table(cal: Calibration, min_pred_pp: float = LAW_MIN_PRED_PP) -> list[dict[str, Any]]:
    """Per width: how the one-tensor measurements compare with the fitted law sens q(b).

    For each width b, over every measured tensor (weights and cut tensors alike) whose
    fitted drop sens q(b) is at least ``min_pred_pp``: the median and the 10-90% range of
    measured / fitted. Tensors below it are summarised by their largest |measured| drop,
    which says whether the law's "about nothing" holds there.
    """
    rows = []
    for j, b in enumerate(cal.bits):
        ratios, small = [], []
        for sens_list, drops in ((cal.sens_w, cal.drops_w), (cal.sens_a, cal.drops_a)):
            for i, d in drops.items():
                pred = sens_list[i] * float(q_noise(b))
                (ratios if pred >= min_pred_pp else small).append(
                    d[j] / pred if pred >= min_pred_pp else abs(d[j]))
        r = np.array(ratios)
        rows.append({
            "bits": b,
            "tensors_compared": len(ratios),
            "ratio_median": round(float(np.median(r)), 3) if r.size else None,
            "ratio_q10": round(float(np.quantile(r, 0.1)), 3) if r.size else None,
            "ratio_q90": round(float(np.quantile(r, 0.9)), 3) if r.size else None,
            "tensors_below": len(small),
            "below_max_abs_pp": round(max(small), 4) if small else None,
        })
    return rows


def law_table_text(rows: list[dict[str, Any]]) -> str:
    """The per-width table as aligned text (benchmark output)."""
    out = ["  bits  compared  measured/fitted median [q10, q90]   below  max|measured| pp"]
    for r in rows:
        med = "-" if r["ratio_median"] is None else (
            f"{r['ratio_median']:6.2f} [{r['ratio_q10']:.2f}, {r['ratio_q90']:.2f}]")
        below = "-" if r["below_max_abs_pp"] is None else f"{r['below_max_abs_pp']:.3f}"
        out.append(f"  {r['bits']:>4}  {r['tensors_compared']:>8}  {med:<34} "
                   f"{r['tensors_below']:>5}  {below}")
    return "\n".join(out)
