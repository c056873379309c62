"""The trace-variance suite: every decider on requests placed in held-out traces (§8).

Deciders: ``clairvoyant`` (exact under the realised future), ``ce_optimal`` (the exact
optimizer at the mean of the last 5 s; ``ce_last``, ``ce_harmonic``, ``ce_ewma`` other
estimators), ``ce_predicted`` (a learned rate predictor feeding it), ``saa_optimal`` (exact
over 16 futures of the training routes with the nearest histories), ``learned`` (the
committed trace policy: imitation of the clairvoyant, then PPO on the realised reward) and
``learned_imitation`` (the same after imitation only), when the model has them. Output
folder: ``summary.json``, ``summary.md``, ``records.csv`` (realised cost and miss per request and decider) and
``trace_cost_over_time.png``, written as a whole.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from system.atomic import atomic_write_bytes, atomic_write_text, publish_folder, staging_folder
from system.errors import QsplitInputError, check_keys
from system.loaders import parse_yaml, read_text, user_path

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "qsplit-trace-suite/1"


@dataclass(frozen=True)
class TraceSuite:
    """A trace-variance suite file (configs/eval/trace_variance.yaml)."""

    name: str
    models: tuple[str, ...]
    train_config: Path
    policies: Path
    routes: tuple[str, ...]
    n_requests: int
    seed: int
    saa_futures: int


def is_trace_suite(spec: str | Path) -> bool:
    """Whether ``spec`` names a trace-variance suite (by name or by its format line)."""
    p = _path(spec)
    return p is not None and FORMAT in read_text(p, "suite")


def _path(spec: str | Path) -> Path | None:
    p = Path(spec)
    for cand in (p, ROOT / "configs" / "eval" / f"{spec}.yaml"):
        if cand.is_file():
            return cand
    return None


def load_trace_suite(spec: str | Path) -> TraceSuite:
    """Read a trace suite strictly; errors name the file and the key."""
    p = _path(spec)
    if p is None:
        raise QsplitInputError(f"--suite: no trace suite {str(spec)!r}")
    keys = ["format", "name", "models", "train_config", "policies", "routes", "n_requests",
            "seed"]
    d = check_keys(f"suite {p.name}", parse_yaml(read_text(p, "suite"), p.name), keys,
                   ["saa_futures"])
    return TraceSuite(name=str(d["name"]), models=tuple(d["models"]),
                      train_config=user_path(d["train_config"], ROOT),
                      policies=user_path(d["policies"], ROOT), routes=tuple(d["routes"]),
                      n_requests=int(d["n_requests"]), seed=int(d["seed"]),
                      saa_futures=int(d.get("saa_futures", 16)))


def evaluate_model(suite: TraceSuite, model: str, routes: list[Any], n: int,
                   log: Any = print) -> tuple[dict[str, Any], dict[str, np.ndarray], Any]:
    """One model's deciders on the suite's requests: (figures, realised costs, pool)."""
    from agents.trace_eval import build_trace_pool, compare, decider_plans, load_trace_model
    from agents.trace_train import REPO, load_trace_config, run_ce_input
    from system.linktrace import load_routes
    from system.profiles import load_profile
    from system.scenario import load_scenario

    profile = load_profile(model)
    _, opts = load_trace_config(suite.train_config)
    train_routes = load_routes(opts.train_routes, REPO)
    ce_input = run_ce_input(suite.policies / model)
    pool = build_trace_pool(profile, load_scenario(opts.scenario), routes, n, suite.seed,
                            ce_input=ce_input)
    models = {}
    for name, file in (("learned", "model.zip"), ("learned_imitation", "bc_model.zip")):
        zpath = suite.policies / model / file
        if zpath.is_file():
            models[name] = load_trace_model(str(zpath), profile, pool.obs.shape[1])
        else:
            log(f"[{model}] no trace policy at {zpath}: {name} is skipped")
    plans = decider_plans(profile, pool, train_routes, models, suite.saa_futures, log)
    figs, costs = compare(profile, pool, plans)
    if "learned" in figs:
        for ref, key in (("ce_optimal", "learned_over_ce"), ("saa_optimal", "learned_over_saa")):
            figs[key] = figs["learned"]["regret_mean"] / figs[ref]["regret_mean"]
            figs[f"{key}_ci90"] = ratio_ci90(costs["learned"], costs[ref], pool.clair_cost)
    return figs, costs, pool


def ratio_ci90(a: np.ndarray, b: np.ndarray, clair: np.ndarray, n_boot: int = 2000,
               seed: int = 0) -> list[float]:
    """90% bootstrap interval (requests resampled in pairs) of mean regret a over mean regret
    b: how far the ratio moves with which requests were drawn (a few outages weigh much)."""
    ra, rb = a / clair - 1.0, b / clair - 1.0
    idx = np.random.default_rng(seed).integers(0, len(ra), (n_boot, len(ra)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ra[idx].mean(axis=1) / rb[idx].mean(axis=1)
    lo, hi = np.quantile(ratio, [0.05, 0.95])
    return [float(lo), float(hi)]


def markdown(figs: dict[str, dict[str, Any]]) -> str:
    """One table per model: decider, mean / p95 / total regret, miss rate."""
    lines = []
    for model, f in figs.items():
        lines += [f"### {model}", "", "| decider | mean regret | p95 regret | total-cost regret "
                  "| miss rate |", "|---|---|---|---|---|"]
        for d, s in f.items():
            if isinstance(s, dict):
                lines.append(f"| {d} | {s['regret_mean']:.2%} | {s['regret_p95']:.2%} | "
                             f"{s['regret_total']:.2%} | {s['miss_rate']:.2%} |")
        for k in ("learned_over_ce", "learned_over_saa"):
            if k in f:
                lo, hi = f[f"{k}_ci90"]
                lines.append(f"\n{k}: {f[k]:.3f} (90% bootstrap interval {lo:.2f}-{hi:.2f})")
        lines.append("")
    return "\n".join(lines)


def run_trace_suite(spec: str | Path, out: Path, traces: Path | None = None,
                    models: list[str] | None = None, n_requests: int | None = None,
                    plots: bool = True, log: Any = print) -> dict[str, Any]:
    """Evaluate the suite (``traces`` replaces its routes) and write ``out`` as a whole."""
    from system.linktrace import load_routes

    suite = load_trace_suite(spec)
    routes = load_routes([str(traces)] if traces else list(suite.routes), ROOT)
    n = n_requests or suite.n_requests
    figs: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    pools = {}
    models = None if models in (None, ["all"]) else models
    for model in models or suite.models:
        f, costs, pool = evaluate_model(suite, model, routes, n, log)
        figs[model] = f
        pools[model] = pool
        for d, c in costs.items():
            rows += [{"model": model, "decider": d, "index": i, "route": pool.sit.routes[
                int(pool.sit.route[i])].name, "t0_s": float(pool.sit.t0_s[i]),
                "cost": float(c[i]), "clairvoyant_cost": float(pool.clair_cost[i])}
                for i in range(len(c))]
    tmp = staging_folder(out)
    atomic_write_text(tmp / "summary.json", json.dumps(
        {"suite": suite.name, "routes": [r.name for r in routes], "n_requests": n,
         "figures": figs}, indent=1))
    atomic_write_text(tmp / "summary.md", markdown(figs))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(tmp / "records.csv", buf.getvalue())
    if plots:
        from leaderboard.variance_plot import cost_over_time_png

        model = (models or suite.models)[0]
        atomic_write_bytes(tmp / "trace_cost_over_time.png",
                           cost_over_time_png(model, suite, routes[0], pools[model]))
    publish_folder(tmp, out, replace=lambda p: (p / "summary.json").is_file(),
                   what="evaluation output")
    return figs
