"""Speed and exactness of the exact optimizer against scipy.optimize.milp (HiGHS).

Both solve the same random requests on one 53-unit profile with 7 weight and 7 activation
bit widths; the MILP holds the whole problem (cut, activation bits, weight bits as binaries).
Times are wall-clock per request, unit tables included, medians over the run.
The last line printed is one JSON object.

    python benchmarks/bench_optimizer.py [--units 53] [--instances 1000] [--milp-instances 100]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from system.bits import DEFAULT_BITS
from system.cost import evaluate_plans
from system.milp import solve_milp
from system.optimal import solve
from system.profiles import random_profile
from system.request import random_request


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=53)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--milp-instances", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    prof = random_profile(args.units, rng, name=f"random{args.units}")
    reqs = [random_request(rng) for _ in range(args.instances)]
    for r in reqs[:20]:
        solve(prof, r)  # warm-up
    t_opt, sols = [], []
    for r in reqs:
        t0 = time.perf_counter()
        sols.append(solve(prof, r))
        t_opt.append(time.perf_counter() - t0)
    t_milp, mismatches = [], 0
    for r, s in zip(reqs[: args.milp_instances], sols, strict=False):
        t0 = time.perf_counter()
        plan = solve_milp(prof, r)
        t_milp.append(time.perf_counter() - t0)
        ref = float(evaluate_plans(prof, r, [plan]).cost[0])
        if abs(ref - s.cost) > 1e-9 * abs(ref):
            mismatches += 1
    med = float(np.median(t_opt)) * 1e3
    med_milp = float(np.median(t_milp)) * 1e3
    print(f"optimizer: median {med:.3f} ms, p95 {np.percentile(t_opt, 95) * 1e3:.3f} ms, "
          f"max {max(t_opt) * 1e3:.2f} ms over {len(reqs)} requests; "
          f"mean exact knapsack solves {np.mean([s.steps for s in sols]):.2f}")
    print(f"milp:      median {med_milp:.2f} ms over {len(t_milp)} requests")
    print(json.dumps({"units": args.units, "bits": len(DEFAULT_BITS),
                      "instances": len(reqs), "milp_instances": len(t_milp),
                      "median_ms": round(med, 4), "p95_ms": round(float(np.percentile(t_opt, 95)) * 1e3, 4),
                      "milp_median_ms": round(med_milp, 3),
                      "speedup_vs_milp": round(med_milp / med, 1), "mismatches": mismatches}))


if __name__ == "__main__":
    main()
