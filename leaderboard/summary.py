"""The leaderboard's figures: per decider overall and per case, as JSON and as Markdown tables.

:func:`expected_figures` keeps the part of a summary that does not depend on the machine
(decision times do), which the tests compare with the committed ``tests/data/expected_*.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from agents.evaluation import REGRET_FIGURES, regret_summary
from agents.policy import Policy
from leaderboard.claims import format_claim, measure_claims
from leaderboard.records import column, group_by
from leaderboard.suites import Suite
from system.errors import QsplitInputError

SUMMARY_FORMAT = "qsplit-eval-summary/1"
#: summary.json fields that do not depend on the machine (decision times do).
DETERMINISTIC_FIELDS = ("n", "mean_cost", *REGRET_FIGURES, "violations", "exact_match_rate",
                        "mean_latency_s", "mean_energy_j", "mean_payload_reduction")


def decider_summary(rows: Sequence[dict]) -> dict:
    """The leaderboard figures of one decider's records."""
    feasible = column(rows, "feasible")
    return {
        "n": len(rows), "mean_cost": float(column(rows, "cost").mean()),
        **regret_summary(column(rows, "regret")),
        "violations": int(len(rows) - feasible.sum()),
        "violation_rate": float(1.0 - feasible.mean()),
        "exact_match_rate": float(column(rows, "exact_match").mean()),
        "mean_latency_s": float(column(rows, "latency_s").mean()),
        "mean_energy_j": float(column(rows, "energy_j").mean()),
        "mean_payload_reduction": float(column(rows, "payload_reduction").mean()),
        "median_decision_us": float(np.median(column(rows, "decision_us"))),
    }


def summarize(rows: Sequence[dict], suite: Suite, policies: dict[str, Policy]) -> dict:
    """summary.json: per decider overall and per case, the seeds' claims, provenance."""
    by_dec, by_case = group_by(rows, "decider"), group_by(rows, "case")
    per_case = {case: {d: decider_summary(rs) for d, rs in group_by(crs, "decider").items()}
                for case, crs in by_case.items()}
    return {
        "format": SUMMARY_FORMAT, "suite": suite.name, "suite_path": suite.path,
        "model": suite.model, "profile_sha256": suite.profile.sha256(), "bits": list(suite.bits),
        "widths": suite.profile.widths,
        "cases": {c.name: {"n_requests": len({r["request"] for r in by_case.get(c.name, [])}),
                           "seed": c.seed, "skipped": c.skip_reason} for c in suite.cases},
        "decision_timing": {n: ("batch time / n (one call per case)" if p.batched
                                else "per request") for n, p in policies.items()},
        "deciders": {d: decider_summary(rs) for d, rs in by_dec.items()},
        "per_case": per_case,
        "claims": measure_claims(rows),
    }


def markdown(summary: dict) -> str:
    """summary.md: the leaderboard, regret per case, and the seeds' claims side by side."""
    dec = summary["deciders"]
    lines = [f"### Suite `{summary['suite']}` (model `{summary['model']}`)", "",
             "| decider | n | mean cost | regret mean | p50 | p95 | max | violations | "
             "exact match | mean latency ms | mean energy mJ | payload reduction | "
             "median decision µs |", "|" + "---|" * 13]
    for d, s in dec.items():
        lines.append(
            f"| {d} | {s['n']} | {s['mean_cost']:.4g} | {s['regret_mean']:.4f} | "
            f"{s['regret_p50']:.4f} | {s['regret_p95']:.4f} | {s['regret_max']:.3g} | "
            f"{100 * s['violation_rate']:.1f}% | {100 * s['exact_match_rate']:.1f}% | "
            f"{1e3 * s['mean_latency_s']:.1f} | {1e3 * s['mean_energy_j']:.1f} | "
            f"{100 * s['mean_payload_reduction']:.1f}% | {s['median_decision_us']:.0f} |")
    batched = [n for n, t in summary["decision_timing"].items() if t != "per request"]
    if batched:
        lines += ["", f"Decision time of {', '.join(batched)}: batch time / n (one call per "
                      "case); the others are timed per request."]
    lines += ["", "Mean regret per case:", "",
              "| case | " + " | ".join(dec) + " |", "|" + "---|" * (len(dec) + 1)]
    for case, per in summary["per_case"].items():
        lines.append(f"| {case} | " + " | ".join(
            f"{per[d]['regret_mean']:.4f}" if d in per else "-" for d in dec) + " |")
    skipped = {c: v["skipped"] for c, v in summary["cases"].items() if v["skipped"]}
    lines += ["", *(f"Skipped case {c}: {why}." for c, why in skipped.items())]
    claims = summary["claims"]
    subj = list(claims[0]["measured"]) if claims else []
    lines += ["", "The seeds' claims, measured on this suite:", "",
              "| comparison | seed | claimed | " + " | ".join(f"measured: {d}" for d in subj) + " |",
              "|" + "---|" * (3 + len(subj))]
    for c in claims:
        lines.append(f"| {c['claim']} | {c['seed']} | {c['claimed']} | " + " | ".join(
            format_claim(c["measured"][d], c["unit"]) for d in subj) + " |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _first_nonfinite(obj: object, where: str) -> str | None:
    """Where in a JSON tree the first NaN or infinity is (None if there is none)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        hit = _first_nonfinite(v, f"{where}.{k}" if isinstance(k, str) else f"{where}[{k}]")
        if hit:
            return hit
    return None


def summary_json(data: dict, where: str = "summary") -> str:
    """``data`` as strict JSON text (no NaN or Infinity, which JSON does not have).

    A mean of huge figures can overflow to inf; that is refused in one line naming it
    rather than written as a file other JSON readers reject.
    """
    bad = _first_nonfinite(data, where)
    if bad:
        raise QsplitInputError(f"{bad}: not a finite number (the suite's figures overflow a "
                               "double); narrow the suite's ranges")
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def expected_figures(summary: dict) -> dict:
    """The machine-independent part of a summary (what the expected-figures test compares)."""
    return {"suite": summary["suite"], "model": summary["model"],
            "profile_sha256": summary["profile_sha256"],
            "deciders": {d: {k: s[k] for k in DETERMINISTIC_FIELDS}
                         for d, s in summary["deciders"].items()},
            "claims": [{"claim": c["claim"], "measured": c["measured"]} for c in summary["claims"]]}


def compare_figures(got: object, want: object, where: str = "", rel_tol: float = 1e-9) -> list[str]:
    """Differences between two :func:`expected_figures` trees (floats to ``rel_tol``)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}.{k}: missing" for k in want if k not in got]
        out += [f"{where}.{k}: not expected" for k in got if k not in want]
        for k in want:
            if k in got:
                out += compare_figures(got[k], want[k], f"{where}.{k}", rel_tol)
        return out
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True))
                for d in compare_figures(g, w, f"{where}[{i}]", rel_tol)]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if math.isclose(got, want, rel_tol=rel_tol, abs_tol=1e-12) else \
            [f"{where}: {got!r}, expected {want!r}"]
    return [] if got == want else [f"{where}: {got!r}, expected {want!r}"]
