"""The variance world of DESIGN.md §8: requests placed in recorded uplink/downlink traces.

A request arrives at time t0 on a route (:class:`system.linktrace.LinkPair`). What the device
knows is its past: the last ``history_k`` one-second throughput samples of each direction and
its compute share over the last ``share_steps`` steps. What the plan meets is the future:

* the head download drains through the downlink trace from t0 and the upload through the
  uplink trace from t0 (outages included: a transfer waits for capacity). Both transfers are
  placed at the request's arrival, not after the stages before them: the head is in flight
  while the device waits, and the upload's start is not shifted by the plan's own weights.
  This keeps the uplink term a function of (cut, activation bits) alone (§8), the property
  the exact clairvoyant and SAA solvers (:mod:`system.realised`) rely on.
* the device's compute share follows :class:`ShareChain`, a Markov chain over the share of
  the device free of other apps; the request computes at the chain's state at t0 (its step
  is longer than a head's compute, so the state holds during it).
* a request carries ``deadline_s``: a realised latency above it is a miss.

Everything is seeded and numpy only (the runtime may import it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from system.cost import bits_at_cut, evaluate_arrays
from system.errors import QsplitInputError
from system.linktrace import LinkPair
from system.profiles import ModelProfile
from system.request import Request
from system.scenario import Dist, Scenario, sample_requests
from system.traces import ZERO_FLOOR_BPS

#: Point estimators of a rate from its one-second history; "mean" (of the last 5 s) is the
#: default: on the Mahimahi uplinks it beat the last second, the harmonic mean and the p10.
ESTIMATORS: tuple[str, ...] = ("mean", "last", "harmonic", "ewma")
DEFAULT_ESTIMATOR = "mean"
#: EWMA weight of the newest sample (the "ewma" estimator).
EWMA_ALPHA = 0.5


@dataclass(frozen=True)
class ShareChain:
    """The device's compute share (free of other apps) as a discrete-time Markov chain.

    Every ``step_s`` the share stays with probability ``stay``, else moves to one of the other
    ``states`` uniformly; the chain is symmetric, so it starts from the uniform stationary
    law. Defaults: shares 1, 0.6, 0.3 (the default scenario's device load spans 0.3-1), a
    0.5 s step, mean holding time step / (1 - stay) = 5 s (assumption: an app in the
    foreground for seconds at a time).
    """

    states: tuple[float, ...] = (1.0, 0.6, 0.3)
    step_s: float = 0.5
    stay: float = 0.9

    def __post_init__(self) -> None:
        if len(self.states) < 1 or not all(0 < s <= 1 for s in self.states):
            raise QsplitInputError("share states: expected shares in (0, 1]")
        if not 0 <= self.stay <= 1 or self.step_s <= 0:
            raise QsplitInputError("share chain: stay must be in [0, 1] and step_s > 0 s")

    def paths(self, rng: np.random.Generator, n: int, steps: int) -> np.ndarray:
        """n independent paths of ``steps`` states (shares), (n, steps), oldest first."""
        m = len(self.states)
        idx = np.empty((n, steps), dtype=np.int64)
        idx[:, 0] = rng.integers(0, m, n)
        for j in range(1, steps):
            move = rng.random(n) >= self.stay
            hop = rng.integers(1, max(m, 2), n) if m > 1 else np.zeros(n, np.int64)
            idx[:, j] = np.where(move, (idx[:, j - 1] + hop) % m, idx[:, j - 1])
        return np.asarray(self.states, dtype=np.float64)[idx]

    def next_inverse_mean(self, last: np.ndarray) -> np.ndarray:
        """E[1 / share] one step after ``last``: what a planner expecting the chain pays."""
        s = np.asarray(self.states, dtype=np.float64)
        m = len(s)
        others = (np.sum(1.0 / s) - 1.0 / last) / max(m - 1, 1)
        return self.stay / last + (1.0 - self.stay) * (others if m > 1 else 1.0 / last)


@dataclass(frozen=True)
class World:
    """What the device observes and how its deadline is set (units in the names).

    ``deadline_slack``: the deadline is a slack factor, log-uniform in this range, times the
    latency the device would expect of the server-only plan at its mean-rate estimate (an
    app's real-time target set from what it usually gets).
    """

    history_k: int = 5
    share: ShareChain = ShareChain()
    share_steps: int = 10
    deadline_slack: tuple[float, float] = (1.0, 3.0)


@dataclass(frozen=True, eq=False)
class Situations:
    """N requests placed in routes: what the device saw and what it will meet.

    ``requests[i]`` holds the device at its full share and the channel at the default
    estimate (mean of the history); :func:`planning_request` and :func:`realised_request`
    give the forms deciders plan with.
    """

    requests: tuple[Request, ...]
    routes: tuple[LinkPair, ...]
    route: np.ndarray          # (N,) index into routes
    t0_s: np.ndarray           # (N,) arrival time in the route's traces
    up_hist_bps: np.ndarray    # (N, k) one-second uplink throughput before t0, oldest first
    down_hist_bps: np.ndarray  # (N, k)
    share_hist: np.ndarray     # (N, m) compute share over the last m steps, oldest first
    share_now: np.ndarray      # (N,) the share the request computes at
    deadline_s: np.ndarray     # (N,)
    deadline_rel: np.ndarray   # (N,) deadline over the server-only plan's expected latency
    world: World

    def __len__(self) -> int:
        return len(self.requests)


def estimate_bps(hist_bps: np.ndarray, kind: str = DEFAULT_ESTIMATOR) -> np.ndarray:
    """A rate estimate per row of a (N, k) history, floored at ``ZERO_FLOOR_BPS`` (a planner
    needs a positive rate)."""
    h = np.asarray(hist_bps, dtype=np.float64)
    if kind == "mean":
        est = h.mean(axis=-1)
    elif kind == "last":
        est = h[..., -1]
    elif kind == "harmonic":
        est = h.shape[-1] / np.sum(1.0 / np.maximum(h, ZERO_FLOOR_BPS), axis=-1)
    elif kind == "ewma":
        w = EWMA_ALPHA * (1 - EWMA_ALPHA) ** np.arange(h.shape[-1])[::-1]
        est = (h * w).sum(axis=-1) / w.sum()
    else:
        raise QsplitInputError(f"estimator: unknown {kind!r}; allowed: {', '.join(ESTIMATORS)}")
    return np.maximum(est, ZERO_FLOOR_BPS)


def place(scenario: Scenario, routes: list[LinkPair] | tuple[LinkPair, ...], world: World,
          rng: np.random.Generator, n: int, profile: ModelProfile) -> Situations:
    """n requests of ``scenario`` placed uniformly in time on routes drawn uniformly.

    Draw order (fixed): the scenario's requests (device load fixed at 1: the share chain
    replaces it), route, arrival time, RTT from the route's shipped link, share paths,
    deadline slack.
    """
    from system.channel import get_link  # channel imports traces; keep this module light

    routes = tuple(routes)
    if not routes:
        raise QsplitInputError("routes: expected at least one trace route")
    base = sample_requests(replace(scenario, device_load=Dist("fixed", lo=1.0)), rng, n)
    k = world.history_k
    route = rng.integers(0, len(routes), n)
    t0 = np.empty(n)
    rtt = np.empty(n)
    for j, r in enumerate(routes):
        sel = np.flatnonzero(route == j)
        if not sel.size:
            continue
        if r.period_s <= k + 1.0:
            raise QsplitInputError(f"route {r.name!r}: {r.period_s:g} s is shorter than the "
                                   f"{k} s history plus 1 s")
        t0[sel] = rng.uniform(float(k), r.period_s, sel.size)
        rtt[sel] = get_link(r.link).sample(rng, int(sel.size)).rtt_s
    return assemble(base, routes, route, t0, rtt, world, rng, profile)


def place_at(request: Request, route: LinkPair, t0_s: np.ndarray, world: World,
             rng: np.random.Generator, profile: ModelProfile) -> Situations:
    """One request (its device at full share, its RTT) placed at each of ``t0_s`` on a route:
    the same request met by the trace's moments (plots over time)."""
    t0 = np.asarray(t0_s, dtype=np.float64)
    return assemble([request] * t0.size, (route,), np.zeros(t0.size, np.int64), t0,
                    np.full(t0.size, request.rtt_s), world, rng, profile)


def assemble(base: list[Request], routes: tuple[LinkPair, ...], route: np.ndarray,
             t0: np.ndarray, rtt: np.ndarray, world: World, rng: np.random.Generator,
             profile: ModelProfile) -> Situations:
    """Situations from requests at full share and their placements: the histories, then
    (drawn in this order) the share paths and the deadline slack."""
    n, k, m = len(base), world.history_k, world.share_steps
    up_h = np.empty((n, k))
    down_h = np.empty((n, k))
    for j, r in enumerate(routes):
        sel = np.flatnonzero(route == j)
        up_h[sel] = r.up.throughput_bps(t0[sel], k)
        down_h[sel] = r.down.throughput_bps(t0[sel], k)
    shares = world.share.paths(rng, n, m + 1)
    slack = np.exp(rng.uniform(*np.log(world.deadline_slack), n))
    up_est, down_est = estimate_bps(up_h), estimate_bps(down_h)
    reqs = tuple(replace(b, up_bps=float(u), down_bps=float(d), rtt_s=float(t))
                 for b, u, d, t in zip(base, up_est, down_est, rtt, strict=True))
    deadline = np.array([slack[i] * server_only_latency_s(profile, planning_view(
        r, up_h[i], down_h[i], shares[i, :m])) for i, r in enumerate(reqs)])
    return Situations(requests=reqs, routes=routes, route=route, t0_s=t0, up_hist_bps=up_h,
                      down_hist_bps=down_h, share_hist=shares[:, :m], share_now=shares[:, m],
                      deadline_s=deadline, deadline_rel=slack, world=world)


def server_only_latency_s(profile: ModelProfile, req: Request) -> float:
    """The latency the device expects of the server-only plan: the deadline's yardstick."""
    L = profile.n_units
    f = evaluate_arrays(profile, req, np.array([0]), np.full((1, L), 32), np.array([32]))
    return float(f.latency_s[0])


def planning_view(request: Request, up_hist_bps: np.ndarray, down_hist_bps: np.ndarray,
                  share_hist: np.ndarray, estimator: str = DEFAULT_ESTIMATOR) -> Request:
    """A request (its device at full share) as a certainty-equivalent planner sees it: rates
    estimated from the one-second histories, the device at its last observed share. The
    one form the pools, the deciders and the runtime's trace dispatcher plan with."""
    return replace(request, up_bps=float(estimate_bps(up_hist_bps, estimator)),
                   down_bps=float(estimate_bps(down_hist_bps, estimator)),
                   dev_flops_per_s=request.dev_flops_per_s * float(share_hist[-1]))


def planning_request(sit: Situations, i: int, estimator: str = DEFAULT_ESTIMATOR) -> Request:
    """Request i as a certainty-equivalent planner sees it (:func:`planning_view`)."""
    return planning_view(sit.requests[i], sit.up_hist_bps[i], sit.down_hist_bps[i],
                         sit.share_hist[i], estimator)


def realised_request(sit: Situations, i: int) -> Request:
    """Request i with the device at the share it really computes at (channel: the estimate,
    unused by the realised figures, which drain the traces)."""
    r = sit.requests[i]
    return replace(r, dev_flops_per_s=r.dev_flops_per_s * float(sit.share_now[i]))


@dataclass(frozen=True)
class Realised:
    """Realised figures of N plans (arrays (N,))."""

    latency_s: np.ndarray
    energy_j: np.ndarray
    cost: np.ndarray
    miss: np.ndarray


def realise(profile: ModelProfile, sit: Situations, i: int, cuts: np.ndarray,
            wbits: np.ndarray, abits: np.ndarray) -> Realised:
    """What N plans of request i really cost: transfers drained through the route's traces
    from t0, compute at the realised share, the server as modelled."""
    cuts = np.asarray(cuts, dtype=np.int64)
    wbits = np.asarray(wbits)
    req = realised_request(sit, i)
    f = evaluate_arrays(profile, req, cuts, wbits, np.asarray(abits))
    r, t0 = sit.routes[int(sit.route[i])], float(sit.t0_s[i])
    L = profile.n_units
    on_dev = np.arange(L)[None, :] < cuts[:, None]
    head_bits = np.sum(on_dev * profile.params[None, :] * wbits, axis=1)
    t_down = (cuts > 0) * (req.rtt_s + r.down.drain_s(t0, head_bits)) / req.reuse
    up_bits = bits_at_cut(profile, cuts, np.asarray(abits))
    t_up = (cuts < L) * (req.rtt_s / 2.0 + r.up.drain_s(t0, up_bits))
    lat = t_down + f.t_dev_s + t_up + f.t_srv_s
    en = req.p_rx_w * t_down + req.p_comp_w * f.t_dev_s + req.p_tx_w * t_up \
        + req.p_idle_w * f.t_srv_s
    return Realised(latency_s=lat, energy_j=en, cost=lat + req.beta_s_per_j * en,
                    miss=lat > sit.deadline_s[i])
