"""Outputs that stay valid under hostile input: strict JSON figures, bounded suites, strict env
arguments, evaluation folders written as a whole, and profiling that writes only where told."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import envs
import evaluate
import leaderboard.run
from leaderboard.run import evaluate_suite
from leaderboard.suites import MAX_REQUESTS, load_suite
from leaderboard.summary import summary_json
from system.cost import evaluate_plans, payload_reduction, plan_report
from system.errors import QsplitInputError
from system.plan import Plan
from system.profiles import ModelProfile, profile_from_dict, toy3
from system.request import load_request_file

ROOT = Path(__file__).resolve().parents[1]
REQUEST = ROOT / "examples" / "request_lte_nano.json"


def _strict_json(text: str) -> object:
    """Parse JSON refusing NaN and Infinity (which Python's json accepts by default)."""
    def refuse(name: str) -> None:
        raise AssertionError(f"non-JSON constant {name} in the output")
    return json.loads(text, parse_constant=refuse)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ------------------------------------------------------------------ 8: no NaN or Infinity

@pytest.mark.parametrize("key, value, match", [
    ("macs", 1e308, r"units\[0\]\.macs: 1e\+308 is outside the allowed range \[0, 1e\+15\] MACs"),
    ("params", 1e308, r"units\[0\]\.params: .* \[0, 1e\+13\] weights"),
    ("out_elems", 1e308, r"units\[0\]\.out_elems: .* \[1, 1e\+13\] elements"),
    ("sens_w", 1e308, r"units\[0\]\.sens_w: .* \[0, 1e\+12\] pp per unit of q\(b\)"),
])
def test_c08_profile_refuses_figures_beyond_their_physical_bound(key: str, value: float,
                                                                 match: str) -> None:
    d = toy3().to_dict()
    d["units"][0][key] = value
    with pytest.raises(QsplitInputError, match=match):
        profile_from_dict(d)
    d = toy3().to_dict()
    d["in_elems"] = 10**14
    d["input_shape"] = [10**14]
    with pytest.raises(QsplitInputError, match=r"in_elems: .*\[1, 1e\+13\]"):
        profile_from_dict(d)


def test_c08_profile_without_macs_refused_and_payload_reduction_defined() -> None:
    d = toy3().to_dict()
    for u in d["units"]:
        u.update(macs=0, params=0, sens_w=0)
    with pytest.raises(QsplitInputError, match=r"every unit has 0 MACs"):
        profile_from_dict(d)
    p = toy3()
    zero = ModelProfile(**{**p.__dict__, "macs": np.zeros(3)})
    red = payload_reduction(zero, np.arange(4), np.full((4, 3), 8))
    assert red.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_c08_system_plan_prints_strict_json_or_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from system.__main__ import main as system_main

    prof = tmp_path / "p.json"
    d = toy3().to_dict()
    d["units"][0]["macs"] = 1e308
    prof.write_text(json.dumps(d))
    assert system_main(["plan", "--profile", str(prof), "--request", str(REQUEST)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "macs" in _one_error_line(err)

    req = tmp_path / "r.json"
    req.write_text(json.dumps({**json.loads(REQUEST.read_text()), "rtt_ms": 1e308,
                               "beta_s_per_j": 1e308}))
    with np.errstate(all="ignore"):
        rc = system_main(["plan", "--profile", "toy3", "--request", str(req)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "beyond the range of a double" in _one_error_line(err)

    assert system_main(["plan", "--profile", "resnet18", "--request", str(REQUEST)]) == 0
    res = _strict_json(capsys.readouterr().out)
    assert isinstance(res, dict) and all(math.isfinite(res[k]) for k in ("latency_s", "cost"))


def test_c08_runtime_decide_refuses_figures_it_cannot_print(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.__main__ import main as runtime_main

    req = tmp_path / "r.json"
    req.write_text(json.dumps({**json.loads(REQUEST.read_text()), "rtt_ms": 1e308,
                               "beta_s_per_j": 1e308}))
    with np.errstate(all="ignore"):
        rc = runtime_main(["decide", "--request", str(req)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "cost" in _one_error_line(err)


def test_c08_plan_report_and_summaries_hold_only_finite_numbers() -> None:
    p = toy3()
    req = load_request_file(REQUEST)
    plan = Plan.canonical(1, [8], 8, p.n_units)
    rep = plan_report(p, req, plan)
    assert all(math.isfinite(v) for v in rep.values() if isinstance(v, float))
    for extreme, match in (({"beta_s_per_j": 1e308, "p_tx_w": 1e3}, r"^plan: cost is inf s, .*beta"),
                           ({"dev_flops_per_s": 1e-305}, r"^plan: t_dev_s is inf s, .*dev_gflops")):
        huge = dataclasses.replace(req, **extreme)
        with np.errstate(all="ignore"):
            assert not np.isfinite(evaluate_plans(p, huge, [plan]).cost[0])
            with pytest.raises(QsplitInputError, match=match):
                plan_report(p, huge, plan)
    with pytest.raises(QsplitInputError, match=r"summary\.deciders\.ppo\.regret\[1\]: not a finite"):
        summary_json({"deciders": {"ppo": {"regret": [0.1, math.inf]}}})
    assert _strict_json(summary_json({"a": [1.0, 2]})) == {"a": [1.0, 2]}


# ------------------------------------------------------------------ suites and --out

def _suite(tmp_path: Path, n: int = 4, **case: object) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "model": "toy3", "deciders": ["optimal", "uniform"],
        "cases": [{"name": "a", "scenario": "default", "n_requests": n, "seed": 1, **case}]}))
    return path


def test_c10_evaluate_out_an_existing_file_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_text("my notes\n")
    suite = _suite(tmp_path)
    rc = evaluate.main(["--suite", str(suite), "--out", str(mine), "--quiet", "--no-plots"])
    assert rc == 2
    assert "is not a leaderboard output folder" in _one_error_line(capsys.readouterr().err)
    assert mine.read_text() == "my notes\n"
    rc = evaluate.main(["--suite", str(suite), "--out", str(mine / "sub"), "--quiet"])
    assert rc == 2
    assert "is not a folder" in _one_error_line(capsys.readouterr().err)


def test_c10_evaluate_n_requests_bounded_before_any_allocation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(QsplitInputError, match=rf"n_requests: .* in \[1, {MAX_REQUESTS}\], "
                                                r"got 1000000000000"):
        load_suite(_suite(tmp_path, n=10**12))
    rc = evaluate.main(["--suite", str(_suite(tmp_path)), "--requests", str(10**12),
                        "--out", str(tmp_path / "o"), "--quiet", "--no-plots"])
    assert rc == 2 and "--requests" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 14: env arguments

@pytest.mark.parametrize("kwargs, match", [
    ({"compute_regret": "no"}, r"^compute_regret: expected true or false, got 'no'$"),
    ({"pool": "x"}, r"^pool: expected an envs\.pool\.RequestPool or None"),
    ({"encoder": "x"}, r"^encoder: expected a system\.codec\.ObservationEncoder"),
])
def test_c14_env_refuses_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(QsplitInputError, match=match):
        gym.make(envs.ENV_ID, model="toy3", **kwargs)


def test_c14_env_reset_refuses_bad_and_unknown_options() -> None:
    env = gym.make(envs.ENV_ID, model="toy3").unwrapped
    with pytest.raises(QsplitInputError, match=r"^options: expected a dict or None, got 'x'$"):
        env.reset(options="x")
    with pytest.raises(QsplitInputError, match=r"^options: unknown key\(s\) \['requets'\]"):
        env.reset(options={"requets": None})
    env.reset(seed=0, options={})


@pytest.mark.parametrize("action, match", [
    (np.array([1.5, 0, 6, 6, 6]), r"^action\[0\]: 1\.5 is not a whole number$"),
    ([True, 0, 6, 6, 6], r"^action: expected 5 whole numbers, got booleans"),
    (np.ones(5, dtype=bool), r"^action: expected 5 whole numbers, got booleans"),
    (np.zeros((2, 5), dtype=np.int64), r"^action: expected one action of shape \(5,\), got "
                                       r"shape \(2, 5\)"),
    (np.array([1e300, 0, 6, 6, 6]), r"^action\[0\]: 1e\+300 is outside the allowed range"),
])
def test_c14_env_step_refuses_actions_it_would_coerce(action: object, match: str) -> None:
    env = gym.make(envs.ENV_ID, model="toy3").unwrapped
    env.reset(seed=0)
    with pytest.raises(QsplitInputError, match=match):
        env.step(action)
    _, r, term, _, _ = env.step(np.array([1.0, 0, 6, 6, 6]))   # whole floats are one action
    assert term and math.isfinite(r)


def test_c14_env_still_passes_the_env_checkers() -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(envs.ENV_ID, model="toy3", compute_regret=np.bool_(True)).unwrapped
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


# ------------------------------------------------------------------ 16: output folder

def _fake_plots(rows: object, out: Path, profile: object) -> list[Path]:
    (out / "eval_fake.png").write_bytes(b"png")
    return [out / "eval_fake.png"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_c16_interrupted_evaluation_leaves_the_previous_output_intact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = load_suite(_suite(tmp_path))
    out = tmp_path / "runs" / "eval"
    monkeypatch.setattr(leaderboard.run, "write_plots", _fake_plots)
    evaluate_suite(suite, out=out, progress=False, log=lambda s: None)
    before = _snapshot(out)
    assert set(before) == {"records.csv", "summary.json", "summary.md", "eval_fake.png"}

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(leaderboard.run, "write_plots", interrupt)
    with pytest.raises(KeyboardInterrupt):
        evaluate_suite(suite, out=out, progress=False, log=lambda s: None, n_requests=7)
    assert _snapshot(out) == before
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_c16_rerun_replaces_the_output_as_a_whole(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    suite = load_suite(_suite(tmp_path))
    out = tmp_path / "o"
    out.mkdir()
    monkeypatch.setattr(leaderboard.run, "write_plots", _fake_plots)
    evaluate_suite(suite, out=out, progress=False, log=lambda s: None)
    summary = evaluate_suite(suite, out=out, plots=False, progress=False, log=lambda s: None,
                             n_requests=3)
    assert set(_snapshot(out)) == {"records.csv", "summary.json", "summary.md"}
    assert json.loads((out / "summary.json").read_text()) == json.loads(summary_json(summary))
    assert len((out / "records.csv").read_text().splitlines()) == 1 + 3 * 2


def test_c16_out_folder_holding_other_files_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "summary.json").write_text("{}")
    with pytest.raises(QsplitInputError, match=r"is not a leaderboard output folder"):
        evaluate_suite(load_suite(_suite(tmp_path)), out=out, progress=False, log=lambda s: None)
    assert _snapshot(out) == {"notes.txt": b"mine\n", "summary.json": b"{}"}
    rc = evaluate.main(["--suite", str(_suite(tmp_path)), "--out", str(out), "--quiet"])
    assert rc == 2 and "notes" not in _one_error_line(capsys.readouterr().err)


def test_c16_evaluate_command_reports_an_interrupt_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(leaderboard.run, "write_plots", interrupt)
    try:
        rc = evaluate.main(["--suite", str(_suite(tmp_path)), "--out", str(tmp_path / "o"),
                            "--quiet"])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped evaluate.main as a traceback")
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "s.yaml"]


# ------------------------------------------------------------------ 17: profiling

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="the profiling extra (torch) is not installed")


def _net(tmp_path: Path) -> Path:
    src = tmp_path / "mynet.py"
    src.write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.Linear(4 * 6 * 6, 10))\n")
    return src


def _profile(tmp_path: Path, *args: str) -> int:
    from profiling.__main__ import main as cli_main

    return cli_main(["profile", f"{_net(tmp_path)}:make", "--base-accuracy", "90", *args])


@needs_torch
def test_c17_profile_name_must_be_a_plain_file_stem(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    for name in ("../../x", "a/b", "..", ".hidden", ""):
        assert _profile(tmp_path, "--input-shape", "3", "8", "8", "--name", name,
                        "--out", str(out)) == 2
        assert "--name" in _one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("**/*.json"))
    assert _profile(tmp_path, "--input-shape", "3", "8", "8", "--name", "net.v1",
                    "--out", str(out)) == 0
    assert [p.name for p in out.iterdir()] == ["net.v1.json"]


@needs_torch
def test_c17_garbage_weights_refused_in_one_line_never_unpickled(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    import torch

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Touch(str(marker))))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 3)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(2)}, other)
    for path, why in ((evil, "weights_only"), (garbage, "weights_only"), (listed, "a list"),
                      (other, "does not fit the model"), (tmp_path / "none.pt", "no such file")):
        assert _profile(tmp_path, "--input-shape", "3", "8", "8", "--name", "n",
                        "--weights", str(path), "--out", str(tmp_path)) == 2
        assert why in _one_error_line(capsys.readouterr().err)
    assert not marker.exists()


class _Touch:
    """A pickle that would create a file when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.path),))


@needs_torch
def test_c17_wrong_input_shape_is_one_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert _profile(tmp_path, "--input-shape", "1", "8", "8", "--name", "n",
                    "--out", str(tmp_path)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "input shape [1, 8, 8] does not fit Sequential" in line
