"""Tests of the seeds' claims as data (leaderboard/claims.yaml) and the shared regret figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.evaluation import REGRET_FIGURES, regret_summary
from leaderboard.claims import CLAIMS_PATH, format_claim, load_claims, measure_claims
from leaderboard.summary import DETERMINISTIC_FIELDS, decider_summary
from system.errors import QsplitInputError


def _row(decider: str, *, eps_pp: float, cut: int, feasible: bool, payload: float,
         energy_j: float, latency_s: float) -> dict:
    return {"decider": decider, "eps_pp": eps_pp, "cut": cut, "feasible": feasible,
            "payload_reduction": payload, "energy_j": energy_j, "latency_s": latency_s}


ROWS = [
    _row("optimal", eps_pp=0.5, cut=3, feasible=True, payload=0.9, energy_j=1.0, latency_s=2.0),
    _row("optimal", eps_pp=1.0, cut=0, feasible=True, payload=1.0, energy_j=1.0, latency_s=2.0),
    _row("optimal", eps_pp=2.0, cut=3, feasible=True, payload=0.1, energy_j=2.0, latency_s=4.0),
    _row("server_only", eps_pp=0.5, cut=0, feasible=True, payload=1.0, energy_j=2.0, latency_s=4.0),
    _row("server_only", eps_pp=1.0, cut=0, feasible=True, payload=1.0, energy_j=2.0, latency_s=4.0),
    _row("server_only", eps_pp=2.0, cut=0, feasible=True, payload=1.0, energy_j=4.0, latency_s=8.0),
    _row("partition_only", eps_pp=0.5, cut=2, feasible=False, payload=0.5, energy_j=1.0,
         latency_s=1.0),
    _row("partition_only", eps_pp=1.0, cut=2, feasible=True, payload=0.4, energy_j=1.0,
         latency_s=1.0),
    _row("partition_only", eps_pp=2.0, cut=2, feasible=True, payload=0.3, energy_j=1.0,
         latency_s=1.0),
]


def test_shipped_claims_load_and_name_the_seeds() -> None:
    claims = load_claims()
    assert {c.seed for c in claims.claims} == {"QPART", "AutoScale", "Neurosurgeon", "Taufique et al."}
    assert claims.baselines_measured == ("partition_only",)


def test_each_measurement_kind_measures_what_it_says() -> None:
    got = {c["claim"]: c["measured"] for c in measure_claims(ROWS)}
    payload = got["payload reduction, budget <= 1 pp (mean over requests)"]
    # budgets <= 1 pp and within budget: optimal (0.9, 1.0); partition_only only its 0.4
    assert payload == {"optimal": pytest.approx(0.95), "partition_only": pytest.approx(0.4)}
    device = got["payload reduction, budget <= 1 pp, plans with a device part"]
    assert device == {"optimal": pytest.approx(0.9), "partition_only": pytest.approx(0.4)}
    # totals: server-only energy 8 J, optimal 4 J, partition-only 3 J; device-only was not run
    assert got["inferences per joule vs server-only"] == {"optimal": 2.0,
                                                          "partition_only": pytest.approx(8 / 3)}
    assert got["inferences per joule vs device-only (fp32)"] == {"optimal": None,
                                                                 "partition_only": None}
    assert got["latency speedup vs partition-only (Neurosurgeon-style)"]["optimal"] == 3 / 8
    assert "server_only" not in payload


def test_a_claim_without_records_left_is_not_available() -> None:
    rows = [r for r in ROWS if r["eps_pp"] > 1.0]
    got = measure_claims(rows)[0]["measured"]
    assert got == {"optimal": None, "partition_only": None}
    assert format_claim(None, "pct") == "n/a" and format_claim(0.8123, "pct") == "81.2%"
    assert format_claim(3.14159, "x") == "3.14x"


def _claims_file(tmp_path: Path, patch: dict) -> Path:
    data = yaml.safe_load(CLAIMS_PATH.read_text(encoding="utf-8"))
    first = data["claims"][0]
    for key, value in patch.items():
        if key.startswith("measure."):
            first["measure"][key.removeprefix("measure.")] = value
        else:
            first[key] = value
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("patch", "named"), [
    ({"source": "x"}, "source"),
    ({"unit": "percent"}, "claims[0].unit"),
    ({"claimed": ""}, "claims[0].claimed"),
    ({"measure.kind": "median"}, "claims[0].measure.kind"),
    ({"measure.column": "regrets"}, "claims[0].measure.column"),
    ({"measure.baseline": "server_only"}, "baseline"),
    ({"measure.budget_at_most_pp": -1}, "claims[0].measure.budget_at_most_pp: -1 is outside (0, 100] pp"),
    ({"measure.feasible_only": "yes"}, "claims[0].measure.feasible_only"),
])
def test_a_bad_claim_is_refused_naming_the_field(tmp_path: Path, patch: dict, named: str) -> None:
    with pytest.raises(QsplitInputError) as exc:
        load_claims(_claims_file(tmp_path, patch))
    assert named in str(exc.value) and "\n" not in str(exc.value)


def test_one_regret_summary_under_one_set_of_names() -> None:
    reg = np.array([0.0, 0.0, 0.1, 0.3, 2.0])
    figures = regret_summary(reg)
    assert tuple(figures) == REGRET_FIGURES
    assert figures == {"regret_mean": pytest.approx(0.48), "regret_p50": 0.1,
                       "regret_p95": pytest.approx(1.66), "regret_max": 2.0}
    rows = [{"regret": r, "cost": 1.0, "feasible": True, "exact_match": r == 0.0, "latency_s": 1.0,
             "energy_j": 1.0, "payload_reduction": 0.5, "decision_us": 1.0} for r in reg]
    summary = decider_summary(rows)
    assert {k: summary[k] for k in REGRET_FIGURES} == figures
    assert set(REGRET_FIGURES) <= set(DETERMINISTIC_FIELDS)
