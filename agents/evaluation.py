"""Measure a policy on a held-out request pool: regret against the exact optimum and more.

Actions are executed as QuantSplit-v0 executes them (repair mode: repaired by
:mod:`system.repair`; penalty mode: as proposed), so the figures are the env's figures.
regret of a request = cost of the executed plan / optimal cost - 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from system.accuracy import within_limit
from system.bits import DEFAULT_BITS
from system.codec import ActionCodec
from system.cost import evaluate_arrays, unit_tables
from system.plan import plans_to_arrays
from system.profiles import ModelProfile
from system.repair import execute_action

if TYPE_CHECKING:
    from envs.pool import RequestPool

#: The regret figures every summary reports (training callbacks, leaderboard), by name.
REGRET_FIGURES = ("regret_mean", "regret_p50", "regret_p95", "regret_max")


def regret_summary(regrets: np.ndarray) -> dict[str, float]:
    """Mean, median, 95th percentile and max of per-request regrets (cost / optimal cost - 1).

    The training callbacks and the leaderboard both report these, under these names.
    """
    reg = np.asarray(regrets, dtype=np.float64)
    values = (reg.mean(), np.percentile(reg, 50), np.percentile(reg, 95), reg.max())
    return {name: float(v) for name, v in zip(REGRET_FIGURES, values, strict=True)}


def predict_actions(model: Any, obs: np.ndarray, masks: np.ndarray | None = None,
                    batch: int = 4096) -> np.ndarray:
    """Deterministic actions of an SB3 model for a batch of observations, (N, L+2) int64."""
    out = []
    for i in range(0, len(obs), batch):
        kw = {} if masks is None else {"action_masks": masks[i:i + batch]}
        a, _ = model.predict(obs[i:i + batch], deterministic=True, **kw)
        out.append(np.asarray(a, dtype=np.int64))
    return np.concatenate(out)


def pool_masks(profile: ModelProfile, pool: RequestPool,
               bits: tuple[int, ...] = DEFAULT_BITS) -> np.ndarray:
    """The env's action masks for every request of a pool (for MaskablePPO)."""
    codec = ActionCodec(profile.n_units, bits)
    return np.stack([codec.action_mask(unit_tables(profile, r, bits), r.eps_pp)
                     for r in pool.requests])


def evaluate_actions(profile: ModelProfile, pool: RequestPool, actions: np.ndarray,
                     mode: str = "repair", bits: tuple[int, ...] = DEFAULT_BITS,
                     figures: bool = True) -> dict[str, Any]:
    """Execute ``actions[i]`` on ``pool.requests[i]`` and summarise.

    Returns :func:`regret_summary`'s figures, violations (executed plans over budget: 0 in repair
    mode by construction, counted anyway), repair rate, and with ``figures`` the mean
    latency, energy and payload reduction. ``regrets`` holds the per-request values.
    """
    n = len(pool)
    regrets = np.empty(n)
    repaired = np.zeros(n, dtype=bool)
    violation = np.zeros(n, dtype=bool)
    lat = np.zeros(n)
    en = np.zeros(n)
    pay = np.zeros(n)
    for i, req in enumerate(pool.requests):
        T = unit_tables(profile, req, bits)
        res = execute_action(T, req.eps_pp, actions[i], repair=mode == "repair")
        repaired[i] = res.repaired
        violation[i] = not within_limit(res.drop_pp, req.eps_pp, T.compounding)
        regrets[i] = res.cost / pool.opt_cost[i] - 1.0
        if figures:
            f = evaluate_arrays(profile, req, *plans_to_arrays([res.plan], profile.n_units))
            lat[i], en[i], pay[i] = f.latency_s[0], f.energy_j[0], f.payload_reduction[0]
    out: dict[str, Any] = {
        "n": n, **regret_summary(regrets),
        "violations": int(violation.sum()), "repair_rate": float(repaired.mean()),
        "cut_accuracy": float(np.mean(actions[:, 0] == pool.opt_action[:, 0])),
        "regrets": regrets,
    }
    if figures:
        out.update(mean_latency_s=float(lat.mean()), mean_energy_j=float(en.mean()),
                   mean_payload_reduction=float(pay.mean()))
    return out


#: Seed of the held-out test requests: used nowhere in training or model selection.
TEST_SEED = 987_654_321


def held_out_figures(run: Path, model: str, scenario: str = "default", n: int = 10_000,
             checkpoint: str = "best", cache_dir: Path | None = None, workers: int = 2
             ) -> dict[str, Any]:
    """A finished run's policy on ``n`` fresh held-out requests of its scenario (repair mode,
    as the env and the runtime execute it): :func:`evaluate_actions`' figures.

    Loads the run's own ``model.zip`` with stable-baselines3's loader, which unpickles:
    only for runs this process trained (``bench_training``, ``agents.sweep``).
    """
    from stable_baselines3 import PPO

    from envs.pool import build_pool
    from system.profiles import load_profile
    from system.scenario import load_scenario

    profile = load_profile(model)
    pool = build_pool(profile, load_scenario(scenario), n, TEST_SEED,
                      cache_dir=cache_dir or run.parent / "pools", workers=workers)
    name = "best_model.zip" if checkpoint == "best" else "model.zip"
    policy = PPO.load(run / name, device="cpu")
    return {**evaluate_actions(profile, pool, predict_actions(policy, pool.obs)), "checkpoint": name}
