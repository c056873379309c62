"""Running a suite: every decider on every case's requests, each plan costed and compared.

Each plan is costed by the cost model (system/cost.py) and compared with the exact optimum
(system/optimal.py): regret = cost / optimal cost - 1. A plan over its accuracy budget is a
violation: it is flagged (``feasible`` false) and its regret is still reported.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from agents.policy import Policy, make_policy, split_label
from leaderboard.plots import write_plots
from leaderboard.records import cost_columns, plan_to_row, write_csv
from leaderboard.suites import Suite
from leaderboard.summary import SUMMARY_FORMAT, markdown, summarize, summary_json
from system.atomic import atomic_write_text, publish_folder, staging_folder
from system.cost import check_finite_figures, evaluate_plans
from system.errors import QsplitInputError
from system.loaders import parse_json, read_text
from system.optimal import solve
from system.plan import Plan
from system.request import Request, request_to_row
from system.scenario import sample_requests


def make_policies(specs: Sequence[str], suite: Suite, ppo_run: Path | None = None) -> dict[str, Policy]:
    """Policies by label, in the order given; a label given twice is an error.

    ``ppo_run`` stands in for a bare ``ppo`` spec (the committed default policy otherwise).
    """
    out: dict[str, Policy] = {}
    for spec in specs:
        if ppo_run is not None and spec == "ppo":
            spec = f"ppo:{ppo_run}"
        label, _ = split_label(spec)
        if label in out:
            raise QsplitInputError(f"decider: label {label!r} given twice; write LABEL=SPEC")
        out[label] = make_policy(spec, suite.profile, suite.bits)
    return out


def _timed_plans(policy: Policy, reqs: Sequence[Request],
                 tick: Callable[[int], None]) -> tuple[list[Plan], np.ndarray]:
    """Plans and decision time per request (µs). Batched policies: one call, time / n."""
    policy.decide_batch(reqs[:1])            # warm-up: first-call costs are not decisions
    if policy.batched:
        t0 = time.perf_counter()
        plans = policy.decide_batch(reqs)
        dt = (time.perf_counter() - t0) / len(reqs)
        tick(len(reqs))
        return plans, np.full(len(reqs), dt * 1e6)
    plans, us = [], np.empty(len(reqs))
    for i, r in enumerate(reqs):
        t0 = time.perf_counter()
        plans.append(policy.decide(r))
        us[i] = (time.perf_counter() - t0) * 1e6
        tick(1)
    return plans, us


def run_suite(suite: Suite, policies: dict[str, Policy], *, progress: bool = True,
              log: Callable[[str], None] = print,
              n_requests: int | None = None) -> list[dict]:
    """Every policy on every case's requests; one record per (request, decider).

    The reference optimum is solved separately from any ``optimal`` decider, so that
    decider's zero regret checks that records line up, not that a number equals itself.
    """
    from tqdm import tqdm

    cases = [c for c in suite.cases if not c.skip_reason]
    for c in suite.cases:
        if c.skip_reason:
            log(f"skipped case {c.name}: {c.skip_reason}")
    count = {c.name: n_requests or c.n_requests for c in cases}
    total = sum(count.values()) * (len(policies) + 1)
    rows: list[dict] = []
    prof, bits = suite.profile, suite.bits
    with tqdm(total=total, unit="decision", disable=not progress, file=sys.stderr,
              desc=suite.name, dynamic_ncols=True) as bar:
        for case in cases:
            reqs = sample_requests(case.scenario, np.random.default_rng(case.seed), count[case.name])
            bar.set_postfix_str(case.name)
            opt = []
            for r in reqs:
                opt.append(solve(prof, r, bits).plan)
                bar.update(1)
            decided = {name: _timed_plans(p, reqs, bar.update) for name, p in policies.items()}
            for i, r in enumerate(reqs):
                plans = [opt[i], *(decided[n][0][i] for n in policies)]
                f = check_finite_figures(evaluate_plans(prof, r, plans),
                                         f"suite {suite.name}, case {case.name}, request {i}")
                base = {"suite": suite.name, "case": case.name, "request": i, **request_to_row(r)}
                for j, name in enumerate(policies, start=1):
                    rows.append({
                        **base, "decider": name, **plan_to_row(plans[j]), **cost_columns(f, j),
                        "opt_cost": float(f.cost[0]), "regret": float(f.cost[j] / f.cost[0] - 1.0),
                        "exact_match": plans[j] == opt[i], "decision_us": float(decided[name][1][i])})
    return rows


#: What an evaluation output folder holds (besides the plots ``eval_*.png``).
OUTPUT_FILES = ("records.csv", "summary.json", "summary.md")
OUTPUT_WHAT = "leaderboard output folder"


def is_output_folder(path: Path) -> bool:
    """``path`` is a folder an evaluation wrote (or an empty one): safe to replace as a whole.

    Only the output's own files may be in it, and its ``summary.json`` must be a summary, so
    a folder that holds anything of the user's is never replaced.
    """
    if not path.is_dir():
        return False
    names = [p.name for p in path.iterdir()]
    if any(n not in OUTPUT_FILES and not (n.startswith("eval_") and n.endswith(".png"))
           for n in names):
        return False
    if "summary.json" not in names:
        return True
    try:
        data = parse_json(read_text(path / "summary.json", "summary.json"), "summary.json")
    except QsplitInputError:
        return False
    return isinstance(data, dict) and data.get("format") == SUMMARY_FORMAT


def check_output_path(out: Path) -> None:
    """Refuse (one line) an ``out`` that exists and is not an evaluation output, or that lies
    under a file, before a run rather than after it."""
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise QsplitInputError(f"--out {out}: {above} is not a folder (cannot write under a file)")
    if (out.exists() or out.is_symlink()) and not is_output_folder(out):
        raise QsplitInputError(f"--out {out}: exists and is not a {OUTPUT_WHAT} (refusing to "
                               "replace it; choose another path or remove it yourself)")


def write_output(out: Path, rows: Sequence[dict], summary: dict, suite: Suite,
                 plots: bool = True) -> Path:
    """Write the output folder as a whole: filled beside ``out``, then switched in one step.

    An interrupt or error at any point leaves ``out`` as it was (the previous evaluation, or
    nothing), never a mix of two runs.
    """
    check_output_path(out)
    stage = staging_folder(out)
    try:
        write_csv(rows, stage / "records.csv")
        atomic_write_text(stage / "summary.json", summary_json(summary))
        atomic_write_text(stage / "summary.md", markdown(summary))
        if plots:
            write_plots(rows, stage, suite.profile)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return publish_folder(stage, out, replace=is_output_folder, what=OUTPUT_WHAT)


def evaluate_suite(suite: Suite, specs: Sequence[str] | None = None, out: Path | None = None,
             plots: bool = True, progress: bool = True, n_requests: int | None = None,
             log: Callable[[str], None] = print, ppo_run: Path | None = None) -> dict:
    """Run a suite, write the output folder (when ``out`` is given), return the summary.

    The folder holds ``records.csv``, ``summary.json``, ``summary.md`` and, with ``plots``,
    the PNG plots ``eval_*.png`` (:func:`write_output`). An ``out`` that is not an evaluation
    output is refused before the run.
    """
    if out is not None:
        check_output_path(out)
    policies = make_policies(specs or suite.deciders, suite, ppo_run)
    rows = run_suite(suite, policies, progress=progress, log=log, n_requests=n_requests)
    if not rows:
        raise QsplitInputError(f"suite {suite.name}: every case was skipped; nothing to evaluate")
    summary = summarize(rows, suite, policies)
    if out is not None:
        write_output(out, rows, summary, suite, plots)
    return summary
