"""The README's "When the channel moves" plot: one request met by every second of a held-out
trace, each decider's realised cost over time, the uplink capacity beneath."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def cost_over_time_png(model: str, suite: Any, route: Any, pool: Any) -> bytes:
    """PNG bytes: the pool's median-cost request replayed at each second of ``route``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.trace_eval import compare, decider_plans, load_trace_model, solve_pool
    from agents.trace_train import REPO, load_trace_config, run_ce_input
    from system.linktrace import load_routes
    from system.profiles import load_profile
    from system.variance import place_at

    profile = load_profile(model)
    j = int(np.argsort(pool.clair_cost)[len(pool.clair_cost) // 2])
    sit0 = pool.sit
    k = sit0.world.history_k
    times = np.arange(float(k), route.period_s - 1.0, 1.0)
    sit = place_at(sit0.requests[j], route, times, sit0.world, np.random.default_rng(0), profile)
    tp = solve_pool(profile, sit, ce_input=run_ce_input(suite.policies / model))
    _, opts = load_trace_config(suite.train_config)
    zpath = suite.policies / model / "model.zip"
    models = {"learned": load_trace_model(str(zpath), profile, tp.obs.shape[1])} \
        if zpath.is_file() else {}
    plans = decider_plans(profile, tp, load_routes(opts.train_routes, REPO), models,
                          suite.saa_futures)
    _, costs = compare(profile, tp, plans)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.5, 5.6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    for name in ("clairvoyant", "ce_optimal", "ce_predicted", "saa_optimal", "learned"):
        if name in costs:
            ax.plot(times, costs[name], label=name, lw=1.0 if name != "clairvoyant" else 2.0,
                    alpha=0.9)
    ax.set_yscale("log")
    ax.set_ylabel("realised cost (s)")
    ax.set_title(f"{model}, one request at each second of {route.name} (held out)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    cap = route.up.throughput_bps(times + 1.0, 1)[:, 0] / 1e6
    ax2.plot(times, cap, color="k", lw=0.8)
    ax2.set_ylabel("uplink Mbit/s")
    ax2.set_xlabel("arrival time in the trace (s)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
