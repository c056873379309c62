"""The exact optimum of DESIGN.md §2: least cost over (cut, activation bits, weight bits).

For a fixed cut p and activation bits a the weight bits form a multiple-choice knapsack
(MCKP): every cost and drop term is a sum of per-unit terms, and the budget left for the
weights is eps - d_a[p, a]. The solver is exact (no discretised budget) and fast because it
rarely solves a knapsack at all:

1. Per unit, the lower convex hull of its (drop, cost) options. Taking hull segments in
   order of cost saved per pp of drop gives, for every prefix p and budget at once (one
   vectorised pass), the LP relaxation of the MCKP (a lower bound) and its rounding down
   (a feasible plan, an upper bound).
2. The best upper bound is the incumbent. Candidates (p, a) are visited in the order of
   their lower bound; once a bound reaches the incumbent, the rest are dropped.
3. A candidate whose LP is fractional is solved exactly: Lagrangian reduced-cost fixing at
   the LP multiplier removes every option that cannot beat the incumbent (usually all but
   one per unit), and a Pareto dynamic programme over the few units left, pruned by the
   Lagrangian bound and the budget, finds the knapsack's optimum.

Every step is exact in real arithmetic; comparisons carry a relative slack of 1e-12 so
rounding never prunes the optimum. Cut 0 (server-only) has no quantization and is always
feasible, so a plan always exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from system.accuracy import drop_limit_pp
from system.bits import DEFAULT_BITS
from system.cost import UnitTables, drop_sum_pp, unit_tables
from system.plan import Plan, PlanResult
from system.profiles import ModelProfile
from system.request import Request

_REL = 1e-12


@dataclass(frozen=True)
class _Hull:
    order: np.ndarray      # (L, K) option indices sorted by (drop, cost); hulls start at 0
    seg_unit: np.ndarray   # (S,) unit of each hull segment, segments sorted by efficiency
    seg_to: np.ndarray     # (S,) sorted position the segment ends at
    seg_dd: np.ndarray     # (S,) drop added (> 0)
    seg_dc: np.ndarray     # (S,) cost added (< 0)
    seg_eff: np.ndarray    # (S,) cost saved per pp of drop, descending


@np.errstate(invalid="ignore")      # inf - inf between two refused options: nan, never a segment
def _hull_segments(c_w: np.ndarray, d_w: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each unit's lower convex hull of its (drop, cost) options, walked from least drop to
    least cost: the option order, and per segment its unit, end position, drop and cost added."""
    L, K = c_w.shape
    order = np.lexsort((c_w, d_w), axis=1)
    rows = np.arange(L)[:, None]
    C = c_w[rows, order]
    D = d_w[rows, order]
    dd = D[:, None, :] - D[:, :, None]            # (L, from, to)
    dc = C[:, None, :] - C[:, :, None]
    ok = (dd > 0) & (dc < 0)
    slope = np.full(dd.shape, np.inf)
    np.divide(dc, dd, out=slope, where=ok)
    best = slope.min(axis=2)
    # steepest descent from each point; among equal slopes the farthest (skips collinear ones)
    nxt = np.where(np.isfinite(best),
                   K - 1 - np.argmax((slope <= best[:, :, None])[:, :, ::-1], axis=2), -1)
    # walk each unit's chain from its start (plain Python: a few steps per unit)
    units, starts = [], []
    for u, row in enumerate(nxt.tolist()):
        k = 0
        while row[k] >= 0:
            units.append(u)
            starts.append(k)
            k = row[k]
    su = np.asarray(units, dtype=np.int64)           # a segment leaves every vertex walked
    sf = np.asarray(starts, dtype=np.int64)
    st = nxt[su, sf]
    sdd = D[su, st] - D[su, sf]
    sdc = C[su, st] - C[su, sf]
    return order, su, st, sdd, sdc


def _hulls(c_w: np.ndarray, d_w: np.ndarray) -> _Hull:
    """The hull segments sorted by efficiency (cost saved per pp of drop, descending)."""
    order, su, st, sdd, sdc = _hull_segments(c_w, d_w)
    eff = -sdc / sdd if len(sdd) else np.zeros(0)
    srt = np.argsort(-eff, kind="stable")
    return _Hull(order=order, seg_unit=su[srt], seg_to=st[srt], seg_dd=sdd[srt],
                 seg_dc=sdc[srt], seg_eff=eff[srt])


def hull_multipliers(c_w: np.ndarray, d_w: np.ndarray) -> np.ndarray:
    """The Lagrange multipliers at which some unit's best option under cost + lam * drop
    changes: the slopes of the units' lower hulls (cost saved per pp of drop), ascending."""
    _, _, _, sdd, sdc = _hull_segments(c_w, d_w)
    return np.unique(-sdc / sdd)


def solve(profile: ModelProfile, req: Request, bits: tuple[int, ...] = DEFAULT_BITS,
          tables: UnitTables | None = None) -> PlanResult:
    """The exact least-cost plan within the request's budget."""
    T = tables if tables is not None else unit_tables(profile, req, bits)
    c_w, d_w, fixed, d_a = T.c_w, T.d_w, T.fixed, T.d_a
    L = c_w.shape[0]
    Ka = fixed.shape[1]
    eps = drop_limit_pp(req.eps_pp, T.compounding)
    a32 = T.bits.index(32)

    H = _hulls(c_w, d_w)
    Cs = np.take_along_axis(c_w, H.order, axis=1)
    Ds = np.take_along_axis(d_w, H.order, axis=1)
    C0 = np.concatenate([[0.0], np.cumsum(Cs[:, 0])])       # (L+1,) cost of prefix at start
    D0 = np.concatenate([[0.0], np.cumsum(Ds[:, 0])])
    S = len(H.seg_unit)
    cuts = np.arange(L + 1)
    mask = H.seg_unit[None, :] < cuts[:, None]               # (L+1, S)
    cumD = np.cumsum(mask * H.seg_dd[None, :], axis=1)
    cumC = np.cumsum(mask * H.seg_dc[None, :], axis=1)

    budget = eps - d_a                                       # (L+1, Ka) left for the weights
    valid = budget >= D0[:, None]
    valid[0, :] = False
    valid[L, :] = False
    valid[0, a32] = True                                      # cut 0 is always feasible
    valid[L, a32] = budget[L, a32] >= D0[L]
    bw = budget - D0[:, None]                                # budget past the hull starts
    if S:
        n = np.empty((L + 1, Ka), dtype=np.int64)               # segments that fit
        for p in range(L + 1):
            n[p] = np.searchsorted(cumD[p], bw[p], side="right")
        prevD = np.where(n > 0, np.take_along_axis(cumD, np.maximum(n - 1, 0), axis=1), 0.0)
        prevC = np.where(n > 0, np.take_along_axis(cumC, np.maximum(n - 1, 0), axis=1), 0.0)
        nxt = np.minimum(n, S - 1)
        frac = np.where(n < S, (bw - prevD) * H.seg_eff[nxt], 0.0)
    else:
        n = np.zeros((L + 1, Ka), np.int64)
        prevC = np.zeros((L + 1, Ka))
        frac = np.zeros((L + 1, Ka))
    ub = fixed + C0[:, None] + prevC
    lb = ub - frac
    ub = np.where(valid, ub, np.inf)
    lb = np.where(valid, lb, np.inf)

    p_best, a_best = np.unravel_index(int(np.argmin(ub)), ub.shape)
    inc = float(ub[p_best, a_best])
    best: tuple[str, int, int, np.ndarray | None] = ("hull", int(p_best), int(a_best), None)
    exact = 0
    flat = np.argsort(lb, axis=None, kind="stable")
    for idx in flat:
        p, a = divmod(int(idx), Ka)
        if not lb[p, a] < inc - _REL * abs(inc):
            break
        if frac[p, a] <= _REL * abs(inc):
            continue                                          # its LP is integral: ub = lb
        # a better incumbent first: it lets reduced-cost fixing remove more options
        ch = _improve(c_w[:p], d_w[:p], _hull_choice(H, p, int(n[p, a]), L)[:p],
                      float(budget[p, a]))
        rows = np.arange(p)
        c_ch = float(fixed[p, a] + c_w[rows, ch].sum())
        if c_ch < inc - _REL * abs(inc):
            inc = c_ch
            best = ("dp", p, a, ch)
            if not lb[p, a] < inc - _REL * abs(inc):
                continue
        lam = float(H.seg_eff[min(int(n[p, a]), S - 1)])
        res = _exact_mckp(c_w[:p], d_w[:p], float(budget[p, a]), float(fixed[p, a]), lam, inc)
        exact += 1
        if res is not None and res[0] < inc - _REL * abs(inc):
            inc = res[0]
            best = ("dp", p, a, res[1])

    kind, p, a, choice = best
    if kind == "hull":
        choice = _hull_choice(H, p, int(n[p, a]), L)
    wb = np.asarray(T.bits)[np.asarray(choice, dtype=np.int64)[:p]] if p else np.zeros(0, int)
    plan = Plan.canonical(p, wb, T.bits[a], L)
    ks = np.asarray(choice, dtype=np.int64)[:p]
    drop = drop_sum_pp(d_w[np.arange(p), ks].tolist(), float(d_a[p, a]))
    return PlanResult(plan=plan, cost=inc, drop_pp=drop, cut=p, w_idx=tuple(ks.tolist()),
                      a_idx=a if 0 < p < L else a32, steps=exact)


def _hull_choice(H: _Hull, p: int, n_taken: int, L: int) -> np.ndarray:
    """Option index per unit after taking the first ``n_taken`` segments of units < p."""
    pos = np.zeros(L, np.int64)
    sel = H.seg_unit[:n_taken] < p
    u = H.seg_unit[:n_taken][sel]
    t = H.seg_to[:n_taken][sel]
    pos[u] = t   # segments of one unit come in hull order, so the last write is the furthest
    return H.order[np.arange(L), pos]


def _improve(c: np.ndarray, d: np.ndarray, choice: np.ndarray, budget: float,
             rounds: int = 4) -> np.ndarray:
    """Greedy single-unit moves that lower cost within the budget (a heuristic, not a bound)."""
    rows = np.arange(len(choice))
    choice = choice.copy()
    for _ in range(rounds):
        cur_c = c[rows, choice]
        cur_d = d[rows, choice]
        slack = budget - float(cur_d.sum())
        gain = np.where(d - cur_d[:, None] <= slack, c - cur_c[:, None], 0.0)
        i = int(np.argmin(gain))
        if gain.flat[i] >= 0.0:
            break
        choice[i // c.shape[1]] = i % c.shape[1]
    return choice


def _exact_mckp(c: np.ndarray, d: np.ndarray, budget: float, const: float, lam: float,
                inc: float) -> tuple[float, np.ndarray] | None:
    """min const + sum c[l, k_l] s.t. sum d[l, k_l] <= budget, if below ``inc``; else None."""
    p, _ = c.shape
    tol = _REL * max(1.0, abs(inc))
    with np.errstate(invalid="ignore"):      # 0 x inf at lam = 0: a refused width stays out
        V = np.where(np.isinf(d), np.inf, c + lam * d)
    m = V.min(axis=1)
    lag = const + float(m.sum()) - lam * budget
    if lag > inc + tol:
        return None
    allowed = (lag + (V - m[:, None])) <= inc + tol
    allowed &= d <= budget
    n_opt = allowed.sum(axis=1)
    if np.any(n_opt == 0):
        return None
    single = n_opt == 1
    choice = np.argmax(allowed, axis=1)
    rows = np.arange(p)
    base_c = const + float(np.sum(c[rows[single], choice[single]]))
    base_d = float(np.sum(d[rows[single], choice[single]]))
    free = rows[~single]
    # remaining-bound terms, over units not yet placed in the frontier
    Vm = np.where(allowed, V, np.inf).min(axis=1)
    dmin = np.where(allowed, d, np.inf).min(axis=1)
    rem_v = np.concatenate([np.cumsum(Vm[free][::-1])[::-1], [0.0]])
    rem_d = np.concatenate([np.cumsum(dmin[free][::-1])[::-1], [0.0]])
    if base_d > budget - rem_d[0]:
        return None
    fc = np.array([base_c])
    fd = np.array([base_d])
    back: list[np.ndarray] = []                    # per free unit: kept flat indices
    opts: list[np.ndarray] = []
    thr_v = inc + tol + lam * budget - rem_v       # bound test per depth
    thr_d = budget - rem_d
    for j, u in enumerate(free):
        ks = np.flatnonzero(allowed[u])
        nc = (fc[:, None] + c[u, ks]).ravel()
        nd = (fd[:, None] + d[u, ks]).ravel()
        keep = np.flatnonzero((nd <= thr_d[j + 1]) & (nc + lam * nd <= thr_v[j + 1]))
        if not len(keep):
            return None
        o = keep[np.argsort(nd[keep], kind="stable")]
        nc = nc[o]
        front = np.empty(len(o), dtype=bool)
        front[0] = True
        np.less(nc[1:], np.minimum.accumulate(nc)[:-1], out=front[1:])
        sel = o[front]
        fc, fd = nc[front], nd[sel]
        back.append(sel)
        opts.append(ks)
    i = int(np.argmin(fc))
    best_cost = float(fc[i])
    choice = choice.copy()
    for j in range(len(free) - 1, -1, -1):
        flat = int(back[j][i])
        nk = len(opts[j])
        choice[free[j]] = opts[j][flat % nk]
        i = flat // nk
    return best_cost, choice
