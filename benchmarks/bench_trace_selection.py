"""How the shipped trace-policy configuration was chosen: on a validation route.

One training route (TMobile-LTE-short by default) is taken out of the training routes of
``configs/ppo_trace.yml``. A configuration variant is trained on the rest
(``python -m agents.trace_train``'s own ``train``), then scored on 1,000 requests placed in
the validation route: the learned policy's mean regret over the mean-estimate optimizer's.
Variants: ``ce_input`` (the shipped one: the CE optimizer's plan is an input), ``base``
(without it), ``long`` (without it, 200,000 PPO steps). ``--test`` instead trains the
variant on every training route and scores it on the held-out routes of the
trace_variance suite, as bench_variance.py does for the shipped policies. Run folders and
configs go under ``--out`` (an existing run is reused). The last line printed is one JSON
object.

    python benchmarks/bench_trace_selection.py --model resnet18 --variant base [--test]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from agents.trace_eval import build_trace_pool, load_trace_model, policy_plans, summary  # noqa: E402
from agents.trace_train import DEFAULT_CONF, ENV_ID, load_trace_config, train  # noqa: E402
from envs.trace_pool import realise_plans  # noqa: E402
from leaderboard.variance import evaluate_model, load_trace_suite  # noqa: E402
from system.linktrace import load_routes  # noqa: E402
from system.profiles import load_profile  # noqa: E402
from system.scenario import load_scenario  # noqa: E402

VARIANTS = {"ce_input": {"ce_input": True}, "base": {"ce_input": False},
            "long": {"ce_input": False, "n_timesteps": 2e5}}


def variant_config(variant: str, validation: str | None) -> dict:
    """The shipped config with the variant's changes and, given ``validation``
    (FOLDER:NAME), that route moved from the training routes to the test routes."""
    doc = yaml.safe_load(DEFAULT_CONF.read_text(encoding="utf-8"))
    q = doc["qsplit"][ENV_ID]
    change = dict(VARIANTS[variant])
    if "n_timesteps" in change:
        doc[ENV_ID]["n_timesteps"] = change.pop("n_timesteps")
    q.update(change)
    if validation:
        folder, _, name = validation.partition(":")
        kept = []
        for spec in q["train_routes"]:
            f, _, names = spec.partition(":")
            rest = [n for n in names.split(",") if n and n != name]
            if f != folder or not names:
                kept.append(spec)
            elif rest:
                kept.append(f"{f}:{','.join(rest)}")
        q["train_routes"], q["test_routes"] = kept, [validation]
    return doc


def main() -> None:
    """Train (or reuse) the variant's run, score it, print the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="ce_input")
    ap.add_argument("--validation-route",
                    default="../shared/data/traces/mahimahi_cellular:TMobile-LTE-short")
    ap.add_argument("--test", action="store_true", help="train on every training route and "
                    "score on the held-out routes instead")
    ap.add_argument("--requests", type=int, default=1000, help="validation requests")
    ap.add_argument("--seed", type=int, default=777, help="validation placement seed")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "selection")
    a = ap.parse_args()
    t0 = time.perf_counter()
    tag = f"{'test' if a.test else 'validation'}-{a.variant}"
    conf = a.out / f"{tag}.yml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(yaml.safe_dump(variant_config(a.variant, None if a.test
                                                  else a.validation_route), sort_keys=False))
    run = a.out / tag / a.model
    if not (run / "model.zip").is_file():
        train(a.model, run, conf, seed=0, cache=ROOT / "runs" / "pools", verbose=False)
    out: dict = {"model": a.model, "variant": a.variant}
    if a.test:
        suite = replace(load_trace_suite("trace_variance"), policies=a.out / tag,
                        train_config=conf)
        routes = load_routes(list(suite.routes), ROOT)
        figs, _, _ = evaluate_model(suite, a.model, routes, suite.n_requests,
                                    lambda s: print(s, file=sys.stderr))
        out.update(routes=[r.name for r in routes], n_requests=suite.n_requests,
                   learned=figs["learned"], ce_optimal=figs["ce_optimal"],
                   learned_over_ce=figs["learned_over_ce"],
                   learned_over_ce_ci90=figs["learned_over_ce_ci90"])
    else:
        _, opts = load_trace_config(conf)
        prof = load_profile(a.model)
        pool = build_trace_pool(prof, load_scenario(opts.scenario),
                                load_routes(list(opts.test_routes), ROOT), a.requests, a.seed,
                                ce_input=opts.ce_input)
        model = load_trace_model(str(run / "model.zip"), prof, pool.obs.shape[1])
        c, _, miss = realise_plans(prof, pool.sit, policy_plans(model, prof, pool.sit, pool.obs))
        ce = summary(pool.ce_cost, pool.clair_cost, pool.ce_miss)
        learned = summary(c, pool.clair_cost, miss)
        out.update(validation_route=a.validation_route, n_requests=a.requests,
                   learned=learned, ce_optimal=ce,
                   learned_over_ce=learned["regret_mean"] / ce["regret_mean"])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
