"""Speed and quality of the runtime dispatcher against the exact optimizer.

The default dispatcher (``Dispatcher.load()``: fallback ``out_of_range``, the trivial guard
on), on requests drawn from the default scenario, one at a time (wall clock per call, medians):

* ``median_us``: ``Dispatcher.decide(request)`` on a Request, guard included (and the
  repair when the policy's plan is over budget, as it happens);
* ``dict_median_us``: the same from a plain dict of SI fields, validation included;
* ``policy_path_median_us``: the median over the requests the guard passes unrepaired;
* ``batch_per_s``: decisions per second of ``decide_batch`` on batches of 1,024 Requests
  (the median batch of several passes), on one core: BLAS runs one thread (``--threads``);
* ``optimizer_median_us``: :func:`system.optimal.solve` (unit tables included), and
  ``optimizer_per_s``, its decisions per second one after another (one core);
* ``throughput_ratio``: ``batch_per_s / optimizer_per_s``, decisions per core-second;
* ``out_of_range_share``: the share of the requests outside the policy's training support
  (the ones the default dispatcher sends to the exact optimizer, row by row in a batch);
* ``refine_median_us``: ``decide`` with ``refine=True`` (local search with the cost model);
* ``policy_mean_regret`` / ``refine_mean_regret``: mean of cost / optimal cost - 1 (a
  fraction: 0.002 is 0.2%) over the optimizer's requests;
* ``breakdown_us``: where the time of one decision goes, warm (the best of repeated calls on
  one request, median over 200 requests): ``features``, ``forward`` (the MLP), ``decide``
  on requests the guard passes, and the pieces of a repair: ``unit_tables``,
  ``repair_indices``; and ``support`` (the training-support check) and ``floor`` (the
  fixed plans' floor) on the requests the guard passes;
* ``batch_breakdown_ms``: one batch's parts (:func:`batch_breakdown`): ``flat_rows``,
  ``encode``, ``forward``, ``decide_matrix`` (policy, guard, repair, floor) and
  ``decide_batch`` (all of it, plans built);
* ``report_median_us``: ``Dispatcher.report`` (the decision with its figures by the cost
  model: what ``POST /v1/plan`` computes), on the optimizer's requests;
* ``models``: for every committed bundle (``runtime/bundles``), ``units``, ``median_us``,
  ``batch_per_s``, ``optimizer_median_us`` and ``ratio`` (its throughput ratio), on
  ``--model-requests`` requests each.

The last line printed is one JSON object. Timings depend on the machine and its load (the
JSON records the load average); run it on an idle machine.

    python benchmarks/bench_dispatcher.py [--model resnet18 | --bundle DIR] [--requests 3000]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import Dispatcher
from runtime import batch as rb
from runtime import features as rf
from runtime.dispatcher import DEFAULT_MODEL, bundles_root
from system.accuracy import drop_limit_pp
from system.cost import evaluate_plans, unit_tables
from system.fields import WIDTH_FIELDS
from system.optimal import solve
from system.repair import repair_indices
from system.scenario import load_scenario, sample_requests


def _timed(fn: Callable[[Any], Any], items: list) -> np.ndarray:
    """Seconds per call, one call per item (perf_counter_ns around each)."""
    out = np.empty(len(items))
    clock = time.perf_counter_ns
    for i, x in enumerate(items):
        t0 = clock()
        fn(x)
        out[i] = clock() - t0
    return out * 1e-9


def _timed_pair(fa: Callable[[Any], Any], fb: Callable[[Any], Any], xa: list,
                xb: list) -> tuple[np.ndarray, np.ndarray]:
    """Two calls timed alternately (a, b, a, b, ...) so a change of load hits both alike."""
    ta, tb = np.empty(len(xa)), np.empty(len(xa))
    clock = time.perf_counter_ns
    for i in range(len(xa)):
        t0 = clock()
        fa(xa[i])
        t1 = clock()
        fb(xb[i])
        t2 = clock()
        ta[i], tb[i] = t1 - t0, t2 - t1
    return ta * 1e-9, tb * 1e-9


def _warm_us(fn: Callable[..., Any], *args: Any, number: int = 50) -> float:
    """Microseconds per call of ``fn(*args)``, the best of 3 repeats of ``number`` calls."""
    return min(timeit.repeat(functools.partial(fn, *args), number=number, repeat=3)) / number * 1e6


def breakdown(d: Dispatcher, reqs: list) -> dict[str, float]:
    """Median warm cost of each step of a decision and of a repair (see the docstring)."""
    rows: dict[str, list[float]] = {k: [] for k in (
        "features", "forward", "support", "floor", "decide", "unit_tables", "repair_indices")}
    for r in reqs:
        feats = d._features_of_request(r)
        rows["features"].append(_warm_us(d._features_of_request, r))
        rows["forward"].append(_warm_us(d.net.forward, feats))
        limit = drop_limit_pp(r.eps_pp)
        cut, w, a = d._policy(feats, limit)
        if d.decide_detailed(r).path == "policy":
            rows["support"].append(_warm_us(d.support.outside, feats))
            rows["floor"].append(_warm_us(d._floor, r, (cut, w, a), limit))
            rows["decide"].append(_warm_us(d.decide, r))
            continue
        T = unit_tables(d.profile, r, d.bits)
        wi = np.asarray(w, dtype=np.int64)
        rows["unit_tables"].append(_warm_us(unit_tables, d.profile, r, d.bits, number=20))
        rows["repair_indices"].append(_warm_us(repair_indices, T, r.eps_pp, cut, wi, a,
                                                number=20))
    return {k: round(float(np.median(v)), 2) for k, v in rows.items() if v}


def batch_rate(d: Dispatcher, reqs: list, size: int, passes: int = 5) -> float:
    """Decisions per second of ``decide_batch``: the median batch over ``passes`` passes."""
    batches = [reqs[i:i + size] for i in range(0, len(reqs) - size + 1, size)] or [reqs]
    d.decide_batch(batches[0])                                # warm-up
    times = []
    for _ in range(passes):
        for b in batches:
            t0 = time.perf_counter()
            d.decide_batch(b)
            times.append((time.perf_counter() - t0) / len(b))
    return 1.0 / float(np.median(times))


def batch_breakdown(d: Dispatcher, reqs: list, size: int, passes: int = 15) -> dict[str, float]:
    """Milliseconds of the parts of one batch (medians over ``passes``): reading the flat rows
    of the Requests, the encoding, the forward pass, the whole index-form decision
    (``runtime.batch.decide_matrix``: policy, guard, repair, floor) and the whole
    ``decide_batch`` (with the plans built)."""
    batch = reqs[:size]
    M = rb.flat_rows(batch)
    obs = d.encoder.encode_arrays(rf.columns(M))
    parts: dict[str, Callable[[], Any]] = {
        "flat_rows": lambda: rb.flat_rows(batch),
        "encode": lambda: d.encoder.encode_arrays(rf.columns(M)),
        "forward": lambda: d.net.forward_batch(obs),
        "decide_matrix": lambda: rb.decide_matrix(d, M, batch),
        "decide_batch": lambda: d.decide_batch(batch)}
    out = {}
    for name, fn in parts.items():
        fn()
        t = []
        for _ in range(passes):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        out[name] = round(float(np.median(t)) * 1e3, 3)
    return out


def optimizer_times(d: Dispatcher, reqs: list) -> tuple[np.ndarray, list]:
    """Seconds per :func:`system.optimal.solve` (unit tables included), and the solutions."""
    sols, t = [], np.empty(len(reqs))
    for i, r in enumerate(reqs):
        t1 = time.perf_counter_ns()
        sols.append(solve(d.profile, r, d.bits, tables=unit_tables(d.profile, r, d.bits)))
        t[i] = (time.perf_counter_ns() - t1) * 1e-9
    return t, sols


def model_figures(model: str, reqs: list, n_opt: int, size: int) -> dict[str, float]:
    """One committed bundle's figures (see the module docstring's ``models``)."""
    d = Dispatcher.load(model=model)
    for r in reqs[:200]:
        d.decide(r)
    med = float(np.median(_timed(d.decide, reqs))) * 1e6
    rate = batch_rate(d, reqs, size, passes=3)
    t_opt, _ = optimizer_times(d, reqs[:n_opt])
    return {"units": d.profile.n_units, "median_us": round(med, 2), "batch_per_s": round(rate),
            "optimizer_median_us": round(float(np.median(t_opt)) * 1e6, 1),
            "ratio": round(rate * float(np.sum(t_opt)) / len(t_opt), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="bundle folder")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="committed bundle of this model")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--optimizer-requests", type=int, default=500)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", default="1", help="BLAS threads (1: one core)")
    ap.add_argument("--model-requests", type=int, default=2048,
                    help="requests per committed bundle in the per-model figures")
    args = ap.parse_args()
    blas = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    if any(os.environ.get(v) != args.threads for v in blas):   # BLAS reads them when it loads
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, **dict.fromkeys(blas, args.threads)})

    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    d = Dispatcher.load(args.bundle, model=args.model)
    dr = Dispatcher.load(args.bundle, model=args.model, refine=True)
    prof = d.profile
    rng = np.random.default_rng(args.seed)
    reqs = sample_requests(load_scenario(args.scenario), rng, args.requests)
    dicts = [{**{f: getattr(r, f) for f in rf.SCALAR_FIELDS},
              **{f.name: list(getattr(r, f.name)) for f in WIDTH_FIELDS}} for r in reqs]
    for r in reqs[:200]:                                  # warm-up
        d.decide(r)
        dr.decide(r)

    t_one, t_dict = _timed_pair(d.decide, d.decide, reqs, dicts)
    t_one2, _ = _timed_pair(d.decide, d.decide, reqs, dicts)   # a second pass: the better one
    med = min(float(np.median(t_one)), float(np.median(t_one2))) * 1e6
    paths = [d.decide_detailed(r).path for r in reqs]
    on_policy = np.array([p == "policy" for p in paths])
    fast_med = float(np.median(t_one[on_policy])) * 1e6 if on_policy.any() else float("nan")

    batch_per_s = batch_rate(d, reqs, args.batch)
    oor_share = float(np.mean([d.support.outside(d._features_of_request(r)) for r in reqs]))

    sub = reqs[:args.optimizer_requests]
    t_opt, sols = optimizer_times(d, sub)
    optimizer_per_s = len(sub) / float(np.sum(t_opt))
    t_ref = _timed(dr.decide, sub)
    opt = np.array([s.cost for s in sols])
    pol = np.array([evaluate_plans(prof, r, [d.decide(r)]).cost[0] for r in sub])
    ref = np.array([evaluate_plans(prof, r, [dr.decide(r)]).cost[0] for r in sub])
    opt_med = float(np.median(t_opt)) * 1e6
    parts = breakdown(d, reqs[:200])
    batch_parts = batch_breakdown(d, reqs, args.batch)
    t_report = _timed(d.report, sub)
    models = {m: model_figures(m, reqs[:args.model_requests], min(200, args.optimizer_requests),
                               args.batch)
              for m in sorted(p.name for p in bundles_root().iterdir() if (p / "contract.json").is_file())}
    print(f"dispatcher: median {med:.2f} us (dict input {np.median(t_dict) * 1e6:.2f} us), "
          f"p99 {np.percentile(t_one, 99) * 1e6:.1f} us over {len(reqs)} requests of "
          f"{prof.name} ({prof.n_units} units); paths "
          f"{ {p: paths.count(p) for p in sorted(set(paths))} }")
    print(f"batch:      {batch_per_s:,.0f} decisions/s in batches of {args.batch} "
          f"(BLAS threads {args.threads}); {oor_share:.2%} of requests out of support")
    print(f"optimizer:  median {opt_med:.1f} us over {len(sub)} requests, "
          f"{optimizer_per_s:,.0f}/s; speedup {opt_med / med:.0f}x per call, "
          f"{batch_per_s / optimizer_per_s:.0f}x in throughput")
    print(f"refine:     median {np.median(t_ref) * 1e6:.1f} us; mean regret "
          f"{np.mean(pol / opt - 1) * 100:.3f}% -> {np.mean(ref / opt - 1) * 100:.3f}%")
    print(f"breakdown:  warm medians (us) {parts}")
    print(f"models:     {models}")
    print(json.dumps({
        "model": prof.name, "units": prof.n_units, "requests": len(reqs),
        "median_us": round(med, 2),
        "p99_us": round(float(np.percentile(t_one, 99)) * 1e6, 2),
        "policy_path_median_us": round(fast_med, 2),
        "dict_median_us": round(float(np.median(t_dict)) * 1e6, 2),
        "batch_per_s": round(batch_per_s), "batch_size": args.batch,
        "blas_threads": args.threads,
        "optimizer_per_s": round(optimizer_per_s, 1),
        "throughput_ratio": round(batch_per_s / optimizer_per_s, 1),
        "out_of_range_share": round(oor_share, 4),
        "optimizer_median_us": round(opt_med, 1),
        "speedup_vs_optimizer": round(opt_med / med, 1),
        "refine_median_us": round(float(np.median(t_ref)) * 1e6, 1),
        "policy_mean_regret": round(float(np.mean(pol / opt - 1)), 6),
        "refine_mean_regret": round(float(np.mean(ref / opt - 1)), 6),
        "refine_p95_regret": round(float(np.percentile(ref / opt - 1, 95)), 6),
        "repair_rate": round(paths.count("repaired") / len(paths), 4),
        "breakdown_us": parts,
        "batch_breakdown_ms": batch_parts,
        "report_median_us": round(float(np.median(t_report)) * 1e6, 1),
        "models": models,
        "optimizer_requests": len(sub), "loadavg_1min": round(load0, 2),
        "machine": platform.machine(), "python": platform.python_version(),
        "numpy": np.__version__}))


if __name__ == "__main__":
    main()
