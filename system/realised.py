"""Exact optima under realised (or sampled) traces: the clairvoyant and SAA deciders of §8.

In the variance world (:mod:`system.variance`) a plan's cost is

    fixed[p, a] + w_rx / reuse * h(B) + sum_{l<=p} g[l, b_l]

with the uplink (drained from t0, so a function of the cut and activation bits only), the
server and the round trips in ``fixed``, the device's compute in ``g``, and the head's
download time h(B) of its B = sum params[l] b_l bits drained through the downlink trace.
h is non-decreasing but not linear, so the weights no longer form a knapsack. The solver
is a dynamic programme over the units that keeps every partial plan (B, drop, g) not
dominated in all three and not beaten by the incumbent even at its best completion; each
prefix p is then priced exactly for every activation width. Pruning removes only plans that
cannot be optimal, so the result is exact (tested against brute force).

The clairvoyant prices one future (the realised trace); SAA the average of K futures drawn
from training routes whose recent history is nearest the request's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from system.accuracy import act_drop_pp, drop_limit_pp, weight_drop_pp
from system.bits import DEFAULT_BITS, kernel_kappa
from system.cost import bits_at_cut, drop_tables, server_suffix_s, unit_time
from system.linktrace import LinkPair
from system.optimal import solve
from system.plan import Plan, PlanResult
from system.profiles import ModelProfile
from system.request import Request
from system.variance import Situations, estimate_bps, realised_request

HeadTime = Callable[[np.ndarray], np.ndarray]
#: Partial plans compared with the lowest-g ones per dominance pass (a subset of the
#: dominance test: pruning fewer never loses the optimum, only time).
_DOM_PROBE = 256


@dataclass(frozen=True)
class Future:
    """What a plan meets: the uplink's seconds per (cut, act-bits index) including rtt/2,
    the head's download seconds as a function of its bits, and 1/share of the device."""

    up_s: np.ndarray          # (L+1, K)
    head_s: HeadTime
    inv_share: float


def _fixed_and_unit(profile: ModelProfile, req: Request, fut: Future,
                    bits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    """fixed (L+1, K), g (L, K) and the head weight w_rx / reuse."""
    L = profile.n_units
    b = np.asarray(bits)
    w_rx = 1.0 + req.beta_s_per_j * req.p_rx_w
    w_comp = 1.0 + req.beta_s_per_j * req.p_comp_w
    w_tx = 1.0 + req.beta_s_per_j * req.p_tx_w
    w_idle = 1.0 + req.beta_s_per_j * req.p_idle_w
    kap = kernel_kappa(b, np.asarray(req.dev_kappa))
    t_dev = unit_time(profile, req.device).seconds(req.dev_flops_per_s / fut.inv_share,
                                                   kap[:, None]).T
    d_w, d_a = drop_tables(profile, bits)
    g = np.where(np.isinf(d_w), np.inf, t_dev * w_comp)
    cuts = np.arange(L + 1)
    fixed = fut.up_s * w_tx + server_suffix_s(profile, req)[:, None] * w_idle \
        + (cuts[:, None] > 0) * (req.rtt_s / req.reuse) * w_rx
    return np.where(np.isinf(d_a), np.inf, fixed), g, w_rx / req.reuse


def price(profile: ModelProfile, req: Request, fut: Future, cuts: np.ndarray,
          wbits: np.ndarray, abits: np.ndarray, bits: tuple[int, ...] = DEFAULT_BITS
          ) -> np.ndarray:
    """The objective of N plans under ``fut`` (the same terms :func:`solve_future` uses)."""
    fixed, g, w_h = _fixed_and_unit(profile, req, fut, bits)
    cuts = np.asarray(cuts, dtype=np.int64)
    widx = np.searchsorted(np.asarray(bits), np.asarray(wbits))
    aidx = np.searchsorted(np.asarray(bits), np.asarray(abits))
    L = profile.n_units
    on = np.arange(L)[None, :] < cuts[:, None]
    gsum = np.sum(np.where(on, g[np.arange(L)[None, :], widx], 0.0), axis=1)
    B = np.sum(on * profile.params[None, :] * np.asarray(wbits), axis=1)
    head = np.where(cuts > 0, w_h * fut.head_s(B), 0.0)
    return fixed[cuts, aidx] + head + gsum


def _undominated(B: np.ndarray, d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """A mask keeping every state not dominated by one of the _DOM_PROBE lowest-g states
    (exact ties keep the first)."""
    order = np.lexsort((B, d, g))
    probe = order[:_DOM_PROBE]
    le = (B[probe][None, :] <= B[:, None]) & (d[probe][None, :] <= d[:, None]) \
        & (g[probe][None, :] <= g[:, None])
    lt = (B[probe][None, :] < B[:, None]) | (d[probe][None, :] < d[:, None]) \
        | (g[probe][None, :] < g[:, None])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    earlier = rank[probe][None, :] < rank[:, None]
    return ~np.any(le & (lt | earlier), axis=1)


def solve_future(profile: ModelProfile, req: Request, fut: Future,
                 bits: tuple[int, ...] = DEFAULT_BITS,
                 incumbents: tuple[Plan, ...] = ()) -> PlanResult:
    """The exact least-cost plan within the budget under ``fut`` (see the module doc)."""
    L = profile.n_units
    b = np.asarray(bits)
    fixed, g, w_h = _fixed_and_unit(profile, req, fut, bits)
    d_w, d_a = drop_tables(profile, bits)
    lim = drop_limit_pp(req.eps_pp, profile.compounding)
    a32 = bits.index(32)
    act_ok = np.isfinite(fixed) & (d_a <= lim)
    act_ok[0, :] = False
    act_ok[0, a32] = True
    act_ok[L, :] = False
    act_ok[L, a32] = True
    # the best the rest can add at each prefix: the cheapest (cut >= p, act) fixed term
    fmin = np.where(act_ok, fixed, np.inf).min(axis=1)
    rest = np.minimum.accumulate(fmin[::-1])[::-1]

    best = (np.inf, 0, (), a32)
    cands = [Plan(0, (), 32), *incumbents]
    cc = np.array([p.cut for p in cands])
    wb = np.full((len(cands), L), 32)
    for j, p in enumerate(cands):
        wb[j, :p.cut] = p.weight_bits
    ab = np.array([p.act_bits for p in cands])
    inc = price(profile, req, fut, cc, wb, ab, bits)
    # an incumbent over the budget would prune what beats it: only feasible ones bound
    feasible = weight_drop_pp(profile, cc, wb) + act_drop_pp(profile, cc, ab) <= lim
    inc = np.where(feasible, inc, np.inf)
    incumbent = float(np.min(inc))

    B = np.zeros(1)
    d = np.zeros(1)
    gs = np.zeros(1)
    choice = np.zeros((1, 0), dtype=np.int64)
    for p in range(L + 1):
        if p > 0:
            u = p - 1
            ok = np.isfinite(g[u]) & np.isfinite(d_w[u])
            ks = np.flatnonzero(ok)
            B = (B[:, None] + profile.params[u] * b[ks][None, :]).ravel()
            d = (d[:, None] + d_w[u, ks][None, :]).ravel()
            gs = (gs[:, None] + g[u, ks][None, :]).ravel()
            choice = np.concatenate([np.repeat(choice, len(ks), axis=0),
                                     np.tile(ks, len(choice))[:, None]], axis=1)
            head = w_h * fut.head_s(B)
            keep = (d <= lim) & (gs + head + rest[p] <= incumbent * (1 + 1e-12))
            B, d, gs, choice = B[keep], d[keep], gs[keep], choice[keep]
            if len(B) > 1:
                keep = _undominated(B, d, gs)
                B, d, gs, choice = B[keep], d[keep], gs[keep], choice[keep]
            if not len(B):
                break
        head = w_h * fut.head_s(B) if p > 0 else np.zeros(len(B))
        for a in np.flatnonzero(act_ok[p]):
            feas = d + d_a[p, a] <= lim
            if not feas.any():
                continue
            tot = np.where(feas, fixed[p, a] + head + gs, np.inf)
            j = int(np.argmin(tot))
            if tot[j] < best[0]:
                best = (float(tot[j]), p, tuple(int(x) for x in choice[j]), int(a))
                incumbent = min(incumbent, best[0])
    if not np.isfinite(best[0]):      # pruning is relative to the incumbents: take the best
        j = int(np.argmin(inc))
        pl = cands[j]
        w_idx = tuple(bits.index(x) for x in pl.weight_bits)
        return PlanResult(pl, float(inc[j]), 0.0, pl.cut, w_idx, bits.index(pl.act_bits))
    cost, p, w_idx, a = best
    plan = Plan.canonical(p, tuple(int(b[k]) for k in w_idx), int(b[a]), L)
    drop = float(sum(d_w[u, k] for u, k in enumerate(w_idx)) + d_a[p, a])
    return PlanResult(plan, cost, drop, p, w_idx, a, steps=0)


def up_table(profile: ModelProfile, route: LinkPair, t0_s: np.ndarray, rtt_s: float,
             bits: tuple[int, ...]) -> np.ndarray:
    """Mean realised uplink seconds per (cut, act-bits index) over starts ``t0_s``."""
    L = profile.n_units
    cuts = np.repeat(np.arange(L + 1), len(bits))
    ab = np.tile(np.asarray(bits), L + 1)
    ub = bits_at_cut(profile, cuts, ab)
    t = route.up.drain_s(np.asarray(t0_s, dtype=np.float64)[:, None], ub[None, :]).mean(axis=0)
    return ((cuts < L) * (rtt_s / 2.0 + t)).reshape(L + 1, len(bits))


def clairvoyant_future(profile: ModelProfile, sit: Situations, i: int,
                       bits: tuple[int, ...] = DEFAULT_BITS) -> Future:
    """The realised future of request i."""
    r, t0 = sit.routes[int(sit.route[i])], float(sit.t0_s[i])
    return Future(up_table(profile, r, np.array([t0]), sit.requests[i].rtt_s, bits),
                  lambda B: r.down.drain_s(t0, B), 1.0 / float(sit.share_now[i]))


def ce_incumbents(profile: ModelProfile, req: Request, sit: Situations, i: int,
                  bits: tuple[int, ...]) -> tuple[Plan, ...]:
    """Plans of the exact optimizer at a few point estimates: strong incumbents."""
    out = []
    for kind in ("mean", "last", "harmonic"):
        q = replace(req, up_bps=float(estimate_bps(sit.up_hist_bps[i], kind)),
                    down_bps=float(estimate_bps(sit.down_hist_bps[i], kind)))
        out.append(solve(profile, q, bits).plan)
    return tuple(out)


def clairvoyant(profile: ModelProfile, sit: Situations, i: int,
                bits: tuple[int, ...] = DEFAULT_BITS) -> PlanResult:
    """The exact optimum of request i under its realised traces and share."""
    req = sit.requests[i]
    fut = clairvoyant_future(profile, sit, i, bits)
    return solve_future(profile, req, fut, bits, ce_incumbents(profile, realised_request(sit, i),
                                                               sit, i, bits))


def log_history(up_hist_bps: np.ndarray, down_hist_bps: np.ndarray) -> np.ndarray:
    """The history a nearest-neighbour match compares: log10 of each one-second sample (floored
    at 1 kbit/s), uplink then downlink, (..., 2k)."""
    floor = 1e3
    return np.concatenate([np.log10(np.maximum(up_hist_bps, floor)),
                           np.log10(np.maximum(down_hist_bps, floor))], axis=-1)


@dataclass(frozen=True, eq=False)
class FutureLibrary:
    """Positions in training routes (one per ``stride_s``) with the history before each: the
    futures SAA samples for a request are those of its ``k_futures`` nearest histories."""

    routes: tuple[LinkPair, ...]
    route: np.ndarray     # (M,)
    t_s: np.ndarray       # (M,)
    feats: np.ndarray     # (M, 2 history_k)
    k_futures: int = 16

    @classmethod
    def build(cls, routes: list[LinkPair] | tuple[LinkPair, ...], history_k: int,
              stride_s: float = 1.0, k_futures: int = 16) -> FutureLibrary:
        """Index every ``stride_s`` of every route after its first ``history_k`` seconds."""
        rr, tt, ff = [], [], []
        for j, r in enumerate(routes):
            t = np.arange(float(history_k), r.period_s - 1.0, stride_s)
            rr.append(np.full(t.size, j))
            tt.append(t)
            ff.append(log_history(r.up.throughput_bps(t, history_k),
                                       r.down.throughput_bps(t, history_k)))
        return cls(tuple(routes), np.concatenate(rr), np.concatenate(tt), np.concatenate(ff),
                   k_futures)

    def nearest(self, up_hist_bps: np.ndarray, down_hist_bps: np.ndarray) -> np.ndarray:
        """Indices of the ``k_futures`` positions whose history is nearest (Euclidean in log)."""
        q = log_history(up_hist_bps, down_hist_bps)
        dist = np.sum((self.feats - q[None, :]) ** 2, axis=1)
        k = min(self.k_futures, len(dist))
        return np.argsort(dist, kind="stable")[:k]


def saa_future(profile: ModelProfile, sit: Situations, i: int, lib: FutureLibrary,
               bits: tuple[int, ...] = DEFAULT_BITS) -> Future:
    """The average of request i's K sampled futures, and the chain's expected 1/share."""
    idx = lib.nearest(sit.up_hist_bps[i], sit.down_hist_bps[i])
    rtt = sit.requests[i].rtt_s
    ups = [up_table(profile, lib.routes[int(lib.route[j])], np.array([lib.t_s[j]]), rtt, bits)
           for j in idx]
    futures = [(lib.routes[int(lib.route[j])].down, float(lib.t_s[j])) for j in idx]

    def head_s(B: np.ndarray) -> np.ndarray:
        return np.mean([down.drain_s(t, B) for down, t in futures], axis=0)

    last = np.asarray(sit.share_hist[i, -1])
    return Future(np.mean(ups, axis=0), head_s,
                  float(sit.world.share.next_inverse_mean(last)))


def saa(profile: ModelProfile, sit: Situations, i: int, lib: FutureLibrary,
        bits: tuple[int, ...] = DEFAULT_BITS) -> PlanResult:
    """The exact minimiser of the mean cost over request i's sampled futures."""
    req = sit.requests[i]
    fut = saa_future(profile, sit, i, lib, bits)
    inc = ce_incumbents(profile, replace(req, dev_flops_per_s=req.dev_flops_per_s
                                         / fut.inv_share), sit, i, bits)
    return solve_future(profile, req, fut, bits, inc)
