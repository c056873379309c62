"""Leaderboard: every decider on the same fixed requests, scored against the exact optimum.

    python evaluate.py --suite default                      # suite's deciders, plots, tables
    python evaluate.py --suite small --decider optimal --decider ppo:runs/ppo/QuantSplit-v0_1
    python evaluate.py --replay out/eval/default/records.csv  # re-cost every row, compare
    python evaluate.py --list                               # the suites and decider specs

A suite (``configs/eval/<name>.yaml``, loaded strictly) fixes a model profile, the deciders
and cases: a scenario (optionally with some of its keys overridden), a request count and a
seed. Every decider decides the same requests of a case; each plan is costed by the cost
model (system/cost.py) and compared with the exact optimum (system/optimal.py):
regret = cost / optimal cost - 1. A plan over its accuracy budget is a violation: it is
counted and flagged (``feasible`` false), and its regret is still reported.

Output folder (default ``out/eval/<suite>``): ``records.csv`` (one row per request and
decider, every request field at full precision, so :func:`replay_csv` can re-cost it),
``summary.json``, ``summary.md`` (tables per decider, per case, and the seeds' claims
measured side by side) and PNG plots ``eval_*.png``. Bad input (unknown decider, a run folder
without a model, a suite with unknown keys) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from agents.policy import Policy, known_specs, make_policy, split_label
from system.accuracy import FEAS_TOL_PP
from system.atomic import atomic_write_bytes, atomic_write_text
from system.bits import DEFAULT_BITS, KERNEL_WIDTHS, check_bit_set
from system.cost import evaluate_plans
from system.errors import QsplitInputError, check_keys
from system.optimal import solve
from system.plan import Plan
from system.profiles import ModelProfile, load_profile
from system.request import Request
from system.scenario import Scenario, load_scenario, sample_requests, scenario_from_dict

ROOT = Path(__file__).resolve().parent
SUITE_FORMAT = "qsplit-eval-suite/1"
_SUITE_REQUIRED = ("name", "model", "cases")
_SUITE_OPTIONAL = ("format", "description", "bits", "deciders")
_CASE_REQUIRED = ("name", "scenario", "n_requests", "seed")
_CASE_OPTIONAL = ("description", "override")
#: Deciders that are comparison points; the rest (optimal, PPO runs, bundles) are "subjects"
#: whose figures the seeds' claims table shows.
BASELINES = ("server_only", "device_only", "device_only_int8", "partition_only", "uniform")


# ------------------------------------------------------------------------------ suites

@dataclass(frozen=True, eq=False)
class Case:
    """A slice of a suite: ``n_requests`` requests drawn from ``scenario`` with ``seed``."""

    name: str
    description: str
    n_requests: int
    seed: int
    scenario: Scenario | None   # None when skipped
    skip_reason: str = ""       # why the case cannot run here (a missing trace folder)


@dataclass(frozen=True, eq=False)
class Suite:
    """A validated evaluation suite (the YAML form is described in configs/eval/README)."""

    name: str
    description: str
    model: str
    profile: ModelProfile
    bits: tuple[int, ...]
    deciders: tuple[str, ...]
    cases: tuple[Case, ...]
    path: str


def suite_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``: ``$QSPLIT_CONFIG_DIR/eval``, then configs/eval."""
    env = os.environ.get("QSPLIT_CONFIG_DIR")
    return [*([Path(env) / "eval"] if env else []), ROOT / "configs" / "eval"]


def suite_names() -> list[str]:
    """Suite names :func:`load_suite` accepts without a path."""
    return sorted({p.stem for d in suite_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def _int_field(where: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise QsplitInputError(f"{where}: expected an integer >= {lo}, got {value!r}")
    return value


def _resolve_traces(override: dict) -> tuple[dict, str]:
    """Resolve relative trace folders against the repository root; say which one is missing."""
    chans = override.get("channels")
    if not isinstance(chans, list):
        return override, ""
    out = []
    for e in chans:
        if isinstance(e, dict) and "trace_folder" in e:
            folder = Path(str(e["trace_folder"])).expanduser()
            folder = folder if folder.is_absolute() else (ROOT / folder).resolve()
            if not folder.is_dir():
                return override, f"trace folder {e['trace_folder']} not found ({folder})"
            e = {**e, "trace_folder": str(folder)}
        out.append(e)
    return {**override, "channels": out}, ""


def _case_from_dict(where: str, d: object) -> Case:
    c = check_keys(where, d, _CASE_REQUIRED, _CASE_OPTIONAL)
    name = c["name"]
    if not isinstance(name, str) or not name or "," in name:
        raise QsplitInputError(f"{where}.name: expected a non-empty string without commas")
    n = _int_field(f"{where}.n_requests", c["n_requests"], 1)
    seed = _int_field(f"{where}.seed", c["seed"], 0)
    override = c.get("override", {})
    if not isinstance(override, dict):
        raise QsplitInputError(f"{where}.override: expected a mapping of scenario keys")
    override, missing = _resolve_traces(override)
    desc = str(c.get("description", ""))
    if missing:
        return Case(name, desc, n, seed, None, skip_reason=missing)
    base = load_scenario(str(c["scenario"])).to_dict()
    scen = scenario_from_dict({**base, **override}, where=f"{where}.override")
    return Case(name, desc, n, seed, scen)


def load_suite(spec: str | Path) -> Suite:
    """A suite by name (``configs/eval/<name>.yaml``) or path; unknown keys are refused."""
    import yaml

    key = str(spec)
    path = Path(key)
    if not key.endswith((".yaml", ".yml")):
        path = next((d / f"{key}.yaml" for d in suite_dirs() if (d / f"{key}.yaml").is_file()),
                    Path(key))
    if not path.is_file():
        raise QsplitInputError(
            f"suite: unknown suite {key!r}; known: {suite_names()} or a path to a .yaml file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise QsplitInputError(f"suite {path}: malformed YAML: {exc}".replace("\n", " ")) from None
    where = f"suite {path.name}"
    d = check_keys(where, data, _SUITE_REQUIRED, _SUITE_OPTIONAL)
    if d.get("format", SUITE_FORMAT) != SUITE_FORMAT:
        raise QsplitInputError(f"{where}.format: expected {SUITE_FORMAT!r}, got {d['format']!r}")
    bits = check_bit_set(f"{where}.bits", d.get("bits", list(DEFAULT_BITS)))
    deciders = d.get("deciders", ["optimal", *BASELINES])
    if not isinstance(deciders, list) or not deciders or not all(isinstance(x, str) for x in deciders):
        raise QsplitInputError(f"{where}.deciders: expected a non-empty list of decider specs")
    cases_raw = d["cases"]
    if not isinstance(cases_raw, list) or not cases_raw:
        raise QsplitInputError(f"{where}.cases: expected a non-empty list of cases")
    cases = tuple(_case_from_dict(f"{where}.cases[{i}]", c) for i, c in enumerate(cases_raw))
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise QsplitInputError(f"{where}.cases: case names must be distinct, repeated: {dup}")
    return Suite(name=str(d["name"]), description=str(d.get("description", "")),
                 model=str(d["model"]), profile=load_profile(str(d["model"])), bits=bits,
                 deciders=tuple(deciders), cases=cases, path=str(path))


# ------------------------------------------------------------------------------ running

#: Request fields in the CSV, in order (SI units, as :class:`system.request.Request` holds them).
REQUEST_COLUMNS = ("device", "server", "dev_flops_per_s",
                   *(f"dev_kappa_{w}" for w in KERNEL_WIDTHS), "p_comp_w", "p_tx_w", "p_rx_w",
                   "p_idle_w", "srv_flops_per_s", "srv_load", "up_bps", "down_bps", "rtt_s",
                   "eps_pp", "beta_s_per_j", "reuse")
PLAN_COLUMNS = ("cut", "weight_bits", "act_bits")
FIGURE_COLUMNS = ("latency_s", "energy_j", "cost", "drop_pp", "feasible", "payload_reduction",
                  "uplink_bits", "opt_cost", "regret", "exact_match", "decision_us")
CSV_COLUMNS = ("suite", "case", "request", "decider", *REQUEST_COLUMNS, *PLAN_COLUMNS,
               *FIGURE_COLUMNS)


def request_fields(r: Request) -> dict:
    """A request as CSV columns (kappa split per kernel width)."""
    d = asdict(r)
    kap = d.pop("dev_kappa")
    d.update({f"dev_kappa_{w}": k for w, k in zip(KERNEL_WIDTHS, kap, strict=True)})
    return {k: d[k] for k in REQUEST_COLUMNS}


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
                f = evaluate_plans(prof, r, plans)
                base = {"suite": suite.name, "case": case.name, "request": i, **request_fields(r)}
                for j, name in enumerate(policies, start=1):
                    p = plans[j]
                    rows.append({
                        **base, "decider": name, "cut": p.cut,
                        "weight_bits": " ".join(map(str, p.weight_bits)), "act_bits": p.act_bits,
                        "latency_s": float(f.latency_s[j]), "energy_j": float(f.energy_j[j]),
                        "cost": float(f.cost[j]), "drop_pp": float(f.drop_pp[j]),
                        "feasible": bool(f.feasible[j]),
                        "payload_reduction": float(f.payload_reduction[j]),
                        "uplink_bits": float(f.uplink_bits[j]), "opt_cost": float(f.cost[0]),
                        "regret": float(f.cost[j] / f.cost[0] - 1.0),
                        "exact_match": p == opt[i], "decision_us": float(decided[name][1][i])})
    return rows


# ------------------------------------------------------------------------------ summary

def _col(rows: Sequence[dict], key: str) -> np.ndarray:
    return np.asarray([r[key] for r in rows], dtype=np.float64)


def decider_summary(rows: Sequence[dict]) -> dict:
    """The leaderboard figures of one decider's records."""
    reg = _col(rows, "regret")
    return {
        "n": len(rows), "mean_cost": float(_col(rows, "cost").mean()),
        "regret_mean": float(reg.mean()), "regret_p50": float(np.percentile(reg, 50)),
        "regret_p95": float(np.percentile(reg, 95)), "regret_max": float(reg.max()),
        "violations": int(len(rows) - _col(rows, "feasible").sum()),
        "violation_rate": float(1.0 - _col(rows, "feasible").mean()),
        "exact_match_rate": float(_col(rows, "exact_match").mean()),
        "mean_latency_s": float(_col(rows, "latency_s").mean()),
        "mean_energy_j": float(_col(rows, "energy_j").mean()),
        "mean_payload_reduction": float(_col(rows, "payload_reduction").mean()),
        "median_decision_us": float(np.median(_col(rows, "decision_us"))),
    }


def _by(rows: Sequence[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def summarize(rows: Sequence[dict], suite: Suite, policies: dict[str, Policy]) -> dict:
    """summary.json: per decider overall and per case, the seeds' claims, provenance."""
    by_dec, by_case = _by(rows, "decider"), _by(rows, "case")
    per_case = {case: {d: decider_summary(rs) for d, rs in _by(crs, "decider").items()}
                for case, crs in by_case.items()}
    return {
        "format": "qsplit-eval-summary/1", "suite": suite.name, "suite_path": suite.path,
        "model": suite.model, "profile_sha256": suite.profile.sha256(), "bits": list(suite.bits),
        "cases": {c.name: {"n_requests": len({r["request"] for r in by_case.get(c.name, [])}),
                           "seed": c.seed, "skipped": c.skip_reason} for c in suite.cases},
        "decision_timing": {n: ("batch time / n (one call per case)" if p.batched
                                else "per request") for n, p in policies.items()},
        "deciders": {d: decider_summary(rs) for d, rs in by_dec.items()},
        "per_case": per_case,
        "claims": seed_claims(rows),
    }


def seed_claims(rows: Sequence[dict]) -> list[dict]:
    """The seeds' headline comparisons, measured on these records (DESIGN.md §6).

    Ratios are of totals over the same requests (n / total energy for inferences per joule,
    total latency for speed), so a few huge requests weigh as they would in a deployment.
    """
    by_dec = _by(rows, "decider")
    subjects = [d for d in by_dec if d not in BASELINES or d == "partition_only"]

    def total(d: str, key: str) -> float | None:
        return float(_col(by_dec[d], key).sum()) if d in by_dec else None

    def ratio(num: float | None, den: float | None) -> float | None:
        return None if num is None or den is None or den == 0 else num / den

    def payload(d: str, device_part: bool) -> float | None:
        sel = [r for r in by_dec[d] if r["eps_pp"] <= 1.0 + FEAS_TOL_PP and r["feasible"]
               and (r["cut"] > 0 or not device_part)]
        return float(_col(sel, "payload_reduction").mean()) if sel else None

    lat, en = {d: total(d, "latency_s") for d in by_dec}, {d: total(d, "energy_j") for d in by_dec}
    specs = [
        ("payload reduction, budget <= 1 pp (mean over requests)", "QPART", "> 80%", "pct",
         lambda d: payload(d, False)),
        ("payload reduction, budget <= 1 pp, plans with a device part", "QPART", "> 80%", "pct",
         lambda d: payload(d, True)),
        ("inferences per joule vs device-only (fp32)", "AutoScale", "9.8x", "x",
         lambda d: ratio(en.get("device_only"), en[d])),
        ("inferences per joule vs server-only", "AutoScale", "1.6x", "x",
         lambda d: ratio(en.get("server_only"), en[d])),
        ("latency speedup vs server-only (status quo)", "Neurosurgeon", "3.1x", "x",
         lambda d: ratio(lat.get("server_only"), lat[d])),
        ("latency speedup vs partition-only (Neurosurgeon-style)", "Taufique et al.",
         "1.415x (+41.5% vs prior distribution)", "x",
         lambda d: ratio(lat.get("partition_only"), lat[d])),
    ]
    return [{"claim": c, "seed": s, "claimed": cl, "unit": u,
             "measured": {d: fn(d) for d in subjects}} for c, s, cl, u, fn in specs]


def _fmt_claim(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if unit == "pct" else f"{v:.2f}x"


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
            _fmt_claim(c["measured"][d], c["unit"]) for d in subj) + " |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


#: summary.json fields that do not depend on the machine (decision times do).
DETERMINISTIC_FIELDS = ("n", "mean_cost", "regret_mean", "regret_p50", "regret_p95",
                        "regret_max", "violations", "exact_match_rate", "mean_latency_s",
                        "mean_energy_j", "mean_payload_reduction")


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


# ------------------------------------------------------------------------------ files

def write_csv(rows: Sequence[dict], path: Path) -> None:
    """records.csv, atomically; floats as repr, so they read back bit for bit."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    """records.csv as dicts of strings; refuses a file without the expected columns."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise QsplitInputError(f"replay {path}: missing column(s) {missing}")
            return list(reader)
    except OSError as exc:
        raise QsplitInputError(f"replay: cannot read {path}: {exc.strerror or exc}") from None


def row_request_plan(row: dict, n_units: int,
                     bits: tuple[int, ...] = DEFAULT_BITS) -> tuple[Request, Plan]:
    """The request and plan a CSV row records (refused if the plan does not fit the profile)."""
    num = {k: float(row[k]) for k in REQUEST_COLUMNS if k not in ("device", "server")}
    kap = tuple(num.pop(f"dev_kappa_{w}") for w in KERNEL_WIDTHS)
    req = Request(**num, dev_kappa=kap, device=row["device"], server=row["server"])
    wb = tuple(int(b) for b in str(row["weight_bits"]).split())
    plan = Plan(cut=int(row["cut"]), weight_bits=wb, act_bits=int(row["act_bits"]))
    return req, plan.validate(n_units, bits)


#: Columns a replay recomputes and compares.
REPLAY_COLUMNS = ("latency_s", "energy_j", "cost", "drop_pp", "payload_reduction",
                  "uplink_bits", "feasible", "regret")


def replay_row(row: dict, profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS) -> dict:
    """Re-cost one CSV row through the cost model: its figures as the row should hold them."""
    req, plan = row_request_plan(row, profile.n_units, bits)
    f = evaluate_plans(profile, req, [plan])
    return {"latency_s": float(f.latency_s[0]), "energy_j": float(f.energy_j[0]),
            "cost": float(f.cost[0]), "drop_pp": float(f.drop_pp[0]),
            "payload_reduction": float(f.payload_reduction[0]),
            "uplink_bits": float(f.uplink_bits[0]), "feasible": bool(f.feasible[0]),
            "regret": float(f.cost[0] / float(row["opt_cost"]) - 1.0)}


def replay_mismatches(row: dict, profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS,
                      rel_tol: float = 1e-12) -> list[str]:
    """The columns of ``row`` whose recorded value differs from the re-costed one."""
    got = replay_row(row, profile, bits)
    bad = []
    for k in REPLAY_COLUMNS:
        rec = row[k]
        if k == "feasible":
            if (str(rec) == "True") != got[k]:
                bad.append(k)
        elif not math.isclose(float(rec), got[k], rel_tol=rel_tol, abs_tol=1e-300):
            bad.append(k)
    return bad


def replay_csv(path: Path, profile: ModelProfile | None = None) -> tuple[int, list[str]]:
    """Re-cost every row of records.csv; (rows checked, one line per mismatching row).

    The summary.json beside the CSV gives the bit set and, without ``profile``, the model;
    the model's hash must match the one evaluated.
    """
    path = Path(path)
    sj = path.parent / "summary.json"
    meta = json.loads(sj.read_text(encoding="utf-8")) if sj.is_file() else {}
    if profile is None:
        if not meta:
            raise QsplitInputError(f"replay: no summary.json beside {path}; give --model")
        profile = load_profile(meta["model"])
        if profile.sha256() != meta["profile_sha256"]:
            raise QsplitInputError(
                f"replay: model {meta['model']!r} differs from the one evaluated (profile hash)")
    bits = check_bit_set("summary.json bits", meta.get("bits", list(DEFAULT_BITS)))
    rows = read_csv(path)
    bad = []
    for i, row in enumerate(rows):
        cols = replay_mismatches(row, profile, bits)
        if cols:
            bad.append(f"row {i + 2} ({row['case']}, request {row['request']}, "
                       f"{row['decider']}): {', '.join(cols)} differ")
    return len(rows), bad


# ------------------------------------------------------------------------------ plots

def _save(fig: object, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def write_plots(rows: Sequence[dict], out: Path, profile: ModelProfile) -> list[Path]:
    """eval_regret_cdf, eval_cost_vs_uplink, eval_cut_map, eval_energy_latency (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_dec = _by(rows, "decider")
    colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(by_dec)}
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for d, rs in by_dec.items():
        reg = np.sort(_col(rs, "regret"))
        ax.step(reg, np.arange(1, len(reg) + 1) / len(reg), where="post", label=d, color=colors[d])
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(left=0)
    ax.set_xlabel("regret = cost / optimal cost - 1 (symlog)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Regret CDF per decider")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(out / "eval_regret_cdf.png")
    _save(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    up_all = _col(rows, "up_bps") / 1e6
    edges = np.geomspace(up_all.min(), up_all.max() * (1 + 1e-9), 16)
    mid = np.sqrt(edges[:-1] * edges[1:])
    for d, rs in by_dec.items():
        up, cost = _col(rs, "up_bps") / 1e6, _col(rs, "cost")
        idx = np.digitize(up, edges) - 1
        med = [np.median(cost[idx == k]) if np.any(idx == k) else np.nan for k in range(len(mid))]
        ax.plot(mid, med, marker="o", ms=3, label=d, color=colors[d])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("uplink rate, Mbit/s (log bins)")
    ax.set_ylabel("median cost = latency_s + beta energy_j")
    ax.set_title("Cost against uplink rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    paths.append(out / "eval_cost_vs_uplink.png")
    _save(fig, paths[-1])
    plt.close(fig)

    learned = [d for d in by_dec if d not in BASELINES and d != "optimal"]
    panels = [*learned, "optimal"] if "optimal" in by_dec else learned or list(by_dec)[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False,
                             sharey=True)
    sc = None
    for ax, d in zip(axes[0], panels, strict=True):
        rs = by_dec[d]
        sc = ax.scatter(_col(rs, "up_bps") / 1e6, _col(rs, "dev_flops_per_s") / 1e9,
                        c=_col(rs, "cut"), cmap="viridis", vmin=0, vmax=profile.n_units, s=6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("uplink rate, Mbit/s")
        ax.set_title(f"chosen cut: {d}")
    axes[0][0].set_ylabel("device compute, GFLOP/s")
    fig.colorbar(sc, ax=axes[0].tolist(), label=f"cut (0 = server-only, {profile.n_units} = device-only)")
    paths.append(out / "eval_cut_map.png")
    _save(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for d, rs in by_dec.items():
        per_case = _by(rs, "case").values()
        ax.scatter([1e3 * _col(c, "latency_s").mean() for c in per_case],
                   [1e3 * _col(c, "energy_j").mean() for c in per_case], s=14, alpha=0.6,
                   color=colors[d])
        ax.scatter([1e3 * _col(rs, "latency_s").mean()], [1e3 * _col(rs, "energy_j").mean()],
                   s=90, marker="X", color=colors[d], edgecolor="black", label=d)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mean latency, ms")
    ax.set_ylabel("mean device energy, mJ")
    ax.set_title("Energy against latency (X: all requests, dots: one per case)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    paths.append(out / "eval_energy_latency.png")
    _save(fig, paths[-1])
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------ command line

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


def evaluate(suite: Suite, specs: Sequence[str] | None = None, out: Path | None = None,
             plots: bool = True, progress: bool = True, n_requests: int | None = None,
             log: Callable[[str], None] = print, ppo_run: Path | None = None) -> dict:
    """Run a suite, write the output folder (when ``out`` is given), return the summary."""
    policies = make_policies(specs or suite.deciders, suite, ppo_run)
    rows = run_suite(suite, policies, progress=progress, log=log, n_requests=n_requests)
    if not rows:
        raise QsplitInputError(f"suite {suite.name}: every case was skipped; nothing to evaluate")
    summary = summarize(rows, suite, policies)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out / "records.csv")
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        atomic_write_text(out / "summary.md", markdown(summary))
        if plots:
            write_plots(rows, out, suite.profile)
    return summary


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="decider specs: " + ", ".join(known_specs()))
    ap.add_argument("--suite", default="default", help="suite name (configs/eval) or YAML path")
    ap.add_argument("--decider", action="append", metavar="SPEC",
                    help="decider to evaluate (repeat); default: the suite's list")
    ap.add_argument("--ppo-run", type=Path, metavar="RUN",
                    help="run folder (holding model.zip) to use for the suite's `ppo` decider "
                         "instead of the committed default policy")
    ap.add_argument("--out", type=Path, help="output folder (default out/eval/<suite>)")
    ap.add_argument("--requests", type=int, metavar="N",
                    help="N requests per case instead of the suite's counts (quick looks)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--replay", type=Path, metavar="CSV",
                    help="re-cost every row of a records.csv and compare; exit 1 on a mismatch")
    ap.add_argument("--model", help="with --replay: the profile (default: from summary.json)")
    ap.add_argument("--expected-out", type=Path, metavar="JSON",
                    help="also write the machine-independent figures (tests' expected JSON)")
    ap.add_argument("--check", type=Path, metavar="JSON",
                    help="compare the machine-independent figures with an --expected-out JSON; "
                         "exit 1 when they differ")
    ap.add_argument("--list", action="store_true", help="list the suites and decider specs")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.list:
            print("suites:", ", ".join(suite_names()))
            print("deciders:", ", ".join(known_specs()))
            return 0
        if args.replay is not None:
            n, bad = replay_csv(args.replay, load_profile(args.model) if args.model else None)
            for line in bad[:20]:
                print(line)
            print(f"replay: {n - len(bad)} of {n} rows give the same figures")
            return 1 if bad else 0
        if args.requests is not None and args.requests < 1:
            raise QsplitInputError(f"--requests: expected an integer >= 1, got {args.requests}")
        want = None
        if args.check:
            try:
                want = json.loads(args.check.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise QsplitInputError(f"--check: cannot read {args.check}: {exc}") from None
        suite = load_suite(args.suite)
        out = args.out or ROOT / "out" / "eval" / suite.name
        summary = evaluate(suite, args.decider, out, plots=not args.no_plots,
                           progress=not args.quiet, n_requests=args.requests,
                           log=lambda s: print(s, file=sys.stderr), ppo_run=args.ppo_run)
        if args.expected_out:
            atomic_write_text(args.expected_out,
                              json.dumps(expected_figures(summary), indent=1) + "\n")
        print(markdown(summary))
        print(f"wrote {out}")
        if args.check:
            diffs = compare_figures(expected_figures(summary), want)
            for line in diffs[:20]:
                print(f"differs: {line}")
            print(f"check against {args.check}: "
                  f"{'the figures match' if not diffs else f'{len(diffs)} figures differ'}")
            return 1 if diffs else 0
    except QsplitInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
