"""Bad input gets one line naming the field and the range; the command line exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from system.errors import QsplitInputError
from system.hardware import get_device
from system.plan import Plan
from system.profiles import load_profile, profile_from_dict, toy3
from system.request import request_from_json_dict

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"device": "jetson_nano", "server": "t4", "up_mbps": 5.0, "down_mbps": 20.0,
        "rtt_ms": 40.0, "eps_pp": 1.0}


@pytest.mark.parametrize(("patch", "field"), [
    ({"up_mbps": float("nan")}, "up_mbps"),
    ({"up_mbps": -1.0}, "up_mbps: -1 is outside the allowed range (0, inf) Mbit/s"),
    ({"down_mbps": 0.0}, "down_mbps: 0 is outside the allowed range (0, inf) Mbit/s"),
    ({"dev_gflops": 0.0}, "dev_gflops"),
    ({"dev_gflops": -3}, "dev_gflops: -3 is outside the allowed range (0, inf) GFLOP/s"),
    ({"rtt_ms": -5}, "rtt_ms: -5 is outside the allowed range [0, inf) ms"),
    ({"eps_pp": -0.1}, "eps_pp"),
    ({"rtt_ms": float("inf")}, "rtt_ms"),
    ({"reuse": 0.5}, "reuse"),
    ({"srv_load": 1.5}, "srv_load"),
    ({"device": "toaster"}, "device"),
    ({"dev_kappa": {"32": 1, "5": 2}}, "dev_kappa"),
    ({"dev_kappa": {"8": 2}}, "dev_kappa"),
    ({"bandwidth": 3}, "bandwidth"),
    ({"eps_pp": "1"}, "eps_pp"),
])
def test_request_errors_name_the_field(patch: dict, field: str) -> None:
    with pytest.raises(QsplitInputError) as exc:
        request_from_json_dict({**GOOD, **patch})
    msg = str(exc.value)
    assert field in msg and "\n" not in msg


def test_missing_request_field() -> None:
    bad = dict(GOOD)
    del bad["eps_pp"]
    with pytest.raises(QsplitInputError, match="eps_pp"):
        request_from_json_dict(bad)


def test_range_is_named() -> None:
    with pytest.raises(QsplitInputError, match=r"allowed range \[0, 100\]"):
        request_from_json_dict({**GOOD, "eps_pp": 101})


def test_catalog_device_has_a_source() -> None:
    assert "Framework-Tax" in get_device("jetson_nano").source


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d.pop("in_elems"), "in_elems"),
    (lambda d: d.update(units=[]), "units"),
    (lambda d: d["units"][0].update(macs=-1), "units[0].macs"),
    (lambda d: d["units"][1].update(params=float("nan")), "units[1].params"),
    (lambda d: d["units"][2].pop("sens_w"), "units[2]"),
    (lambda d: d["units"][0].update(colour="red"), "colour"),
    (lambda d: d.update(input_bits=0), "input_bits"),
    (lambda d: d.update(sensitivity_source="guess"), "sensitivity_source"),
    (lambda d: d.update(input_shape=[3, 999]), "input_shape"),
])
def test_profile_json_is_strict(mutate, field: str) -> None:
    d = json.loads(json.dumps(toy3().to_dict()))
    mutate(d)
    with pytest.raises(QsplitInputError, match=field.replace("[", r"\[").replace("]", r"\]")):
        profile_from_dict(d)


def test_profile_round_trip(tmp_path: Path) -> None:
    p = toy3()
    p.save(tmp_path / "t.json")
    q = load_profile(tmp_path / "t.json")
    assert q.sha256() == p.sha256()
    assert np.array_equal(q.macs, p.macs)


def test_unknown_profile_name() -> None:
    with pytest.raises(QsplitInputError, match="unknown profile"):
        load_profile("no_such_net")


def test_plan_validation() -> None:
    with pytest.raises(QsplitInputError, match="cut"):
        Plan(5, (8,) * 5, 8).validate(3)
    with pytest.raises(QsplitInputError, match=r"weight_bits\[1\]"):
        Plan(2, (8, 5), 8).validate(3)
    with pytest.raises(QsplitInputError, match="act_bits"):
        Plan(1, (8,), 7).validate(3)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "system", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_plan_prints_the_figures(tmp_path: Path) -> None:
    req = tmp_path / "r.json"
    req.write_text(json.dumps(GOOD))
    for decider in ("optimal", "server_only", "device_only", "partition_only", "uniform"):
        r = _cli("plan", "--profile", "toy3", "--request", str(req), "--decider", decider)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        for k in ("cut", "weight_bits", "act_bits", "latency_s", "energy_j", "drop_pp", "cost",
                  "payload_reduction", "feasible"):
            assert k in out
        assert out["feasible"] is True


@pytest.mark.parametrize(("content", "needle"), [
    ("{not json", "malformed JSON"),
    (json.dumps({**GOOD, "up_mbps": "NaN"}), "up_mbps"),
    (json.dumps({**GOOD, "up_mbps": 0}), "up_mbps: 0 is outside the allowed range (0, inf) Mbit/s"),
    (json.dumps({**GOOD, "device": "toaster"}), "device"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, content: str, needle: str) -> None:
    req = tmp_path / "r.json"
    req.write_text(content)
    r = _cli("plan", "--profile", "toy3", "--request", str(req))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_cli_missing_profile_file(tmp_path: Path) -> None:
    req = tmp_path / "r.json"
    req.write_text(json.dumps(GOOD))
    r = _cli("plan", "--profile", str(tmp_path / "nope.json"), "--request", str(req))
    assert r.returncode == 2 and "nope.json" in r.stderr


# ------------------------------------------------------------------ the request field table

def test_request_columns_are_the_leaderboards() -> None:
    from system.request import REQUEST_COLUMNS

    assert REQUEST_COLUMNS == (
        "device", "server", "dev_flops_per_s", "dev_kappa_4", "dev_kappa_8", "dev_kappa_16",
        "dev_kappa_32", "p_comp_w", "p_tx_w", "p_rx_w", "p_idle_w", "srv_flops_per_s",
        "srv_load", "up_bps", "down_bps", "rtt_s", "eps_pp", "beta_s_per_j", "reuse")


def test_request_row_arrays_and_json_round_trip() -> None:
    from system.request import (
        random_request,
        request_arrays,
        request_from_row,
        request_to_row,
        requests_from_arrays,
    )

    rng = np.random.default_rng(3)
    reqs = [random_request(rng) for _ in range(50)]
    for r in reqs:
        assert request_from_row({k: str(v) for k, v in request_to_row(r).items()}) == r
        back = request_from_json_dict(r.to_json_dict())
        for k in ("dev_flops_per_s", "up_bps", "down_bps", "rtt_s", "eps_pp"):
            assert getattr(back, k) == pytest.approx(getattr(r, k), rel=1e-15)
    labels = {k: [getattr(r, k) for r in reqs] for k in ("device", "server")}
    assert requests_from_arrays(request_arrays(reqs), labels) == tuple(reqs)


def test_row_errors_name_the_column() -> None:
    from system.request import random_request, request_from_row, request_to_row

    row = {k: str(v) for k, v in request_to_row(random_request(np.random.default_rng(0))).items()}
    with pytest.raises(QsplitInputError, match=r"^row 7\.up_bps: -1 is outside the allowed range "
                                               r"\(0, inf\) bit/s$"):
        request_from_row({**row, "up_bps": "-1"}, where="row 7")
    with pytest.raises(QsplitInputError, match=r"row\.rtt_s: expected a number"):
        request_from_row({**row, "rtt_s": "fast"})
    with pytest.raises(QsplitInputError, match=r"row\.dev_kappa\[32\]"):
        request_from_row({**row, "dev_kappa_32": "2"})
    with pytest.raises(QsplitInputError, match=r"missing column.*eps_pp"):
        request_from_row({k: v for k, v in row.items() if k != "eps_pp"})


def test_every_field_reaches_every_form() -> None:
    """Each row of the table is parsed, written, listed, observed and flattened."""
    from system.codec import BASE_QUANTITIES
    from system.fields import FLAT_NAMES, REQUEST_FIELDS, column_names
    from system.request import REQUEST_COLUMNS, REQUEST_JSON_FIELDS, Request

    for f in REQUEST_FIELDS:
        assert f.json_key in REQUEST_JSON_FIELDS
        assert set(column_names(f)) <= set(REQUEST_COLUMNS)
        assert f.name in Request.__dataclass_fields__
        assert any(n == f.name or n.startswith(f"{f.name}[") for n in FLAT_NAMES)
        if f.observed:
            assert any(q == f.name or q.startswith(f"{f.name}_") for q in BASE_QUANTITIES)


def test_a_requests_flat_row_is_its_checked_values_in_flat_order() -> None:
    import dataclasses
    import pickle

    from system.fields import FLAT_NAMES, SCALAR_NAMES, WIDTH_FIELDS
    from system.request import random_request

    r = random_request(np.random.default_rng(4))
    want = tuple(float(getattr(r, n)) for n in SCALAR_NAMES) + tuple(
        float(x) for f in WIDTH_FIELDS for x in getattr(r, f.name))
    assert r.flat_row == want and len(want) == len(FLAT_NAMES)
    moved = dataclasses.replace(r, up_bps=r.up_bps * 2)          # rebuilt, so re-made
    assert moved.flat_row[SCALAR_NAMES.index("up_bps")] == r.up_bps * 2
    assert pickle.loads(pickle.dumps(r)).flat_row == want
    assert "flat_row" not in {f.name for f in dataclasses.fields(r)} and "flat_row" not in repr(r)
