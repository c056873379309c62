"""What planning only over widths the evidence backs costs, against extrapolating the law.

For a suite's requests (the default leaderboard's by default: same cases, seeds and counts),
the exact optimizer plans twice on the same profile: over the widths its evidence backs
(the default) and with ``"widths": "extrapolate"``. Per mode it reports the mean cost,
latency and energy, and how many of the extrapolating plans put a tensor below its evidence
(``system.accuracy.extrapolated_tensors``) or a weighted unit or the cut tensor at 2-3 bits.
The claims' side of the comparison is ``python evaluate.py --suite default [--widths
extrapolate]``. The last line printed is one JSON object.

    python benchmarks/bench_widths.py [--suite default] [--model resnet18]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from leaderboard.suites import suites_for  # noqa: E402
from system.accuracy import extrapolated_tensors  # noqa: E402
from system.cost import evaluate_plans  # noqa: E402
from system.optimal import solve  # noqa: E402
from system.plan import Plan  # noqa: E402
from system.scenario import sample_requests  # noqa: E402


def low_bits(profile, plan: Plan) -> bool:  # type: ignore[no-untyped-def]
    """A weighted unit or the cut tensor at 2-3 bits."""
    w = any(b <= 3 and profile.params[i] > 0 for i, b in enumerate(plan.weight_bits))
    return w or (0 < plan.cut < profile.n_units and plan.act_bits <= 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default="default")
    ap.add_argument("--model", default=None, help="profile (default: the suite's)")
    a = ap.parse_args(argv)
    out: dict = {"suite": a.suite}
    for mode in ("evidence", "extrapolate"):
        [suite] = suites_for(a.suite, a.model, mode)
        prof = suite.profile
        reqs = [r for c in suite.cases if c.scenario is not None
                for r in sample_requests(c.scenario, np.random.default_rng(c.seed), c.n_requests)]
        plans = [solve(prof, r, suite.bits).plan for r in reqs]
        figs = [evaluate_plans(prof, r, [p]) for r, p in zip(reqs, plans, strict=True)]
        out["model"] = suite.model
        out[mode] = {
            "requests": len(reqs),
            "mean_cost": round(float(np.mean([f.cost[0] for f in figs])), 4),
            "mean_latency_ms": round(float(np.mean([f.latency_s[0] for f in figs])) * 1e3, 1),
            "mean_energy_mj": round(float(np.mean([f.energy_j[0] for f in figs])) * 1e3, 1),
            "plans_beyond_evidence": sum(bool(extrapolated_tensors(prof, p)) for p in plans),
            "plans_at_2_3_bits": sum(low_bits(prof, p) for p in plans),
        }
        print(f"{mode:>11}: " + ", ".join(f"{k} {v}" for k, v in out[mode].items()))
    out["cost_ratio"] = round(out["evidence"]["mean_cost"] / out["extrapolate"]["mean_cost"], 4)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
