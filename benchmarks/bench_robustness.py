"""Regret of the default dispatcher on requests outside what its policy was trained on.

For each committed bundle, requests are drawn from the bundle's own training scenario (the
one its contract records) and then moved out of it, one case at a time:

* ``dev_slow`` / ``dev_fast``: device FLOP/s 3-30x (log-uniform) below the slowest / above
  the fastest device of the training sample;
* ``up_low`` / ``up_high``: uplink 10x below its training minimum / above its maximum;
* ``eps_0.05`` / ``eps_10``: budgets of 0.05 and 10 pp; ``beta_5``: energy weight 5 s/J;
  ``reuse_1000``; ``srv_share_0.05``: the server 5% free; ``rtt_3s``: a 3 s round trip.

Regret is cost / optimal cost - 1 (:func:`system.optimal.solve`), a fraction. For each case
and bundle the JSON holds the default dispatcher's mean and max regret (``Dispatcher.load``
with no options: fallback ``out_of_range``, trivial guard on) and, for comparison, those of
the policy as the env runs it (``fallback="none", trivial_guard=False``: ``plain_*``) and with
the trivial guard alone (``fallback="none"``: ``guard_only_*``). ``worse_than_trivial``
counts the default's decisions costlier than the best trivial plan (server-only, device-only
at fp32 and at 8 bits where feasible, the best fp32 cut: :mod:`system.baselines`); it must be
0. The target is a mean regret of at most 5% in every case (``meets_target``).

The last line printed is one JSON object.

    python benchmarks/bench_robustness.py [--requests 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import Dispatcher
from runtime.dispatcher import bundles_root
from system.baselines import device_only, device_only_int8, partition_only, server_only
from system.cost import evaluate_plans
from system.optimal import solve
from system.request import Request
from system.scenario import load_scenario, sample_requests

TARGET = 0.05
TRIVIAL = (server_only, device_only, device_only_int8, partition_only)


def _cases(train: list[Request], rng: np.random.Generator
           ) -> dict[str, Callable[[Request], Request]]:
    """Each case as a function moving one in-distribution request out of the training range."""
    dev = np.array([r.dev_flops_per_s for r in train])
    up = np.array([r.up_bps for r in train])

    def factor() -> float:
        return float(np.exp(rng.uniform(np.log(3.0), np.log(30.0))))

    def with_(**kw: object) -> Callable[[Request], Request]:
        return lambda r: dataclasses.replace(r, **kw)

    return {
        "dev_slow": lambda r: dataclasses.replace(r, dev_flops_per_s=float(dev.min()) / factor()),
        "dev_fast": lambda r: dataclasses.replace(r, dev_flops_per_s=float(dev.max()) * factor()),
        "up_low": with_(up_bps=float(up.min()) / 10.0),
        "up_high": with_(up_bps=float(up.max()) * 10.0),
        "eps_0.05": with_(eps_pp=0.05),
        "eps_10": with_(eps_pp=10.0),
        "beta_5": with_(beta_s_per_j=5.0),
        "reuse_1000": with_(reuse=1000.0),
        "srv_share_0.05": with_(srv_load=0.05),
        "rtt_3s": with_(rtt_s=3.0),
    }


def _figures(d: Dispatcher, reqs: list[Request], opt: list[float]) -> tuple[np.ndarray, list]:
    plans = d.decide_batch(reqs)
    single = [d.decide(r) for r in reqs]
    if plans != single:
        raise SystemExit("error: decide_batch differs from decide")
    cost = np.array([evaluate_plans(d.profile, r, [p]).cost[0] for r, p in zip(reqs, plans, strict=True)])
    return cost / np.asarray(opt) - 1.0, plans


def bench(model: str, n: int, seed: int) -> dict:
    """The figures of one committed bundle."""
    default = Dispatcher.load(model=model)
    plain = Dispatcher.load(model=model, fallback="none", trivial_guard=False)
    guard = Dispatcher.load(model=model, fallback="none")
    scenario = load_scenario(default.bundle.contract["env"]["kwargs"]["scenario"])
    rng = np.random.default_rng(seed)
    train = sample_requests(scenario, rng, 20_000)
    out: dict[str, dict] = {}
    worse = 0
    for case, move in _cases(train, rng).items():
        reqs = [move(r) for r in sample_requests(scenario, rng, n)]
        opt = [solve(default.profile, r).cost for r in reqs]
        reg, plans = _figures(default, reqs, opt)
        reg_plain, _ = _figures(plain, reqs, opt)
        reg_guard, _ = _figures(guard, reqs, opt)
        for r, p in zip(reqs, plans, strict=True):
            trivial = [f(default.profile, r, default.bits) for f in TRIVIAL]
            costs = evaluate_plans(default.profile, r, [p, *trivial])
            best = min(c for c, ok in zip(costs.cost[1:], costs.feasible[1:], strict=True) if ok)
            worse += int(costs.cost[0] > best * (1.0 + 1e-9))
        flagged = sum(default.decide_detailed(r).out_of_range for r in reqs)
        out[case] = {"mean_regret": float(reg.mean()), "max_regret": float(reg.max()),
                     "plain_mean_regret": float(reg_plain.mean()),
                     "plain_max_regret": float(reg_plain.max()),
                     "guard_only_mean_regret": float(reg_guard.mean()),
                     "guard_only_max_regret": float(reg_guard.max()),
                     "out_of_range_share": flagged / n}
    return {"cases": out, "worse_than_trivial": worse}


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints one JSON object as its last line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="requests per case and bundle")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    models = sorted(p.name for p in bundles_root().iterdir() if (p / "contract.json").is_file())
    res = {m: bench(m, args.requests, args.seed) for m in models}
    for m, r in res.items():
        for case, f in r["cases"].items():
            print(f"{m:12s} {case:15s} mean {f['mean_regret']:8.4f} max {f['max_regret']:8.4f}   "
                  f"(policy alone: mean {f['plain_mean_regret']:8.4f} max {f['plain_max_regret']:8.4f}; "
                  f"guard only: mean {f['guard_only_mean_regret']:8.4f} "
                  f"max {f['guard_only_max_regret']:8.4f})")
    worst = max(f["mean_regret"] for r in res.values() for f in r["cases"].values())
    worse = sum(r["worse_than_trivial"] for r in res.values())
    print(json.dumps({
        "dispatcher": {"fallback": "out_of_range", "refine": False, "trivial_guard": True},
        "requests_per_case": args.requests, "seed": args.seed,
        "bundles": {m: {c: {k: round(v, 6) for k, v in f.items()} for c, f in r["cases"].items()}
                    for m, r in res.items()},
        "worst_mean_regret": worst, "worse_than_trivial": worse, "target_mean_regret": TARGET,
        "meets_target": bool(worst <= TARGET and worse == 0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
