"""Deciders compared on the same realised traces (DESIGN.md §8), and their figures.

Regret is a decider's realised cost over the clairvoyant's realised cost, minus one; misses
(realised latency over the request's deadline) are counted apart. Every decider plans from
what the device knows at arrival, except the clairvoyant, which sees the realised future.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from envs.trace_pool import TracePool, build_trace_pool, realise_plans, solve_pool
from system.bits import DEFAULT_BITS
from system.codec import ActionCodec, ObservationEncoder
from system.cost import unit_tables
from system.linktrace import LinkPair
from system.optimal import solve
from system.plan import Plan
from system.profiles import ModelProfile
from system.rate_predictor import RatePredictor
from system.realised import FutureLibrary, saa
from system.repair import execute_action
from system.variance import DEFAULT_ESTIMATOR, ESTIMATORS, Situations, planning_request

#: The pool builders, for callers outside envs' arrow (leaderboard).
__all__ = ["build_trace_pool", "compare", "decider_plans", "load_trace_model", "policy_plans",
           "solve_pool", "summary"]


def summary(cost: np.ndarray, clair: np.ndarray, miss: np.ndarray) -> dict[str, float]:
    """Mean, p95 and total-cost regret against the clairvoyant, and the miss rate; and how
    the mean is made: the share of requests planned exactly as the clairvoyant would cost
    them, the worst regret, and the share of the mean the 10 worst requests carry."""
    r = cost / clair - 1.0
    worst = np.sort(r)[::-1]
    total = float(np.sum(r))
    return {"regret_mean": float(np.mean(r)), "regret_p95": float(np.quantile(r, 0.95)),
            "regret_total": float(np.sum(cost) / np.sum(clair) - 1.0),
            "miss_rate": float(np.mean(miss)), "n": len(r),
            "exact_share": float(np.mean(r <= 1e-9)), "regret_max": float(worst[0]),
            "top10_share": float(worst[:10].sum() / total) if total > 0 else 0.0}


def policy_plans(model: Any, profile: ModelProfile, sit: Situations, obs: np.ndarray
                 ) -> list[Plan]:
    """A trained policy's deterministic plans, each repaired to the budget if needed."""
    actions, _ = model.predict(obs, deterministic=True)
    plans = []
    for i in range(len(sit)):
        req = planning_request(sit, i)
        plans.append(execute_action(unit_tables(profile, req), req.eps_pp, actions[i]).plan)
    return plans


def load_trace_model(path: str, profile: ModelProfile, n_features: int) -> Any:
    """A trace policy's model.zip, read without unpickling (:func:`agents.weights.read_policy`)."""
    from agents.weights import read_policy

    shim = SimpleNamespace(n_features=n_features, clip=ObservationEncoder().clip)
    return read_policy(path, shim, ActionCodec(profile.n_units, DEFAULT_BITS).nvec)


def decider_plans(profile: ModelProfile, pool: TracePool, train_routes: list[LinkPair],
                  models: dict[str, Any] | None = None, saa_futures: int = 16,
                  log: Callable[[str], None] = lambda s: None) -> dict[str, list[Plan]]:
    """Every decider's plans for the pool's requests (the clairvoyant's come from the pool)."""
    sit = pool.sit
    n = len(sit)
    codec = ActionCodec(profile.n_units, DEFAULT_BITS)
    out: dict[str, list[Plan]] = {"clairvoyant": [codec.decode(a) for a in pool.clair_action]}
    # the pool solved the default estimator's plans (ce_optimal) already
    out["ce_optimal"] = [codec.decode(a) for a in pool.ce_action]
    for kind in (k for k in ESTIMATORS if k != DEFAULT_ESTIMATOR):
        out[f"ce_{kind}"] = [solve(profile, planning_request(sit, i, kind)).plan
                             for i in range(n)]
    pred = RatePredictor.fit(train_routes, sit.world.history_k)
    up, down = pred.predict(sit.up_hist_bps, sit.down_hist_bps)
    out["ce_predicted"] = [solve(profile, replace(planning_request(sit, i), up_bps=float(up[i]),
                                                  down_bps=float(down[i]))).plan
                           for i in range(n)]
    log("ce deciders done")
    lib = FutureLibrary.build(train_routes, sit.world.history_k, k_futures=saa_futures)
    out["saa_optimal"] = [saa(profile, sit, i, lib).plan for i in range(n)]
    log("saa done")
    for name, model in (models or {}).items():
        out[name] = policy_plans(model, profile, sit, pool.obs)
    return out


def compare(profile: ModelProfile, pool: TracePool, plans: dict[str, list[Plan]]
            ) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Per decider: its summary, and its realised cost per request."""
    figs, costs = {}, {}
    for name, pl in plans.items():
        c, _, m = realise_plans(profile, pool.sit, pl)
        figs[name] = summary(c, pool.clair_cost, m)
        costs[name] = c
    return figs, costs
