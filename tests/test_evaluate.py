"""Tests of the leaderboard and evaluate.py: suites, invariants, replay, plots, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import evaluate
from leaderboard.records import write_csv
from leaderboard.replay import replay_csv, replay_row
from leaderboard.run import evaluate_suite, make_policies, run_suite
from leaderboard.suites import load_suite, suite_names
from leaderboard.summary import compare_figures, decider_summary, expected_figures
from system.accuracy import is_feasible
from system.baselines import DECIDERS
from system.cost import evaluate_plans
from system.errors import QsplitInputError
from system.milp import solve_milp
from system.profiles import random_profile
from system.request import request_from_row

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "traces"


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8-unit random profile, so these tests do not depend on a shipped one."""
    path = tmp_path_factory.mktemp("prof") / "rand8.json"
    random_profile(8, np.random.default_rng(7), name="rand8").save(path)
    return path


def _suite_dict(model: Path, **extra: object) -> dict:
    return {"format": "qsplit-eval-suite/1", "name": "t", "model": str(model),
            "deciders": sorted(DECIDERS),
            "cases": [
                {"name": "mixed", "scenario": "default", "n_requests": 30, "seed": 1},
                {"name": "3g_tight", "scenario": "default", "n_requests": 20, "seed": 2,
                 "override": {"channels": [{"name": "3g"}], "eps_pp": 0.1}},
                {"name": "qpart", "scenario": "qpart", "n_requests": 20, "seed": 3}],
            **extra}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, profile_path: Path) -> Path:
    """One evaluation of every built-in decider, written to a folder (plots included)."""
    tmp = tmp_path_factory.mktemp("eval")
    suite = load_suite(_write(tmp / "t.yaml", _suite_dict(profile_path)))
    evaluate_suite(suite, out=tmp / "out", progress=False, log=lambda s: None)
    return tmp / "out"


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "records.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ suites

def test_shipped_suites_load() -> None:
    names = suite_names()
    assert {"default", "small", "traces"} <= set(names)
    for name in names:
        s = load_suite(name)
        assert s.cases and s.deciders
        assert len({c.name for c in s.cases}) == len(s.cases)


def test_default_suite_covers_channels_devices_budgets() -> None:
    s = load_suite("default")
    chans = {e.name for c in s.cases for e in c.scenario.channel_entries}
    assert chans == {"3g", "lte", "5g", "wifi"}
    fixed = sorted(c.scenario.eps_pp.lo for c in s.cases if c.scenario.eps_pp.kind == "fixed")
    assert fixed[0] == 0.1 and fixed[-1] == 5.0
    assert len({c.scenario.device_names for c in s.cases}) >= 3


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/data/traces is not here")
def test_trace_suite_uses_the_traces() -> None:
    s = load_suite("traces")
    assert all(not c.skip_reason for c in s.cases)
    assert all(c.scenario.channel_entries[0].trace_folder for c in s.cases)


def test_missing_trace_folder_skips_with_a_message(tmp_path: Path, profile_path: Path) -> None:
    d = _suite_dict(profile_path)
    d["cases"].append({"name": "gone", "scenario": "default", "n_requests": 5, "seed": 4,
                       "override": {"channels": [{"trace_folder": "no/such/traces"}]}})
    s = load_suite(_write(tmp_path / "s.yaml", d))
    gone = s.cases[-1]
    assert gone.scenario is None and "no/such/traces" in gone.skip_reason
    logged: list[str] = []
    rows = run_suite(s, {"server_only": make_policies(["server_only"], s)[
        "server_only"]}, progress=False, log=logged.append, n_requests=2)
    assert any("skipped case gone" in m and "not found" in m for m in logged)
    assert {r["case"] for r in rows} == {"mixed", "3g_tight", "qpart"}


@pytest.mark.parametrize(("patch", "named"), [
    ({"colour": "red"}, "colour"),
    ({"cases": [{"name": "a", "scenario": "default", "n_requests": 3, "seed": 1, "n": 2}]}, "'n'"),
    ({"cases": [{"name": "a", "scenario": "default", "n_requests": 0, "seed": 1}]}, "n_requests"),
    ({"cases": [{"name": "a", "scenario": "default", "n_requests": 3, "seed": 1,
                 "override": {"eps": 1.0}}]}, "eps"),
    ({"cases": [{"name": "a", "scenario": "nowhere", "n_requests": 3, "seed": 1}]}, "nowhere"),
    ({"bits": [4, 8]}, "bits"),
    ({"model": "no_such_model"}, "no_such_model"),
])
def test_bad_suite_is_refused_naming_the_thing(tmp_path: Path, profile_path: Path,
                                               patch: dict, named: str) -> None:
    path = _write(tmp_path / "bad.yaml", {**_suite_dict(profile_path), **patch})
    with pytest.raises(QsplitInputError) as exc:
        load_suite(path)
    assert named in str(exc.value) and "\n" not in str(exc.value)


def test_duplicate_case_names_are_refused(tmp_path: Path, profile_path: Path) -> None:
    d = _suite_dict(profile_path)
    d["cases"].append(dict(d["cases"][0]))
    with pytest.raises(QsplitInputError, match="mixed"):
        load_suite(_write(tmp_path / "dup.yaml", d))


# ------------------------------------------------------------------ the leaderboard's invariants

def test_optimizer_regret_is_exactly_zero_and_nobody_beats_it(run_dir: Path) -> None:
    rows = _rows(run_dir)
    opt = [r for r in rows if r["decider"] == "optimal"]
    assert len(opt) == 70
    assert all(float(r["regret"]) == 0.0 and r["exact_match"] == "True" for r in opt)
    assert all(float(r["regret"]) >= -1e-12 for r in rows)
    assert {r["decider"] for r in rows} == set(DECIDERS)


def test_reference_optimum_agrees_with_the_milp(run_dir: Path, profile_path: Path) -> None:
    from system.profiles import load_profile

    prof = load_profile(profile_path)
    rows = [r for r in _rows(run_dir) if r["decider"] == "optimal"][::7]
    for r in rows:
        req = request_from_row(r, "row")
        ref = float(evaluate_plans(prof, req, [solve_milp(prof, req)]).cost[0])
        assert float(r["opt_cost"]) == pytest.approx(ref, rel=1e-7)


def test_feasible_flag_matches_the_budget(run_dir: Path) -> None:
    for r in _rows(run_dir):
        within = bool(is_feasible(float(r["drop_pp"]), float(r["eps_pp"])))
        assert (r["feasible"] == "True") == within


def test_infeasible_plan_is_counted_as_a_violation() -> None:
    rows = [{"regret": 0.5, "cost": 1.0, "feasible": False, "exact_match": False,
             "latency_s": 1.0, "energy_j": 1.0, "payload_reduction": 0.5, "decision_us": 3.0},
            {"regret": 0.0, "cost": 1.0, "feasible": True, "exact_match": True,
             "latency_s": 1.0, "energy_j": 1.0, "payload_reduction": 0.5, "decision_us": 1.0}]
    s = decider_summary(rows)
    assert s["violations"] == 1 and s["violation_rate"] == 0.5 and s["regret_max"] == 0.5


def test_summary_and_tables(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["deciders"]) == set(DECIDERS)
    assert summary["deciders"]["optimal"]["regret_max"] == 0.0
    assert summary["deciders"]["server_only"]["mean_payload_reduction"] == 1.0
    assert set(summary["per_case"]) == {"mixed", "3g_tight", "qpart"}
    md = (run_dir / "summary.md").read_text()
    for d in DECIDERS:
        assert f"| {d} |" in md
    assert "QPART" in md and "AutoScale" in md and "Neurosurgeon" in md
    claims = {c["claim"]: c for c in summary["claims"]}
    server = claims["latency speedup vs server-only (status quo)"]["measured"]
    assert server["optimal"] > 0 and server["partition_only"] > 0


def test_plots_are_written(run_dir: Path) -> None:
    for name in ("eval_regret_cdf", "eval_cost_vs_uplink", "eval_cut_map", "eval_energy_latency"):
        data = (run_dir / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_same_suite_same_figures(tmp_path: Path, profile_path: Path) -> None:
    suite = load_suite(_write(tmp_path / "t.yaml", _suite_dict(profile_path)))
    a = evaluate_suite(suite, ["optimal", "uniform"], progress=False, n_requests=5)
    b = evaluate_suite(suite, ["optimal", "uniform"], progress=False, n_requests=5)
    assert expected_figures(a) == expected_figures(b)


# ------------------------------------------------------------------ replay

def test_replay_gives_the_same_figures(run_dir: Path) -> None:
    n, bad = replay_csv(run_dir / "records.csv")
    assert n == 70 * len(DECIDERS) and bad == []


def test_replay_catches_a_changed_figure(run_dir: Path, tmp_path: Path) -> None:
    rows = _rows(run_dir)
    (tmp_path / "summary.json").write_bytes((run_dir / "summary.json").read_bytes())
    rows[3]["latency_s"] = repr(float(rows[3]["latency_s"]) * (1 + 1e-9))
    rows[5]["feasible"] = "False" if rows[5]["feasible"] == "True" else "True"
    write_csv(rows, tmp_path / "records.csv")
    n, bad = replay_csv(tmp_path / "records.csv")
    assert n == len(rows) and len(bad) == 2 and "latency_s" in bad[0] and "feasible" in bad[1]
    assert evaluate.main(["--replay", str(tmp_path / "records.csv")]) == 1


def test_replay_row_helper(run_dir: Path, profile_path: Path) -> None:
    from system.profiles import load_profile

    prof = load_profile(profile_path)
    row = _rows(run_dir)[11]
    got = replay_row(row, prof)
    assert got["cost"] == float(row["cost"]) and got["regret"] == float(row["regret"])
    assert evaluate.main(["--replay", str(run_dir / "records.csv")]) == 0


# ------------------------------------------------------------------ bad input on the command line

def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_unknown_decider_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 profile_path: Path) -> None:
    path = _write(tmp_path / "t.yaml", _suite_dict(profile_path))
    err = _cli_error(capsys, ["--suite", str(path), "--decider", "oracle", "--quiet"])
    assert "oracle" in err and "optimal" in err


def test_run_folder_without_model_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          profile_path: Path) -> None:
    path = _write(tmp_path / "t.yaml", _suite_dict(profile_path))
    (tmp_path / "run").mkdir()
    err = _cli_error(capsys, ["--suite", str(path), "--decider", f"ppo:{tmp_path / 'run'}"])
    assert "model.zip" in err and str(tmp_path / "run") in err


def test_suite_with_unknown_key_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        profile_path: Path) -> None:
    path = _write(tmp_path / "t.yaml", {**_suite_dict(profile_path), "n_request": 3})
    err = _cli_error(capsys, ["--suite", str(path)])
    assert "n_request" in err


def test_unknown_suite_and_duplicate_label_exit_2(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path, profile_path: Path) -> None:
    assert "no_such_suite" in _cli_error(capsys, ["--suite", "no_such_suite"])
    path = _write(tmp_path / "t.yaml", _suite_dict(profile_path))
    err = _cli_error(capsys, ["--suite", str(path), "--decider", "optimal", "--decider",
                              "optimal=uniform"])
    assert "optimal" in err and "twice" in err


def test_command_line_exit_code(tmp_path: Path, profile_path: Path) -> None:
    path = _write(tmp_path / "t.yaml", {**_suite_dict(profile_path), "colour": 1})
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--suite", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "colour" in proc.stderr


# ------------------------------------------------------------------ expected figures

def test_check_against_expected_figures(tmp_path: Path, profile_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "t.yaml", _suite_dict(profile_path))
    exp = tmp_path / "expected.json"
    base = ["--suite", str(path), "--decider", "optimal", "--decider", "partition_only",
            "--requests", "4", "--quiet", "--no-plots", "--out", str(tmp_path / "o")]
    assert evaluate.main([*base, "--expected-out", str(exp)]) == 0
    assert evaluate.main([*base, "--check", str(exp)]) == 0
    assert "the figures match" in capsys.readouterr().out
    data = json.loads(exp.read_text())
    data["deciders"]["partition_only"]["mean_cost"] *= 1.001
    exp.write_text(json.dumps(data))
    assert evaluate.main([*base, "--check", str(exp)]) == 1
    out = capsys.readouterr().out
    assert "deciders.partition_only.mean_cost" in out and "1 figures differ" in out


def test_compare_figures() -> None:
    want = {"a": 1.0, "b": [1, "x"], "c": {"d": None}}
    assert compare_figures({"a": 1.0 + 1e-12, "b": [1, "x"], "c": {"d": None}}, want) == []
    diffs = compare_figures({"a": 1.1, "b": [2, "x"], "c": {}, "e": 0}, want)
    assert sorted(d.split(":")[0] for d in diffs) == [".a", ".b[0]", ".c.d", ".e"]


EXPECTED_SMALL = ROOT / "tests" / "data" / "expected_small_suite.json"


def test_committed_policies_reproduce_the_expected_figures() -> None:
    """The small suite with the committed default policy gives the committed figures.

    Regenerate (after retraining or changing the cost model) with
    ``python evaluate.py --suite small --quiet --no-plots --expected-out
    tests/data/expected_small_suite.json``; the full suite's figures are checked by
    ``python evaluate.py --suite default --check tests/data/expected_default_suite.json``.
    """
    want = json.loads(EXPECTED_SMALL.read_text())
    summary = evaluate_suite(load_suite("small"), progress=False, log=lambda s: None)
    assert compare_figures(expected_figures(summary), want) == []
    assert summary["deciders"]["optimal"]["regret_max"] == 0.0
    assert all(s["violations"] == 0 for s in summary["deciders"].values())


_REPO = Path(__file__).resolve().parents[1]
_DEFAULT_READY = ((_REPO / "tests/data/expected_default_suite.json").exists()
                  and (_REPO / "agents/data/policies/resnet18/model.zip").exists())


@pytest.mark.skipif(not _DEFAULT_READY,
                    reason="needs the committed resnet18 policy and expected_default_suite.json")
@pytest.mark.slow
def test_default_suite_reproduces_the_readme_figures() -> None:
    want = json.loads((ROOT / "tests" / "data" / "expected_default_suite.json").read_text())
    summary = evaluate_suite(load_suite("default"), progress=False, log=lambda s: None)
    assert compare_figures(expected_figures(summary), want) == []
