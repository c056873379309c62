"""Requests placed in trace routes with everything training and evaluation need, made once.

For each request: the trace observation (:mod:`system.trace_obs`), the clairvoyant's exact
optimum under the realised future (the reward's reference and the imitation target) and the
certainty-equivalent optimizer's realised cost and miss (the figure a learned policy must
beat). The clairvoyant costs a few milliseconds a request, so pools are built once per
(profile, scenario, routes, n, seed) and cached as ``.npz`` (no pickle).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from system.atomic import atomic_write_bytes, npz_bytes
from system.bits import DEFAULT_BITS
from system.codec import ActionCodec, ObservationEncoder
from system.linktrace import LinkPair
from system.optimal import solve
from system.plan import Plan, plans_to_arrays
from system.profiles import ModelProfile
from system.realised import clairvoyant
from system.scenario import Scenario
from system.trace_obs import trace_observation
from system.variance import Situations, World, place, planning_request, realise


@dataclass(frozen=True, eq=False)
class TracePool:
    """N placed requests, their observations (N, F) and the two reference deciders' results."""

    sit: Situations
    obs: np.ndarray
    clair_cost: np.ndarray     # (N,) realised cost of the clairvoyant optimum
    clair_action: np.ndarray   # (N, L+2)
    clair_miss: np.ndarray     # (N,) bool
    ce_cost: np.ndarray        # (N,) realised cost of the mean-estimate optimizer's plan
    ce_miss: np.ndarray        # (N,) bool
    ce_action: np.ndarray      # (N, L+2) that plan (the ce_optimal decider's)

    def __len__(self) -> int:
        return len(self.sit)


#: The pool's arrays, as a cache file holds them.
_ARRAYS = tuple(f.name for f in fields(TracePool) if f.name != "sit")


def observe(sit: Situations, encoder: ObservationEncoder,
            ce_actions: np.ndarray | None = None) -> np.ndarray:
    """The trace observation of every request of ``sit``, with the CE optimizer's plans
    (``ce_actions``, (N, L+2)) appended when given."""
    planning = [planning_request(sit, i) for i in range(len(sit))]
    return trace_observation(encoder, planning, sit.up_hist_bps, sit.down_hist_bps,
                             sit.share_hist, sit.deadline_rel, ce_actions, len(DEFAULT_BITS))


def realise_plans(profile: ModelProfile, sit: Situations, plans: list[Plan]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Realised (cost, latency_s, miss) of one plan per request."""
    cuts, wb, ab = plans_to_arrays(plans, profile.n_units)
    out = [realise(profile, sit, i, cuts[i:i + 1], wb[i:i + 1], ab[i:i + 1])
           for i in range(len(sit))]
    return (np.array([r.cost[0] for r in out]), np.array([r.latency_s[0] for r in out]),
            np.array([bool(r.miss[0]) for r in out]))


def _key(profile: ModelProfile, scenario: Scenario, routes: tuple[LinkPair, ...], n: int,
         seed: int, world: World, encoder: ObservationEncoder, ce_input: bool) -> str:
    ident = [profile.sha256(), scenario.to_dict(), [r.name for r in routes],
             [float(r.up.cum_bits[-1]) for r in routes], int(n), int(seed), repr(world),
             encoder.to_json(), "trace-pool/2", *(["ce_input"] if ce_input else [])]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_trace_pool(profile: ModelProfile, scenario: Scenario,
                     routes: list[LinkPair] | tuple[LinkPair, ...], n: int, seed: int,
                     world: World | None = None, encoder: ObservationEncoder | None = None,
                     cache_dir: str | Path | None = None, ce_input: bool = False) -> TracePool:
    """Place n requests with ``np.random.default_rng(seed)`` and solve each (see module doc);
    ``ce_input``: the observation ends with the CE optimizer's plan."""
    encoder = encoder or ObservationEncoder()
    world = world or World()
    routes = tuple(routes)
    sit = place(scenario, routes, world, np.random.default_rng(seed), n, profile)
    path = None
    if cache_dir is not None:
        key = _key(profile, scenario, routes, n, seed, world, encoder, ce_input)
        path = Path(cache_dir) / f"trace-pool-{key}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                return TracePool(sit, **{k: z[k] for k in _ARRAYS})
    pool = solve_pool(profile, sit, encoder, ce_input)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, npz_bytes({k: getattr(pool, k) for k in _ARRAYS}))
    return pool


def solve_pool(profile: ModelProfile, sit: Situations,
               encoder: ObservationEncoder | None = None, ce_input: bool = False) -> TracePool:
    """The pool of placed requests ``sit``: observations, clairvoyant and CE results."""
    encoder = encoder or ObservationEncoder()
    n = len(sit)
    codec = ActionCodec(profile.n_units, DEFAULT_BITS)
    clair = [clairvoyant(profile, sit, i).plan for i in range(n)]
    ce = [solve(profile, planning_request(sit, i)).plan for i in range(n)]
    cc, _, cm = realise_plans(profile, sit, clair)
    ec, _, em = realise_plans(profile, sit, ce)
    ce_act = np.stack([codec.encode(p) for p in ce])
    return TracePool(sit, observe(sit, encoder, ce_act if ce_input else None), cc,
                     np.stack([codec.encode(p) for p in clair]), cm, ec, em, ce_act)
