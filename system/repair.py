"""Deterministic repair of an infeasible plan (DESIGN.md §5), shared by the env and the runtime.

A policy may propose a plan whose predicted drop exceeds the budget. Repair keeps the cut and
raises bits, greedily, until the plan fits:

1. If ``drop <= eps_pp`` (with :data:`~system.accuracy.FEAS_TOL_PP` slack) the plan is
   returned unchanged (``repaired=False``).
2. Otherwise, repeat: among all *moves* that raise one choice to any higher bit width (a
   device-side unit's weight bits, or the activation bits when 0 < cut < L), keep those that
   lower the drop (dd > 0); pick the one with the largest drop fall per unit of added cost,
   dd / dc (dc <= 0, a move that costs nothing or saves, scores +inf); ties go to the
   larger dd, then to the first move in the order (weights of unit 1..p, then activation);
   apply it. Stop as soon as the plan is feasible.
3. Every move strictly raises one width, so step 2 ends within (p + 1) (K - 1) moves; when
   no move lowers the drop any more, every choice that matters sits at 32 bits. If that plan
   is still infeasible (possible only for a budget below the 32-bit residue, about 1e-16 pp,
   i.e. never with the 1e-9 pp slack, but guarded anyway), the result is cut 0
   (server-only: nothing quantized, drop 0), which is always feasible (``fallback=True``).

The result is always feasible, and the same input gives the same output bit for bit (only
numpy elementwise arithmetic and argmax, no randomness), so the runtime reproduces the env.
"""

from __future__ import annotations

import math

import numpy as np

from system.accuracy import drop_limit_pp
from system.bits import DEFAULT_BITS
from system.cost import UnitTables, drop_sum_pp, drop_sums_pp, unit_tables
from system.evidence import Compounding
from system.plan import NO_ACT_BITS, Plan, PlanResult
from system.profiles import ModelProfile
from system.reduce import max_last
from system.request import Request


def plan_cost_drop(T: UnitTables, cut: int, w_idx: np.ndarray, a_idx: int) -> tuple[float, float]:
    """Cost and drop of a plan in index form, from the per-unit tables (same formulas)."""
    r = np.arange(cut)
    return (float(np.sum(T.c_w[r, w_idx[:cut]]) + T.fixed[cut, a_idx]),
            drop_sum_pp(T.d_w[r, w_idx[:cut]].tolist(), float(T.d_a[cut, a_idx])))


def _row_best(drow: list[float], crow: list[float], kc: int) -> tuple[float, float, int]:
    """Best move of one row from option ``kc``: (score, drop fall, option); -inf if none."""
    best = (-math.inf, -math.inf, -1)
    d0, c0 = drow[kc], crow[kc]
    for j in range(kc + 1, len(drow)):
        dd = d0 - drow[j]
        if dd <= 0.0:
            continue
        dc = crow[j] - c0
        s = dd / dc if dc > 0.0 else math.inf
        if s > best[0] or (s == best[0] and dd > best[1]):
            best = (s, dd, j)
    return best


def repair_indices(T: UnitTables, eps_pp: float, cut: int, w_idx: np.ndarray,
                   a_idx: int, enabled: bool = True) -> PlanResult:
    """Repair a plan given as indices (``w_idx`` may be longer than ``cut``: the rest is ignored).

    Rows 0..p-1 of the move table are the units' weight options, row p the activation
    options; each row keeps its best move and only the row just moved is re-scored, which
    picks exactly the move of the module docstring's global rule. Plain Python floats (IEEE
    double, as numpy) because the rows are short and numpy's per-call overhead dominates.
    ``enabled=False`` returns the plan as given, even if infeasible (the env's penalty mode).
    """
    L = T.c_w.shape[0]
    bits = T.bits
    k32 = bits.index(32)
    p = int(cut)
    inner = 0 < p < L
    cur = [int(i) for i in w_idx[:p]] + [int(a_idx) if inner else k32]
    D = [*T.d_w[:p].tolist(), T.d_a[p].tolist()]
    drop = drop_sum_pp([D[r][cur[r]] for r in range(p)], D[p][cur[p]])
    steps = 0
    fallback = False
    limit = drop_limit_pp(eps_pp, T.compounding)
    if enabled and drop > limit:
        C = [*T.c_w[:p].tolist(), T.fixed[p].tolist()]
        n_rows = p + 1 if inner else p
        best = [_row_best(D[r], C[r], cur[r]) for r in range(n_rows)]
        while best and drop > limit:
            r = max(range(n_rows), key=lambda i: best[i][:2])   # first of equal (score, dd)
            if best[r][0] == -math.inf:
                break
            cur[r] = best[r][2]
            steps += 1
            drop = drop_sum_pp([D[i][cur[i]] for i in range(p)], D[p][cur[p]])
            best[r] = _row_best(D[r], C[r], cur[r])
        if drop > limit:
            fallback = True
            p, cur = 0, [k32]
    k = tuple(cur[:p])
    a = int(cur[p])
    cost, drop = plan_cost_drop(T, p, np.asarray(k, dtype=np.int64), a)
    plan = Plan.canonical(p, [bits[i] for i in k], bits[a] if 0 < p < L else NO_ACT_BITS, L)
    return PlanResult(plan=plan, cost=cost, drop_pp=drop, cut=p, w_idx=k, a_idx=a, steps=steps,
                      repaired=steps > 0 or fallback, fallback=fallback)


def _rows_best(D: np.ndarray, C: np.ndarray, cur: np.ndarray, enabled: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_row_best` of many rows at once: D, C (..., K), cur and enabled (...)."""
    K = D.shape[-1]
    flat = (np.arange(cur.size), cur.reshape(-1))
    d0 = D.reshape(-1, K)[flat].reshape(*cur.shape, 1)
    c0 = C.reshape(-1, K)[flat].reshape(*cur.shape, 1)
    dd = d0 - D
    dc = C - c0
    valid = (np.arange(K) > cur[..., None]) & (dd > 0.0) & enabled[..., None]
    pos = dc > 0.0
    s = np.where(valid, np.where(pos, dd / np.where(pos, dc, 1.0), np.inf), -np.inf)
    best_s = max_last(s)
    dd[~(valid & (s == best_s[..., None]))] = -np.inf
    best_dd = max_last(dd)
    return best_s, best_dd, np.argmax(dd == best_dd[..., None], axis=-1)


def repair_batch(c_w: np.ndarray, fixed: np.ndarray, d_w: np.ndarray, d_a: np.ndarray,
                 eps_pp: np.ndarray, cuts: np.ndarray, w_idx: np.ndarray, a_idx: np.ndarray,
                 bits: tuple[int, ...], compounding: Compounding | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`repair_indices` of N plans at once, the same moves in the same order.

    ``c_w`` (N, L, K) and ``fixed`` (N, L+1, K) are each request's tables, ``d_w`` (L, K) and
    ``d_a`` (L+1, K) the profile's, ``eps_pp`` (N,) the budgets. The move table of each plan
    is laid out as rows 0..L-1 (units, those past the cut disabled) and row L (the
    activation, enabled at an inner cut), so "first row" breaks ties as the scalar form
    does. Each step moves every plan still over budget by its own best move (a loop over
    steps, vectorised over the plans), and the drop is re-added in the scalar form's order
    (:func:`drop_sums_pp`). Plans still moving are compacted once half are done. (Handing
    the last few to ``repair_indices`` was slower: it costs 35-100 us a plan, a step here
    about as much for all of them, and the last plans need one or two moves.)
    Returns (cuts, weight indices (N, L) with the 32-bit index past the cut, act indices,
    fallback): what ``repair_indices`` gives for each plan (tested).
    """
    N, L, K = c_w.shape
    k32 = bits.index(32)
    limit_pp = drop_limit_pp(np.asarray(eps_pp, dtype=np.float64), compounding)
    cuts = np.asarray(cuts, dtype=np.int64)
    on = np.arange(L)[None, :] < cuts[:, None]
    inner = (cuts > 0) & (cuts < L)
    cur = np.concatenate([np.where(on, w_idx, k32), np.where(inner, a_idx, k32)[:, None]], axis=1)
    D = np.concatenate([np.broadcast_to(d_w, (N, L, K)), d_a[cuts][:, None, :]], axis=1)
    C = np.concatenate([c_w, fixed[np.arange(N), cuts][:, None, :]], axis=1)
    enabled = np.concatenate([on, inner[:, None]], axis=1)
    rows_all = np.arange(L + 1)[None, :]

    def drop_of(D: np.ndarray, cur: np.ndarray, on: np.ndarray) -> np.ndarray:
        picked = D[np.arange(len(cur))[:, None], rows_all, cur]
        return drop_sums_pp(np.where(on, picked[:, :L], 0.0), picked[:, L])

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        over = drop_of(D, cur, on) > limit_pp
        idx = np.flatnonzero(over)                   # the plans still being repaired
        D, C, c, e, o, lim = D[idx], C[idx], cur[idx], enabled[idx], on[idx], limit_pp[idx]
        best_s, best_dd, best_j = _rows_best(D, C, c, e)
        live = np.ones(idx.size, dtype=bool)         # finished plans stay, unmoved, until
        while live.any():                            # until half are done (fewer calls)
            m = np.arange(idx.size)
            top_s = best_s.max(axis=1)
            tied = best_s == top_s[:, None]
            top_dd = np.where(tied, best_dd, -np.inf).max(axis=1)
            r = np.argmax(tied & (best_dd == top_dd[:, None]), axis=1)
            moves = live & (top_s > -np.inf)
            c[m, r] = np.where(moves, best_j[m, r], c[m, r])
            still = drop_of(D, c, o) > lim
            best_s[m, r], best_dd[m, r], best_j[m, r] = _rows_best(D[m, r], C[m, r], c[m, r],
                                                                   e[m, r])
            cur[idx], over[idx] = c, still
            live = moves & still
            if 2 * np.count_nonzero(live) < live.size:
                idx, D, C, c, e, o, lim = idx[live], D[live], C[live], c[live], e[live], o[live], lim[live]
                best_s, best_dd, best_j, live = best_s[live], best_dd[live], best_j[live], live[live]
    cuts = np.where(over, 0, cuts)
    w = np.where(np.arange(L)[None, :] < cuts[:, None], cur[:, :L], k32)
    return cuts, w, np.where(over, k32, cur[:, L]), over


def execute_action(T: UnitTables, eps_pp: float, action: np.ndarray,
                   repair: bool = True) -> PlanResult:
    """The plan QuantSplit-v0 executes for a MultiDiscrete action (see system.codec).

    The action's cut, activation index and the weight indices of units 1..cut, repaired if
    infeasible (``repair=False``: as proposed). The env, the evaluation and the runtime all
    execute actions through this one function.
    """
    a = np.asarray(action, dtype=np.int64).reshape(-1)
    cut = int(a[0])
    return repair_indices(T, eps_pp, cut, a[2:2 + cut], int(a[1]), enabled=repair)


def repair(profile: ModelProfile, req: Request, plan: Plan, bits: tuple[int, ...] = DEFAULT_BITS,
           tables: UnitTables | None = None) -> PlanResult:
    """Repair ``plan`` for ``req`` (pass ``tables`` if already computed for this request)."""
    plan.validate(profile.n_units, bits)
    T = tables if tables is not None else unit_tables(profile, req, bits)
    idx = {b: i for i, b in enumerate(T.bits)}
    return repair_indices(T, req.eps_pp, plan.cut,
                          np.asarray([idx[b] for b in plan.weight_bits], dtype=np.int64),
                          idx[plan.act_bits])
