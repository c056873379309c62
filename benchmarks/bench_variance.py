"""When the channel moves: every decider on held-out traces, against the clairvoyant.

Requests of the default scenario are placed in the held-out Mahimahi routes of
``configs/eval/trace_variance.yaml`` (never trained on). Each decider plans from what the
device knows at arrival; each plan is executed against the realised traces (transfers
drained exactly, outages included; compute at the realised share). Per model and decider:
mean, p95 and total-cost regret against the clairvoyant optimum, and the deadline miss rate;
``learned_over_ce`` is the learned policy's mean regret over ``ce_optimal``'s and
``learned_over_saa`` over ``saa_optimal``'s. The last line printed is one JSON object.

    python benchmarks/bench_variance.py [--models resnet18 digits_cnn] [--requests 1000]
                                        [--traces DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from leaderboard.variance import evaluate_model, load_trace_suite, markdown  # noqa: E402
from system.linktrace import load_routes  # noqa: E402


def main() -> None:
    """Run the comparison and print the tables, then the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="trace_variance")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--traces", type=Path, default=None, help="held-out folder instead")
    a = ap.parse_args()
    suite = load_trace_suite(a.suite)
    routes = load_routes([str(a.traces)] if a.traces else list(suite.routes), ROOT)
    n = a.requests or suite.n_requests
    out: dict = {"routes": [r.name for r in routes], "n_requests": n}
    t0 = time.perf_counter()
    for model in a.models or suite.models:
        figs, _, _ = evaluate_model(suite, model, routes, n,
                                    lambda s: print(s, file=sys.stderr, flush=True))
        out[model] = figs
        print(markdown({model: figs}), flush=True)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
