"""Refinement: a cheap search with the cost model around the policy's plan.

A trained policy is close to the optimum for most requests, but now and then it picks the
wrong cut, and a repaired plan is feasible rather than good. :func:`refine` keeps the best
of two candidates, each polished by :func:`local_search`:

1. the policy's guarded plan itself;
2. the best plan of a Lagrangian sweep over every cut and activation width: for each
   multiplier lam at which some unit changes its best width, every unit takes
   argmin_k c_w[l, k] + lam d_w[l, k] (the convex-hull solutions of each cut's knapsack,
   vectorised over all cuts and multipliers at once), and the cheapest one within the
   budget wins.

:func:`local_search` then tries, every round, all of these moves at once and takes the
cheapest feasible one, until none lowers the cost:

* one unit's weight bits (or the activation bits) to any other width;
* two rows at once, each one width step up or down (trading drop between units: under a
  binding budget no single move is both cheaper and feasible);
* the cut moved by up to ``cut_radius`` units: units dropped from the device, or added at
  one common width, with any activation width at the new cut.

Every accepted move keeps the plan within the budget (:func:`system.accuracy.drop_limit_pp`) and
lowers its cost, so the result is feasible and never costs more than the start. Costs and
drops come from :func:`system.cost.unit_tables` (the same per-unit terms the optimizer and
the repair use), and the result is recomputed from the tables at the end.
"""

from __future__ import annotations

import numpy as np

from system.accuracy import drop_limit_pp
from system.cost import UnitTables
from system.optimal import hull_multipliers
from system.plan import Plan, PlanResult
from system.repair import plan_cost_drop

_REL = 1e-12


def _result(T: UnitTables, cut: int, w_idx: np.ndarray | tuple[int, ...], a_idx: int, cost: float,
            drop: float, moves: int) -> PlanResult:
    """The plan in both forms (index and bits) with its cost, drop and number of moves."""
    L, bits = T.c_w.shape[0], T.bits
    w = tuple(int(x) for x in w_idx)
    plan = Plan.canonical(cut, [bits[k] for k in w], bits[a_idx], L)
    return PlanResult(plan=plan, cost=cost, drop_pp=drop, cut=cut, w_idx=w, a_idx=a_idx,
                      steps=moves)


def _singles(T: UnitTables, p: int, w: np.ndarray, a: int, inner: bool) -> tuple[np.ndarray, np.ndarray]:
    """Change in (cost, drop) of setting each row (units 0..p-1, then act) to each width."""
    rows = np.arange(p)
    dc = T.c_w[:p] - T.c_w[rows, w][:, None]
    dd = T.d_w[:p] - T.d_w[rows, w][:, None]
    if inner:
        dc = np.vstack([dc, T.fixed[p] - T.fixed[p, a]])
        dd = np.vstack([dd, T.d_a[p] - T.d_a[p, a]])
    return dc, dd


def local_search(T: UnitTables, eps_pp: float, cut: int, w_idx: np.ndarray | list[int],
                 a_idx: int, *, cut_radius: int = 2, max_moves: int = 64) -> PlanResult:
    """Improve a feasible plan (see the module docstring); an infeasible start is returned as is."""
    L, K = T.c_w.shape
    k32 = T.bits.index(32)
    limit = drop_limit_pp(eps_pp, T.compounding)
    p = int(cut)
    w = np.asarray(w_idx, dtype=np.int64)[:p].copy()
    a = int(a_idx) if 0 < p < L else k32
    cost, drop = plan_cost_drop(T, p, w, a)
    moves = 0
    if drop > limit:
        return _result(T, p, w, a, cost, drop, 0)
    steps = np.array([-1, 1])
    while moves < max_moves:
        inner = 0 < p < L
        best_c, best = cost * (1.0 - _REL) if cost > 0 else cost, None
        # single rows, any width
        dc, dd = _singles(T, p, w, a, inner)
        if dc.size:
            c1 = np.where(drop + dd <= limit, cost + dc, np.inf)
            i = int(np.argmin(c1))
            if c1.flat[i] < best_c:
                best_c, best = float(c1.flat[i]), ("one", *divmod(i, K))
            # pairs of rows, one width step each
            cur = np.append(w, a) if inner else w
            nk = cur[:, None] + steps[None, :]                     # (R, 2)
            ok = (nk >= 0) & (nk < K)
            nkc = np.clip(nk, 0, K - 1)
            r = np.arange(len(cur))[:, None]
            sdc = np.where(ok, dc[r, nkc], np.inf).ravel()         # (2R,)
            sdd = np.where(ok, dd[r, nkc], 0.0).ravel()
            row = np.repeat(np.arange(len(cur)), 2)
            pc = sdc[:, None] + sdc[None, :]
            pd = sdd[:, None] + sdd[None, :]
            pc = np.where((row[:, None] != row[None, :]) & (drop + pd <= limit), cost + pc, np.inf)
            j = int(np.argmin(pc))
            if pc.flat[j] < best_c:
                u, v = divmod(j, pc.shape[1])
                best_c, best = float(pc.flat[j]), ("two", u, v, nkc.ravel(), row)
        # cut moves
        base_c = cost - float(T.fixed[p, a])
        base_d = drop - float(T.d_a[p, a])
        for q in range(max(0, p - cut_radius), min(L, p + cut_radius) + 1):
            if q == p:
                continue
            if q < p:
                rows = np.arange(q, p)
                qc = base_c - float(T.c_w[rows, w[q:]].sum()) + T.fixed[q]       # (K,) over act
                qd = base_d - float(T.d_w[rows, w[q:]].sum()) + T.d_a[q]
                qc = qc[:, None]
                qd = qd[:, None]
            else:
                add_c = T.c_w[p:q].sum(axis=0)                     # (K,) one width for all
                add_d = T.d_w[p:q].sum(axis=0)
                qc = base_c + add_c[None, :] + T.fixed[q][:, None]  # (act K, width K)
                qd = base_d + add_d[None, :] + T.d_a[q][:, None]
            if not 0 < q < L:
                qc, qd = qc[k32:k32 + 1], qd[k32:k32 + 1]          # act bits unused
            qc = np.where(qd <= limit, qc, np.inf)
            i = int(np.argmin(qc))
            if qc.flat[i] < best_c:
                ai, wi = divmod(i, qc.shape[1])
                best_c, best = float(qc.flat[i]), ("cut", q, ai if 0 < q < L else k32, wi)
        if best is None:
            break
        p2, w2, a2 = p, w.copy(), a
        if best[0] == "one":
            _, rr, k = best
            if rr < p:
                w2[rr] = k
            else:
                a2 = int(k)
        elif best[0] == "two":
            _, u, v, nks, row = best
            for idx in (u, v):
                rr, k = int(row[idx]), int(nks[idx])
                if rr < p:
                    w2[rr] = k
                else:
                    a2 = k
        else:
            _, p2, ai, wi = best
            w2 = w[:p2].copy() if p2 < p else np.concatenate([w, np.full(p2 - p, wi, np.int64)])
            a2 = int(ai)
        new_c, new_d = plan_cost_drop(T, p2, w2, a2)
        if not (new_d <= limit and new_c < cost):       # rounding guard: keep the last good plan
            break
        p, w, a, cost, drop = p2, w2, a2, new_c, new_d
        moves += 1
    return _result(T, p, w, a if 0 < p < L else k32, cost, drop, moves)


def lagrangian_sweep(T: UnitTables, eps_pp: float) -> PlanResult | None:
    """The cheapest hull-greedy plan within the budget over all cuts (see the module doc).

    None if no hull-greedy plan is feasible (cut 0 always is, so only for an empty profile).
    """
    c, d = T.c_w, T.d_w
    L, K = c.shape
    limit = drop_limit_pp(eps_pp, T.compounding)
    # just above each multiplier at which a unit's best option changes, so the argmin is unique
    lam = np.concatenate([[0.0], hull_multipliers(c, d) * (1.0 + 1e-9)])
    with np.errstate(invalid="ignore"):        # 0 x inf: a refused width, never picked
        score = np.where(np.isinf(d)[None], np.inf, c[None] + lam[:, None, None] * d[None])
    pick = np.argmin(score, axis=2)                                          # (M, L)
    rows = np.arange(L)[None, :]
    C = np.concatenate([np.zeros((len(lam), 1)), np.cumsum(c[rows, pick], axis=1)], axis=1)
    D = np.concatenate([np.zeros((len(lam), 1)), np.cumsum(d[rows, pick], axis=1)], axis=1)
    # As lam grows each unit's pick moves to less drop and more cost, so per cut D falls and
    # C rises along the rows: the infeasible rows of a (cut, act) form a prefix, and the
    # first feasible row is the cheapest.
    M = len(lam)
    first = np.sum(D[:, :, None] + T.d_a[None] > limit, axis=0)               # (L+1, K)
    k32 = T.bits.index(32)
    usable = np.zeros((L + 1, K), dtype=bool)
    usable[1:L] = True
    usable[0, k32] = usable[L, k32] = True                                   # act bits unused
    ok = (first < M) & usable
    m = np.minimum(first, M - 1)
    tot = np.where(ok, C[m, np.arange(L + 1)[:, None]] + T.fixed, np.inf)
    i = int(np.argmin(tot))
    if not np.isfinite(tot.flat[i]):
        return None
    q, a = divmod(i, K)
    mm = int(m[q, a])
    tot_d = D[mm, q] + T.d_a[q, a]
    if tot_d > limit:     # not monotone after all (rounding): give up
        return None
    return _result(T, q, pick[mm, :q], a, float(tot.flat[i]), float(tot_d), 0)


def refine(T: UnitTables, eps_pp: float, cut: int, w_idx: np.ndarray | list[int], a_idx: int,
           *, cut_radius: int = 1) -> PlanResult:
    """The best of the polished start and the polished sweep plan (see the module doc)."""
    p = int(cut)
    L = T.c_w.shape[0]
    k32 = T.bits.index(32)
    w0 = np.asarray(w_idx, dtype=np.int64)[:p]
    a0 = int(a_idx) if 0 < p < L else k32
    cost0, drop0 = plan_cost_drop(T, p, w0, a0)
    sw = lagrangian_sweep(T, eps_pp)
    if sw is None:
        return _result(T, p, w0, a0, cost0, drop0, 0)
    q, w, a, c_sw = sw.cut, np.asarray(sw.w_idx, dtype=np.int64), sw.a_idx, sw.cost
    if c_sw >= cost0 * (1.0 + 1e-3):         # the sweep is far off: polish the start instead
        q, w, a = p, w0, a0
    r = local_search(T, eps_pp, q, w, a, cut_radius=cut_radius)
    if r.cost < cost0 and r.drop_pp <= drop_limit_pp(eps_pp, T.compounding):
        return r._replace(steps=r.steps + 1)
    return _result(T, p, w0, a0, cost0, drop0, 0)
