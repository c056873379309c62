"""The whole planning problem as one mixed-integer programme, for checking the exact solver.

Binary variables: y[p, a] (cut p with activation bits a; one per cut at p = 0 and p = L,
where no activation is quantized) and x[l, k] (unit l on the device at weight bits k).
    min  sum fixed[p, a] y[p, a] + sum c_w[l, k] x[l, k]
    s.t. sum y = 1;  sum_k x[l, k] = sum_{p > l} sum_a y[p, a]  (unit l is on the device
         exactly when the cut is after it);  sum d_w x + sum d_a y <= eps.
Solved with ``scipy.optimize.milp`` (HiGHS) at ``mip_rel_gap=0``. The objective is scaled so
HiGHS's absolute gap is negligible, and the budget row so its feasibility slack is too; the
returned plan is re-costed with :mod:`system.cost`, never read off the solver's objective.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from system.accuracy import drop_limit_pp
from system.bits import DEFAULT_BITS
from system.cost import unit_tables
from system.plan import Plan
from system.profiles import ModelProfile
from system.request import Request


def solve_milp(profile: ModelProfile, req: Request, bits: tuple[int, ...] = DEFAULT_BITS,
               time_limit_s: float = 60.0) -> Plan:
    """The optimal plan found by HiGHS (raises RuntimeError if HiGHS reports no optimum)."""
    T = unit_tables(profile, req, bits)
    L, K = T.c_w.shape
    a32 = T.bits.index(32)
    ys = [(p, a) for p in range(L + 1) for a in range(K) if (0 < p < L) or a == a32]
    ny, nx = len(ys), L * K
    obj = np.concatenate([[T.fixed[p, a] for p, a in ys], T.c_w.ravel()])
    scale = 1e6 / max(float(T.fixed[0, a32]), 1e-12)
    eps = drop_limit_pp(req.eps_pp, T.compounding)
    drop = np.concatenate([[T.d_a[p, a] for p, a in ys], T.d_w.ravel()])
    off = ~np.isfinite(obj) | ~np.isfinite(drop)     # widths the evidence does not back
    obj, drop = np.where(off, 0.0, obj), np.where(off, 0.0, drop)
    drop = np.where(drop < 1e-15 * max(eps, 1e-9), 0.0, drop)
    rows = [np.concatenate([np.ones(ny), np.zeros(nx)])]
    lo, hi = [1.0], [1.0]
    for unit in range(L):
        row = np.zeros(ny + nx)
        for i, (p, _a) in enumerate(ys):
            if p > unit:
                row[i] = -1.0
        row[ny + unit * K: ny + (unit + 1) * K] = 1.0
        rows.append(row)
        lo.append(0.0)
        hi.append(0.0)
    dscale = 1e3 / max(eps, 1e-9)
    rows.append(drop * dscale)
    lo.append(-np.inf)
    hi.append(eps * dscale)
    res = milp(obj * scale, constraints=LinearConstraint(np.vstack(rows), lo, hi),
               integrality=np.ones(ny + nx), bounds=Bounds(0, np.where(off, 0.0, 1.0)),
               options={"mip_rel_gap": 0.0, "time_limit": time_limit_s})
    if res.x is None or res.status != 0:
        raise RuntimeError(f"milp: no optimum ({res.message})")
    x = np.round(res.x).astype(int)
    p, a = ys[int(np.argmax(x[:ny]))]
    xs = x[ny:].reshape(L, K)
    wb = np.asarray(T.bits)[np.argmax(xs[:p], axis=1)] if p else np.zeros(0, int)
    return Plan.canonical(p, wb, T.bits[a], L)
