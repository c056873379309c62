"""How well a per-unit time model serves the cut: MAPE per unit and per cut, and cut regret.

Why: a planner never uses one unit's time alone; it compares cuts, i.e. a head's time
(sum over units 1..p on the device) and a tail's (units p+1..L on the server). A model can
be off per unit and right per cut (errors cancel in the sums) or the reverse, so both are
reported; and what finally counts is the latency measured at the cut a model chooses, over
the best measured one (the regret). numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from system.errors import QsplitInputError


def _positive(name: str, t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or not np.all(t > 0):
        raise QsplitInputError(f"{name}: expected a non-empty 1-D array of times > 0 s")
    return t


def macs_only_times(macs: np.ndarray, measured_s: np.ndarray) -> np.ndarray:
    """t = 2 macs / F with F fitted to the total (sum t = sum measured): the model before §1a.
    A unit without MACs costs nothing in it."""
    t = _positive("measured_s", measured_s)
    f = 2.0 * np.asarray(macs, dtype=np.float64)
    if f.shape != t.shape or f.sum() <= 0:
        raise QsplitInputError(f"macs: expected {t.size} values with a positive sum")
    return f * (t.sum() / f.sum())


def head_tail_sums(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(head[p] for p = 1..L, tail[p] for p = 0..L-1): the times a cut at p puts on each side
    (the empty head of p = 0 and the empty tail of p = L are left out)."""
    t = np.asarray(t, dtype=np.float64)
    c = np.cumsum(t)
    return c, c[-1] - np.r_[0.0, c[:-1]]


def mape(pred: np.ndarray, meas: np.ndarray) -> float:
    """Mean of |pred / meas - 1| (meas > 0)."""
    m = _positive("meas", meas)
    p = np.asarray(pred, dtype=np.float64)
    if p.shape != m.shape:
        raise QsplitInputError(f"pred: {p.size} values for {m.size} measured")
    return float(np.mean(np.abs(p / m - 1.0)))


def mape_per_cut(pred: np.ndarray, meas: np.ndarray) -> float:
    """MAPE over every cut's head time and tail time (2 L figures)."""
    ph, pt = head_tail_sums(pred)
    mh, mt = head_tail_sums(_positive("meas", meas))
    return mape(np.r_[ph, pt], np.r_[mh, mt])


def chosen_cut(latency_s: Mapping[int, float]) -> int:
    """The cut of least latency (the lowest such cut on a tie: deterministic)."""
    if not latency_s:
        raise QsplitInputError("latency_s: no cuts to choose from")
    return min(sorted(latency_s), key=lambda p: latency_s[p])


def cut_regret(measured_s: Mapping[int, float], cut: int) -> float:
    """Measured latency at ``cut`` over the least measured latency of all cuts, minus 1."""
    if cut not in measured_s:
        raise QsplitInputError(f"cut: {cut} was not measured (cuts {sorted(measured_s)})")
    best = min(measured_s.values())
    if not best > 0:
        raise QsplitInputError(f"measured_s: latencies must be > 0 s, got {best:g}")
    return float(measured_s[cut] / best - 1.0)
