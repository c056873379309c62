"""Measured per-unit times (DESIGN.md §1a): the time function, the profile schema, the fit,
import-times, and that the cost model, the optimizer and the runtime's fixed-plan prices
all cost plans with the same per-unit time."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_optimal import brute_force_cost  # the one enumeration

import system.cost as cost_mod
from runtime import features as rf
from runtime.trivial import TrivialPlans
from system.bits import DEFAULT_BITS
from system.cost import drop_tables, evaluate_arrays, evaluate_plans, unit_tables, unit_time
from system.errors import QsplitInputError
from system.hardware import UnitTiming
from system.optimal import solve
from system.profiles import (
    TimeTable,
    UnitEfficiency,
    load_profile,
    profile_from_dict,
    random_profile,
    toy3,
)
from system.request import Request, random_request

ROOT = Path(__file__).resolve().parent.parent
PROV = {"method": "profiler", "date": "2026-11-29T00:00:00+00:00"}
# kappa over kernel widths (4, 8, 16, 32): no int4, int8 4x, fp16 2x
REQ = Request(dev_flops_per_s=1e9, dev_kappa=(0.0, 4.0, 2.0, 1.0), p_comp_w=2.0, p_tx_w=1.0,
              p_rx_w=0.5, p_idle_w=0.1, srv_flops_per_s=1e11, srv_load=0.5, up_bps=1e6,
              down_bps=1e7, rtt_s=0.02, eps_pp=1.0, beta_s_per_j=0.1, reuse=2.0)


@pytest.fixture(autouse=True)
def _fresh_cache():
    unit_time.cache_clear()
    yield
    unit_time.cache_clear()


def _with_tables(prof, tables: dict[str, list[float]], eff=None):
    tt = {k: TimeTable(np.asarray(v, dtype=np.float64), dict(PROV)) for k, v in tables.items()}
    e = None if eff is None else UnitEfficiency(np.asarray(eff, dtype=np.float64),
                                                {"method": "test", "reference": sorted(tables),
                                                 "processors": {}})
    return dataclasses.replace(prof, time_tables=tt, efficiency=e)


def _fake_timing(monkeypatch, table: dict[str, UnitTiming]) -> None:
    real = cost_mod.processor_timing
    monkeypatch.setattr(cost_mod, "processor_timing", lambda n: table.get(n) or real(n))


def _plan_arrays(cut: int, bits: list[int], L: int, a: int = 8):
    w = np.full((1, L), 32)
    w[0, :cut] = bits
    return np.array([cut]), w, np.array([a])


# ------------------------------------------------------------------------- the time function
def test_measured_table_replaces_macs_on_its_processor() -> None:
    prof = _with_tables(toy3(), {"hostA": [0.3, 0.2, 0.1]})
    c, w, _ = _plan_arrays(2, [8, 16], 3)
    dev = dataclasses.replace(REQ, device="hostA")
    # t_meas / kappa: 8 bits -> int8 x4, 16 -> fp16 x2; the request's FLOP/s do not enter
    assert cost_mod.t_dev_s(prof, dev, c, w)[0] == pytest.approx(0.3 / 4 + 0.2 / 2, rel=1e-15)
    srv = dataclasses.replace(REQ, server="hostA")
    assert cost_mod.t_srv_s(prof, srv, np.array([1]))[0] == pytest.approx((0.2 + 0.1) / 0.5)
    # another label: the MAC-proportional model, bit for bit as before
    other = dataclasses.replace(REQ, device="hostB")
    kap = np.array([4.0, 2.0])
    want = np.sum(2.0 * toy3().macs[None, :2] / (REQ.dev_flops_per_s * kap))
    assert cost_mod.t_dev_s(prof, other, c, w)[0] == want


def test_overhead_and_carried_eff_on_a_catalog_processor(monkeypatch) -> None:
    eff = np.array([0.5, 2.0, 1.0])
    eff = eff * np.sum(toy3().macs / eff) / np.sum(toy3().macs)   # harmonic mean 1
    prof = _with_tables(toy3(), {"hostA": [0.3, 0.2, 0.1]}, eff)
    _fake_timing(monkeypatch, {"gpu": UnitTiming(overhead_s=1e-3, carry_eff=True),
                               "cpu": UnitTiming(overhead_s=2e-3, carry_eff=False)})
    c, w, _ = _plan_arrays(2, [8, 32], 3)
    r = dataclasses.replace(REQ, device="gpu", server="cpu")
    want = sum(1e-3 + 2 * m / (1e9 * e * k)
               for m, e, k in zip(toy3().macs[:2], eff[:2], (4.0, 1.0), strict=True))
    assert cost_mod.t_dev_s(prof, r, c, w)[0] == pytest.approx(want, rel=1e-12)
    # the server does not carry eff: o + 2 macs / F, all over the load
    assert cost_mod.t_srv_s(prof, r, np.array([2]))[0] == pytest.approx(
        (2e-3 + 2 * 0.5e6 / 1e11) / 0.5, rel=1e-12)


def test_no_tables_no_labels_is_the_mac_model_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        prof = random_profile(int(rng.integers(1, 12)), rng)
        req = dataclasses.replace(random_request(rng), device="", server="")
        T = unit_tables(prof, req)
        from system.bits import kernel_kappa
        kap = kernel_kappa(np.asarray(DEFAULT_BITS), np.asarray(req.dev_kappa))
        w_comp = 1.0 + req.beta_s_per_j * req.p_comp_w
        b = np.asarray(DEFAULT_BITS, dtype=np.float64)
        old = (prof.params[:, None] * b[None, :] / (req.down_bps * req.reuse)) \
            * (1.0 + req.beta_s_per_j * req.p_rx_w) \
            + (2.0 * prof.macs[:, None] / (req.dev_flops_per_s * kap[None, :])) * w_comp
        assert np.array_equal(T.c_w, old)
        per = 2.0 * prof.macs / (req.srv_flops_per_s * req.srv_load)
        suffix = np.concatenate([np.cumsum(per[::-1])[::-1], [0.0]])
        assert np.array_equal(cost_mod.server_suffix_s(prof, req), suffix)


# ------------------------------------------------------------------------- agreement
def _labelled(prof, rng):
    L = prof.n_units
    t_dev = np.exp(rng.uniform(np.log(1e-4), np.log(1e-1), L))
    t_srv = np.exp(rng.uniform(np.log(1e-5), np.log(1e-2), L))
    return _with_tables(prof, {"dev-x": t_dev.tolist(), "srv-y": t_srv.tolist()})


def test_optimizer_is_exact_with_measured_tables() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        prof = _labelled(random_profile(int(rng.integers(1, 5)), rng), rng)
        req = dataclasses.replace(random_request(rng), device="dev-x", server="srv-y")
        sol = solve(prof, req)
        f = evaluate_plans(prof, req, [sol.plan])
        assert f.feasible[0] and f.cost[0] == pytest.approx(sol.cost, rel=1e-9)
        assert sol.cost == pytest.approx(brute_force_cost(prof, req), rel=1e-9)


def test_tables_change_the_decision_where_they_should() -> None:
    """A device whose table says its first unit is slow keeps that unit on the server."""
    prof = toy3()
    req = dataclasses.replace(REQ, eps_pp=0.0, up_bps=1e5, down_bps=1e12, rtt_s=1e-6,
                              device="dev-x")
    fast = _with_tables(prof, {"dev-x": [1e-6, 1e-6, 1e-6]})
    slow = _with_tables(prof, {"dev-x": [10.0, 10.0, 10.0]})
    assert solve(fast, req).plan.cut == 3 and solve(slow, req).plan.cut == 0


@pytest.mark.parametrize("overhead", [0.0, 3e-4])
def test_trivial_prices_equal_the_cost_model(monkeypatch, overhead: float) -> None:
    _fake_timing(monkeypatch, {"gpu": UnitTiming(overhead_s=overhead, carry_eff=True)})
    rng = np.random.default_rng(11)
    for _ in range(10):
        prof = _labelled(random_profile(int(rng.integers(2, 9)), rng), rng)
        L = prof.n_units
        eff = np.exp(rng.normal(0, 0.5, L))
        eff *= np.sum(prof.macs / eff) / np.sum(prof.macs)
        prof = dataclasses.replace(prof, efficiency=UnitEfficiency(eff, {}))
        d_w, d_a = drop_tables(prof, DEFAULT_BITS)
        tp = TrivialPlans(prof, DEFAULT_BITS, d_w.tolist(), d_a.tolist())
        for dev, srv in (("", ""), ("dev-x", "srv-y"), ("gpu", "dev-x"), ("srv-y", "gpu")):
            r = dataclasses.replace(random_request(rng), device=dev, server=srv)
            t = rf.from_request(r)
            prices = tp.prices(t, dev, srv)
            T = unit_tables(prof, r)
            for p, w, a in tp.actions:
                bits = np.full((1, L), 32)
                bits[0, :p] = [DEFAULT_BITS[k] for k in w]
                want = evaluate_arrays(prof, r, np.array([p]), bits, np.array([DEFAULT_BITS[a]])).cost[0]
                assert tp.cost((p, w, a), prices, dev, srv) == pytest.approx(want, rel=1e-12)
                assert T.fixed[p, a] + T.c_w[np.arange(p), w].sum() == pytest.approx(want, rel=1e-12)
            worst = (L, [0] * L, DEFAULT_BITS.index(32))
            floor = tp.floor(t, worst, r.eps_pp, dev, srv)
            if floor is not None:
                assert tp.cost(floor, prices, dev, srv) <= tp.cost(worst, prices, dev, srv)


# ------------------------------------------------------------------------- schema
def _digits_with_times() -> dict:
    d = load_profile("digits_cnn").to_dict()
    d.pop("unit_times", None)
    L = len(d["units"])
    d["unit_times"] = {"tables": {"host-a-1t": {"time_s": [1e-5] * L, "provenance": dict(PROV)}}}
    return d


def test_schema_round_trips_and_hash_ignores_host_tables() -> None:
    d = _digits_with_times()
    prof = profile_from_dict(d)
    assert profile_from_dict(prof.to_dict()).to_dict() == prof.to_dict()
    bare = copy.deepcopy(d)
    del bare["unit_times"]
    assert prof.sha256() == profile_from_dict(bare).sha256()
    d["unit_times"]["tables"]["rpi4"] = d["unit_times"]["tables"]["host-a-1t"]
    assert profile_from_dict(d).sha256() != prof.sha256()   # a catalog processor's table counts


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda u: u["tables"]["host-a-1t"].update(time_s=[1e-5] * 3),
     r"tables\['host-a-1t'\]\.time_s: expected a list of 9 numbers"),
    (lambda u: u["tables"]["host-a-1t"]["time_s"].__setitem__(4, -1.0),
     r"time_s\[4\]: -1 is outside the allowed range \(0, 1e\+06\] s"),
    (lambda u: u["tables"]["host-a-1t"]["time_s"].__setitem__(2, 0.0), r"time_s\[2\]: 0 is outside"),
    (lambda u: u["tables"].update({"../x": u["tables"]["host-a-1t"]}), r"is not a processor name"),
    (lambda u: u["tables"]["host-a-1t"]["provenance"].pop("date"), r"provenance: expected an object"),
    (lambda u: u["tables"]["host-a-1t"]["provenance"].update(method="guess"),
     r"provenance\.method: 'guess' is not one of"),
    (lambda u: u["tables"]["host-a-1t"].update(extra=1), r"unknown key\(s\) \['extra'\]"),
    (lambda u: u.update(eff=[1.0] * 9), r"eff and fit go together"),
    (lambda u: u.update(eff=[2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0],
                        fit={"method": "m", "reference": ["host-a-1t"], "processors": {}}),
     r"eff: MAC-weighted harmonic mean 0\.5; expected 1"),
    (lambda u: u.update(eff=[1.0, 1.0, 3.0] + [1.0] * 6,
                        fit={"method": "m", "reference": ["host-a-1t"], "processors": {}}),
     r"eff\[2\]: 3 on a unit without MACs; expected 1"),
    (lambda u: u.update(eff=[1.0] * 9, fit={"method": "m", "reference": ["nope"], "processors": {}}),
     r"fit\.reference: expected a non-empty list of the names of tables"),
    (lambda u: u.update(spare=1), r"unit_times: unknown key\(s\) \['spare'\]"),
])
def test_schema_refusals_name_the_field(mutate, needle: str) -> None:
    d = _digits_with_times()
    mutate(d["unit_times"])
    with pytest.raises(QsplitInputError, match=needle) as info:
        profile_from_dict(d, where="profile digits_cnn")
    assert "\n" not in str(info.value) and str(info.value).startswith("profile digits_cnn.unit_times")


def test_catalog_overhead_needs_a_source(monkeypatch) -> None:
    from system import hardware
    cat = copy.deepcopy(hardware._catalog())
    cat["servers"]["t4"]["overhead_s"] = 1e-4
    del cat["servers"]["t4"]["overhead_source"]
    monkeypatch.setattr(hardware, "_catalog", lambda: cat)
    with pytest.raises(QsplitInputError, match=r"server t4: overhead_source: expected the source"):
        hardware.get_server("t4")
    cat["servers"]["t4"]["overhead_source"] = "a measurement"
    assert hardware.get_server("t4").timing.overhead_s == 1e-4
    cat["servers"]["t4"]["overhead_s"] = -1
    with pytest.raises(QsplitInputError, match=r"server t4: overhead_s: -1 is outside"):
        hardware.get_server("t4")


def test_shipped_catalog_overheads_cite_a_source_and_carry_no_eff() -> None:
    from system.hardware import catalog_entries
    with_overhead = []
    for kind in ("devices", "servers"):
        for name in catalog_entries(kind):
            timing = cost_mod.processor_timing(name)
            assert not timing.carry_eff, name
            if timing.overhead_s:
                assert "PORTEND" in timing.overhead_source, name
                with_overhead.append(name)
    assert sorted(with_overhead) == ["a100", "t4"]      # the GPUs at batch 1


# ------------------------------------------------------------------------- the fit
def test_fit_recovers_a_known_law_and_reports_it() -> None:
    from profiling.timing import compare_models, fit_efficiency, predict
    rng = np.random.default_rng(3)
    macs = np.array([1e6, 0.0, 4e6, 2e6, 8e5, 0.0, 3e6])
    eff = np.where(macs > 0, np.exp(rng.normal(0, 0.4, len(macs))), 1.0)
    eff = np.where(macs > 0, eff * np.sum(macs / eff) / np.sum(macs), 1.0)
    tables = {"a": predict(macs, eff, 2e10, 2e-5), "b": predict(macs, eff, 5e10, 8e-6)}
    got, per = fit_efficiency(macs, tables)
    assert np.allclose(got, eff, rtol=1e-6)
    assert per["a"]["flops_per_s"] == pytest.approx(2e10, rel=1e-6)
    assert per["b"]["overhead_s"] == pytest.approx(8e-6, rel=1e-6)
    assert per["a"]["mape"] < 1e-6 and per["b"]["r2"] > 1 - 1e-9
    comp = compare_models(macs, tables)
    assert comp["macs_only"]["a"]["mape"] > 0.05          # MACs alone do not explain it
    assert comp["carried"]["b"]["mape_eff_with_o"] < 1e-6  # eff from a carries to b


def test_time_units_measures_every_unit() -> None:
    torch = pytest.importorskip("torch")
    from profiling.profiler import profile_module, split_units
    from profiling.timing import host_processor_name, time_units
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10))
    prof = profile_module(model, (1, 8, 8))
    t, prov = time_units(split_units(prof), torch.zeros(1, 1, 8, 8), threads=1, repeats=3, warmup=1)
    assert t.shape == (len(prof.units),) and (t > 0).all()
    assert {"machine", "torch", "threads", "repeats", "date", "method"} <= set(prov)
    assert prov["threads"] == 1 and prov["method"] == "profiler"
    assert host_processor_name(2).startswith("host-") and host_processor_name(2).endswith("-2t")


# ------------------------------------------------------------------------- import-times
def _cli(*args: str) -> int:
    from profiling.__main__ import main
    return main(list(args))


@pytest.fixture
def digits_copy(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    p = tmp_path / "d.json"
    d = load_profile("digits_cnn").to_dict()
    d.pop("unit_times", None)
    p.write_text(json.dumps(d))
    return p


def test_import_per_unit_and_per_split_rows(digits_copy: Path, tmp_path: Path, capsys) -> None:
    prof = load_profile(str(digits_copy))
    names = list(prof.unit_names)
    t = (np.arange(1, len(names) + 1) * 1e-4).tolist()
    units = tmp_path / "u.csv"
    rows = reversed(list(zip(names, t, strict=True)))
    units.write_text("unit,time_s\n" + "".join(f"{n},{v!r}\n" for n, v in rows))
    assert _cli("import-times", "--profile", str(digits_copy), "--processor", "rpi-x",
                "--csv", str(units)) == 0
    got = load_profile(str(digits_copy)).time_tables["rpi-x"]
    assert np.allclose(got.time_s, t) and got.provenance["method"] == "import-units"
    t = np.asarray(t)
    head = np.concatenate([[0.0], np.cumsum(t)]).tolist()
    tail = np.concatenate([np.cumsum((2 * t)[::-1])[::-1], [0.0]]).tolist()
    splits = tmp_path / "s.csv"
    splits.write_text("split,head_time_s,tail_time_s\n" + "".join(
        f"{p},{h!r},{tl!r}\n" for p, (h, tl) in enumerate(zip(head, tail, strict=True))))
    assert _cli("import-times", "--profile", str(digits_copy), "--processor", "phone",
                "--tail-processor", "edge", "--csv", str(splits)) == 0
    prof = load_profile(str(digits_copy))
    assert np.allclose(prof.time_tables["phone"].time_s, t)
    assert np.allclose(prof.time_tables["edge"].time_s, 2 * t)
    assert prof.time_tables["edge"].provenance["method"] == "import-splits"
    assert _cli("import-times", "--profile", str(digits_copy), "--processor", "same",
                "--csv", str(splits)) == 0
    same = load_profile(str(digits_copy)).time_tables["same"]
    assert np.allclose(same.time_s, 1.5 * t) and same.provenance["max_relative_gap"] > 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert "carried_fit" in json.loads(out)["imported"]["same"]


@pytest.mark.parametrize(("text", "needle"), [
    ("unit,time_s\nconv1,1e-4\n", r"missing unit\(s\) \['conv2'"),
    ("unit,time_s\nconv1,1e-4\nconv9,1e-4\n", r"line 3: unit 'conv9' is not a unit of"),
    ("unit,time_s\nconv1,1e-4\nconv1,2e-4\n", r"line 3: unit 'conv1' already given on line 2"),
    ("unit,time_s\nconv1,-1\n", r"line 2: time_s: -1 is outside the allowed range"),
    ("unit,time_s\nconv1,abc\n", r"line 2: time_s: expected a number"),
    ("split,head_time_s,tail_time_s\n0,0,1\n1,0.1,0.9\n2,0.05,0.8\n",
     r"line 4: head_time_s 0\.05 s at split 2 is not above 0\.1 s at split 1 \(line 3\)"),
    ("split,head_time_s,tail_time_s\n0,0,1\n1,0.1,0.9\n", r"missing split\(s\) \[2, 3"),
    ("split,head_time_s,tail_time_s\n12,0,1\n", r"line 2: split 12 is outside \[0, 9\]"),
    ("a,b\n1,2\n", r"neither per-unit \(unit,time_s\) nor per-split"),
])
def test_import_refuses_inconsistent_rows(digits_copy: Path, tmp_path: Path, capsys,
                                          text: str, needle: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(text)
    before = digits_copy.read_text()
    assert _cli("import-times", "--profile", str(digits_copy), "--processor", "p",
                "--csv", str(f)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: times bad.csv") and "\n" not in err
    import re
    assert re.search(needle, err), err
    assert digits_copy.read_text() == before


def test_import_refuses_non_monotone_tail_naming_the_row(digits_copy: Path, tmp_path: Path,
                                                         capsys) -> None:
    L = load_profile(str(digits_copy)).n_units
    rows = [f"{p},{p * 0.1!r},{(L - p) * 0.1!r}" for p in range(L + 1)]
    rows[4] = f"4,0.4,{(L - 2) * 0.1!r}"           # tail rises from split 3 to 4
    f = tmp_path / "t.csv"
    f.write_text("split,head_time_s,tail_time_s\n" + "\n".join(rows) + "\n")
    assert _cli("import-times", "--profile", str(digits_copy), "--processor", "p", "--csv", str(f)) == 2
    assert "line 6: tail_time_s 0.7 s at split 4 is not below" in capsys.readouterr().err


def test_time_units_cli_writes_a_table_and_a_fit(digits_copy: Path, capsys) -> None:
    assert _cli("time-units", "--profile", str(digits_copy), "--threads", "1",
                "--repeats", "3", "--warmup", "1", "--processor", "host-test-1t") == 0
    prof = load_profile(str(digits_copy))
    assert set(prof.time_tables) == {"host-test-1t"}
    assert prof.efficiency is not None and prof.efficiency.fit["reference"] == ["host-test-1t"]
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last["fit"]["processors"]["host-test-1t"]) == {"flops_per_s", "overhead_s", "r2", "mape"}


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--threads", "0", "--threads: 0 is outside the allowed range [1, 1024]"),
    ("--repeats", "0", "--repeats: 0 is outside the allowed range [1, 1000000]"),
    ("--warmup", "-1", "--warmup: -1 is outside the allowed range [0, 1000000]")])
def test_time_units_refuses_bad_counts_in_one_line(digits_copy: Path, capsys, flag: str,
                                                   value: str, needle: str) -> None:
    args = {"--threads": "1", "--repeats": "3", "--warmup": "1", flag: value}
    assert _cli("time-units", "--profile", str(digits_copy),
                *[x for kv in args.items() for x in kv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_regenerating_a_profile_keeps_its_measured_tables(digits_copy: Path, tmp_path: Path) -> None:
    from profiling.__main__ import write_profile
    prof = _with_tables(load_profile(str(digits_copy)), {"host-z": [1e-5] * 9})
    write_profile(prof, digits_copy)
    bare = dataclasses.replace(prof, time_tables={}, efficiency=None)
    write_profile(bare, digits_copy)
    assert set(load_profile(str(digits_copy)).time_tables) == {"host-z"}


# ------------------------------------------------------------------------- shipped tables
@pytest.mark.parametrize("name", ["digits_cnn", "resnet18"])
def test_shipped_profiles_carry_this_hosts_measured_times(name: str) -> None:
    prof = load_profile(name)
    hosts = [n for n in prof.time_tables if n.startswith("host-")]
    assert hosts, f"{name}: no host table (python -m profiling time-units --profile {name})"
    for n in hosts:
        prov = prof.time_tables[n].provenance
        assert prov["method"] == "profiler" and prov["threads"] >= 1 and prov["repeats"] >= 10
        assert {"machine", "torch", "date"} <= set(prov)
    fit = prof.efficiency.fit
    warm = [n for n in hosts if not prof.time_tables[n].provenance.get("idle_ms")]
    assert set(fit["reference"]) == set(warm)   # tables timed after idle gaps stay out of eff
    for n in hosts:
        assert 0.0 <= fit["processors"][n]["mape"] < 10.0


def test_resnet18_module_is_the_shipped_profiles_network() -> None:
    pytest.importorskip("torch")
    from profiling.architectures import resnet18_module
    from profiling.profiler import profile_module
    prof, shipped = profile_module(resnet18_module(), (3, 224, 224)), load_profile("resnet18")
    assert tuple(u.name for u in prof.units) == shipped.unit_names
    assert [u.macs for u in prof.units] == shipped.macs.tolist()
    assert [u.params for u in prof.units] == shipped.params.tolist()
