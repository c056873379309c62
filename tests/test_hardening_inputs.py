"""Hostile input to every loader and command line: refused in one line naming the field or file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

import evaluate
from leaderboard.records import CSV_COLUMNS, cost_columns, plan_to_row, write_csv
from runtime import __main__ as runtime_cli
from runtime.bundle import CONTRACT_FILE, SUMS_FILE, BundleError, load_bundle, sha256_file
from runtime.dispatcher import default_bundle_path
from system import __main__ as system_cli
from system.baselines import DECIDERS
from system.cost import evaluate_plans
from system.errors import QsplitInputError, check_finite
from system.loaders import parse_json, parse_yaml
from system.profiles import load_profile_file, profile_from_dict, toy3
from system.request import random_request, request_from_json_dict, request_to_row
from system.scenario import load_scenario, load_scenario_file

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"device": "jetson_nano", "server": "t4", "up_mbps": 5.0, "down_mbps": 20.0,
        "rtt_ms": 40.0, "eps_pp": 1.0}
HUGE = "1" + "0" * 400          # an integer past the largest float
GOOD_TEXT = json.dumps(GOOD)
#: Bytes no loader may choke on: binary, UTF-16, 100,000 levels of nesting, 5,000 digits.
BAD_BYTES = {
    "binary": b"\x00\x01\x02\xff" * 8,
    "latin1": '{"device": "jetson_n\xe4no"}'.encode("latin-1"),
    "utf16": GOOD_TEXT.encode("utf-16"),
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "digits": GOOD_TEXT[:-1].encode() + b', "dev_gflops": 1' + b"0" * 5000 + b"}",
    "nan": GOOD_TEXT.replace("5.0", "NaN").encode(),
}


def _one_line(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def _cli_error(capsys: pytest.CaptureFixture[str], main: Callable[[list[str]], int],
               argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


def _run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, cwd=ROOT,
                          timeout=300)


def _copy_bundle(tmp: Path, edit: Callable[[dict], str | bytes]) -> Path:
    """The committed digits bundle with its contract edited and the sums recomputed."""
    src = default_bundle_path("digits_cnn")
    out = tmp / "bundle"
    out.mkdir()
    for f in src.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    c = json.loads((out / CONTRACT_FILE).read_text())
    text = edit(c)
    (out / CONTRACT_FILE).write_bytes(text.encode() if isinstance(text, str) else text)
    names = sorted(n.name for n in out.iterdir() if n.name != SUMS_FILE)
    (out / SUMS_FILE).write_text("".join(f"{sha256_file(out / n)}  {n}\n" for n in names))
    return out


# ------------------------------------------------------------------ 4: integers past 1.8e308

def test_c04_huge_integer_is_a_range_error_not_an_overflow(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(QsplitInputError) as exc:
        check_finite("up_mbps", 10**400, lo=0.0, lo_open=True, unit="Mbit/s")
    _one_line(exc, "up_mbps: 1e+400 is outside the allowed range (0, inf) Mbit/s")
    req = tmp_path / "r.json"
    req.write_text(GOOD_TEXT[:-1] + f', "dev_gflops": {HUGE}}}')
    _cli_error(capsys, system_cli.main, ["plan", "--profile", "toy3", "--request", str(req)],
               "dev_gflops: 1e+400 is outside the allowed range (0, inf) GFLOP/s")
    req.write_text(GOOD_TEXT[:-1] + f', "dev_speed_factor": -{HUGE}}}')
    _cli_error(capsys, runtime_cli.main, ["decide", "--request", str(req)], "dev_speed_factor")


def test_c04_huge_integer_in_profiles_scenarios_and_contracts(tmp_path: Path) -> None:
    d = toy3().to_dict()
    d["units"][1]["macs"] = 10**400
    with pytest.raises(QsplitInputError) as exc:
        profile_from_dict(d)
    _one_line(exc, "units[1].macs: 1e+400 is outside the allowed range")
    path = tmp_path / "p.json"
    path.write_text(json.dumps(toy3().to_dict()).replace('"in_elems": 3000', f'"in_elems": {HUGE}'))
    with pytest.raises(QsplitInputError) as exc:
        load_profile_file(path)
    _one_line(exc, "in_elems")
    scen = load_scenario("default").to_dict()
    scen["reuse"] = {"dist": "choice", "values": [1, 10**400]}
    with pytest.raises(QsplitInputError) as exc:
        load_scenario(scen)
    _one_line(exc, "reuse.values[1]: 1e+400 is outside")
    spath = tmp_path / "s.yaml"
    spath.write_text(yaml.safe_dump(load_scenario("default").to_dict()).replace(
        "max: 5.0", f"max: {HUGE}", 1))
    with pytest.raises(QsplitInputError) as exc:
        load_scenario_file(spath)
    _one_line(exc, "eps_pp.max: 1e+400 is outside")

    def huge_macs(c: dict) -> str:
        return json.dumps(c).replace(f'"macs": {int(c["profile"]["units"][0]["macs"])}',
                                     f'"macs": {HUGE}', 1)

    with pytest.raises(BundleError) as exc:
        load_bundle(_copy_bundle(tmp_path, huge_macs))
    _one_line(exc, "units[0].macs: 1e+400 is outside")


# ------------------------------------------------------------------ 5: bytes no parser expects

@pytest.mark.parametrize("kind", sorted(BAD_BYTES))
def test_c05_request_files_and_stdin_refuse_bad_bytes(kind: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    req = tmp_path / "r.json"
    req.write_bytes(BAD_BYTES[kind])
    _cli_error(capsys, system_cli.main, ["plan", "--profile", "toy3", "--request", str(req)],
               "r.json")
    _cli_error(capsys, runtime_cli.main, ["decide", "--request", str(req)], "r.json")


def test_c05_runtime_stdin_refuses_bad_bytes() -> None:
    for kind in ("binary", "utf16", "deep", "digits"):
        r = _run(["-m", "runtime", "decide", "--request", "-"], stdin=BAD_BYTES[kind])
        err = r.stderr.decode()
        assert r.returncode == 2 and err.startswith("error: request <stdin>"), err
        assert err.count("\n") == 1 and "Traceback" not in err, err
    r = _run(["-m", "system", "plan", "--profile", "toy3", "--request", "-"], stdin=BAD_BYTES["utf16"])
    assert r.returncode == 2 and r.stderr.decode() == ("error: request <stdin>: UTF-16 text "
                                                      "(byte-order mark fffe); save it as UTF-8\n")


@pytest.mark.parametrize("kind", sorted(BAD_BYTES))
def test_c05_profiles_contracts_and_suites_refuse_bad_bytes(kind: str, tmp_path: Path) -> None:
    from leaderboard.suites import load_suite

    path = tmp_path / "p.json"
    path.write_bytes(BAD_BYTES[kind])
    with pytest.raises(QsplitInputError) as exc:
        load_profile_file(path)
    _one_line(exc, "p.json")
    with pytest.raises(BundleError) as exc:
        load_bundle(_copy_bundle(tmp_path, lambda c: BAD_BYTES[kind]))
    _one_line(exc, "contract.json")
    ypath = tmp_path / "s.yaml"
    ypath.write_bytes(BAD_BYTES[kind])
    for load in (load_scenario_file, load_suite):
        with pytest.raises(QsplitInputError) as exc:
            load(ypath)
        _one_line(exc, "s.yaml")


def test_c05_a_folder_or_a_missing_file_is_one_line(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _cli_error(capsys, system_cli.main, ["plan", "--profile", "toy3", "--request", str(tmp_path)],
               "folder")
    _cli_error(capsys, system_cli.main, ["plan", "--profile", str(tmp_path / "no.json"),
                                         "--request", str(tmp_path)], "no.json")


# ------------------------------------------------------------------ 6: YAML errors in one line

BROKEN_YAML = "QuantSplit-v0:\n  n_timesteps: 1000\n  policy: 'MlpPolicy\n  batch_size: [1, 2\n"


def test_c06_broken_train_conf_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "broken.yml"
    conf.write_text(BROKEN_YAML)
    r = _run(["train.py", "-conf", str(conf), "-f", str(tmp_path / "runs")])
    err = r.stderr.decode()
    assert r.returncode == 2 and err.startswith("error: -conf") and err.count("\n") == 1, err
    assert "broken.yml: malformed YAML at line " in err and " column " in err
    assert not (tmp_path / "runs").exists()


def test_c06_train_conf_structure_is_checked(tmp_path: Path) -> None:
    from agents.train_lib import load_config

    conf = tmp_path / "c.yml"
    for text, needle in (("QuantSplit-v0: [1, 2]\n", "QuantSplit-v0"),
                         ("QuantSplit-v0: {n_timesteps: 10}\nqsplit: [1]\n", "qsplit"),
                         ("QuantSplit-v0: {n_timesteps: 10}\nqsplit: {QuantSplit-v0: 3}\n",
                          "qsplit.QuantSplit-v0"),
                         ("\xff\xfe", "c.yml")):
        conf.write_text(text)
        with pytest.raises(QsplitInputError) as exc:
            load_config(conf, "QuantSplit-v0")
        _one_line(exc, needle)


@pytest.mark.parametrize("text", [
    "name: x\nserver: t4\n  devices: {jetson_nano: 1}\n",
    "name: [x\n",
    "name: x\n\tserver: t4\n",
    "name: 'x\n",
    "a: !!python/object:os.system ls\n",
    "name: x\nname: y\n",
])
def test_c06_scenario_yaml_errors_are_one_line_with_a_position(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(QsplitInputError) as exc:
        load_scenario_file(path)
    _one_line(exc, "s.yaml", "line ", "column ")


# ------------------------------------------------------------------ 11: replay CSVs

def records_csv(tmp: Path, n: int = 3) -> Path:
    """A small records.csv of the optimizer on toy3 (``n`` requests)."""
    prof = toy3()
    rng = np.random.default_rng(5)
    rows = []
    for i in range(n):
        r = random_request(rng)
        plan = DECIDERS["optimal"](prof, r)
        f = evaluate_plans(prof, r, [plan])
        rows.append({"suite": "t", "case": "c", "request": i, "decider": "optimal",
                     **request_to_row(r), **plan_to_row(plan), **cost_columns(f, 0),
                     "opt_cost": float(f.cost[0]), "regret": 0.0, "exact_match": True,
                     "decision_us": 1.0})
    path = tmp / "records.csv"
    write_csv(rows, path)
    return path


def _edit_csv(path: Path, line: int, column: str, value: str) -> None:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("column", "value"), [
    ("up_bps", "fast"), ("cut", "x"), ("weight_bits", "8 y"), ("act_bits", "1e400"),
    ("opt_cost", "abc"), ("latency_s", "slow"), ("rtt_s", ""), ("cut", "1" + "0" * 5000),
])
def test_c11_replay_names_the_row_and_column_of_a_bad_cell(
        column: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = records_csv(tmp_path)
    assert evaluate.main(["--replay", str(path), "--model", "toy3"]) == 0
    capsys.readouterr()
    _edit_csv(path, 3, column, value)
    _cli_error(capsys, evaluate.main, ["--replay", str(path), "--model", "toy3"],
               "records.csv row 3", column)


def test_c11_replay_refuses_a_missing_column_an_empty_file_and_bad_bytes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = records_csv(tmp_path)
    argv = ["--replay", str(path), "--model", "toy3"]
    text = path.read_text()
    path.write_text(text.replace(",rtt_s,", ",rtt_x,", 1))
    _cli_error(capsys, evaluate.main, argv, "records.csv", "missing column", "rtt_s")
    path.write_text("")
    _cli_error(capsys, evaluate.main, argv, "records.csv", "empty")
    path.write_text(text.rstrip("\n") + ",extra\n")
    _cli_error(capsys, evaluate.main, argv, "records.csv line 4", "cells")
    path.write_text(",".join(CSV_COLUMNS) + "\n" + '"unclosed\n')
    _cli_error(capsys, evaluate.main, argv, "records.csv")
    for kind in ("binary", "utf16"):
        path.write_bytes(BAD_BYTES[kind])
        _cli_error(capsys, evaluate.main, argv, "records.csv")
    _cli_error(capsys, evaluate.main, ["--replay", str(tmp_path / "none.csv"), "--model", "toy3"],
               "none.csv")


def test_c11_replay_summary_json_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = records_csv(tmp_path)
    for text, needle in (("{", "summary.json"), ("[]", "summary.json"), ('{"bits": [8]}', "model"),
                         ('{"model": "toy3", "model": "x"}', "duplicate key")):
        (tmp_path / "summary.json").write_text(text)
        _cli_error(capsys, evaluate.main, ["--replay", str(path)], needle)


# ------------------------------------------------------------------ 12: the user's field names

@pytest.mark.parametrize(("patch", "needle"), [
    ({"dev_gflops": -1}, "dev_gflops: -1 is outside the allowed range (0, inf) GFLOP/s"),
    ({"up_mbps": 1e308}, "up_mbps: 1e+308 is outside the allowed range"),
    ({"down_mbps": 1e308}, "down_mbps: 1e+308"),
    ({"srv_gflops": 1e308}, "srv_gflops: 1e+308"),
    ({"dev_speed_factor": 1e308}, "dev_speed_factor: 1e+308"),
    ({"dev_gflops": 1e-300, "dev_speed_factor": 1e-300}, "dev_speed_factor: 1e-300"),
    ({"dev_gflops": 1e290, "dev_speed_factor": 1e10}, "dev_speed_factor: 1e+10 times dev_gflops"),
    ({"dev_speed_factor": "fast"}, "dev_speed_factor: expected a number"),
    ({"dev_kappa": {"32": 1, "8": 10**400}}, "dev_kappa[8]: 1e+400"),
])
def test_c12_errors_name_the_users_field_and_unit(patch: dict, needle: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    req = tmp_path / "r.json"
    req.write_text(json.dumps({**GOOD, **patch}))
    err = _cli_error(capsys, system_cli.main, ["plan", "--profile", "toy3", "--request", str(req)],
                     needle)
    for internal in ("dev_flops_per_s", "up_bps", "down_bps", "srv_flops_per_s"):
        assert internal not in err


def test_c12_catalog_filled_fields_are_named_as_the_user_would_write_them() -> None:
    d = {k: v for k, v in GOOD.items() if k != "device"}
    with pytest.raises(QsplitInputError) as exc:
        request_from_json_dict(d)
    _one_line(exc, "dev_gflops", "GFLOP/s", "catalog device")
    with pytest.raises(QsplitInputError) as exc:
        request_from_json_dict({**GOOD, "p_tx_w": -2})
    _one_line(exc, "p_tx_w: -2 is outside the allowed range [0, inf) W")


# ------------------------------------------------------------------ 15: duplicate keys

def test_c15_duplicate_json_keys_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = tmp_path / "r.json"
    req.write_text(GOOD_TEXT[:-1] + ', "eps_pp": 0.1, "eps_pp": 5.0}')
    _cli_error(capsys, system_cli.main, ["plan", "--profile", "toy3", "--request", str(req)],
               "duplicate key 'eps_pp'")
    r = _run(["-m", "runtime", "decide", "--request", "-"], stdin=req.read_bytes())
    assert r.returncode == 2 and b"duplicate key 'eps_pp'" in r.stderr
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(toy3().to_dict()).replace('"name": "toy3"', '"name": "a", "name": "b"'))
    with pytest.raises(QsplitInputError) as exc:
        load_profile_file(prof)
    _one_line(exc, "duplicate key 'name'")

    def dup(c: dict) -> str:
        return json.dumps(c).replace('"model": ', '"model": "x", "model": ', 1)

    with pytest.raises(BundleError) as exc:
        load_bundle(_copy_bundle(tmp_path, dup))
    _one_line(exc, "duplicate key 'model'")


def test_c15_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    from agents.train_lib import load_config
    from leaderboard.claims import load_claims
    from leaderboard.suites import load_suite

    text = yaml.safe_dump(load_scenario("default").to_dict(), sort_keys=False)
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("eps_pp:", "eps_pp: 0.1\neps_pp:", 1))
    with pytest.raises(QsplitInputError) as exc:
        load_scenario_file(path)
    _one_line(exc, "duplicate key 'eps_pp'", "line ")
    path.write_text("QuantSplit-v0:\n  learning_rate: 0.1\n  learning_rate: 5\n")
    with pytest.raises(QsplitInputError) as exc:
        load_config(path, "QuantSplit-v0")
    _one_line(exc, "duplicate key 'learning_rate'")
    path.write_text((ROOT / "configs/eval/default.yaml").read_text().replace(
        "name:", "name: a\nname:", 1))
    with pytest.raises(QsplitInputError) as exc:
        load_suite(path)
    _one_line(exc, "duplicate key 'name'")
    path.write_text((ROOT / "leaderboard/claims.yaml").read_text().replace(
        "format:", "format: x\nformat:", 1))
    with pytest.raises(QsplitInputError) as exc:
        load_claims(path)
    _one_line(exc, "duplicate key 'format'")
    path.write_text("base: &b {x: 1}\nmerged:\n  <<: *b\n  x: 2\n")    # a merge may be overridden
    assert parse_yaml(path.read_text(), "t") == {"base": {"x": 1}, "merged": {"x": 2}}
    with pytest.raises(QsplitInputError) as exc:
        parse_yaml("a: 1\nb:\n  c: 2\n  c: 3\n", "t.yaml")
    _one_line(exc, "t.yaml: malformed YAML at line 4 column 3: found duplicate key 'c'")
    with pytest.raises(QsplitInputError) as exc:
        parse_json('{"a": {"b": 1,\n "b": 2}}', "t.json")
    _one_line(exc, "t.json at line 2 column 2: duplicate key 'b'")
