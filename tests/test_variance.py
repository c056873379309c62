"""The variance world: exact trace drains, placement, the clairvoyant and SAA optima."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_optimal import brute_force_cost  # the one enumeration

from system.errors import QsplitInputError
from system.linktrace import (
    CapacityTrace,
    LinkPair,
    load_link_pairs,
    load_routes,
    read_mahimahi_capacity,
)
from system.profiles import random_profile
from system.realised import (
    FutureLibrary,
    clairvoyant,
    clairvoyant_future,
    price,
    saa,
    saa_future,
    solve_future,
)
from system.scenario import load_scenario
from system.variance import (
    ESTIMATORS,
    ShareChain,
    World,
    estimate_bps,
    place,
    planning_request,
    realise,
)

MAHIMAHI = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "mahimahi_cellular"
PKT = 12000.0


def _mm(tmp_path: Path, name: str, stamps: list[int]) -> Path:
    p = tmp_path / name
    p.write_text("".join(f"{s}\n" for s in stamps))
    return p


def test_mahimahi_drain_is_exact_with_outages_and_looping(tmp_path: Path) -> None:
    # period 3 ms; stamp 3 wraps onto ms 0: ms0 1 packet, ms1 2 packets, ms2 none (outage)
    cap = read_mahimahi_capacity(_mm(tmp_path, "a.up", [1, 1, 3]))
    assert cap.period_s == pytest.approx(0.003)
    assert cap.drain_s(0.0, PKT) == pytest.approx(0.001)
    assert cap.drain_s(0.0, 2 * PKT) == pytest.approx(0.0015)    # half of ms1's capacity
    assert cap.drain_s(0.002, PKT) == pytest.approx(0.002)       # waits out ms2, loops
    # ten loops of capacity: done when the tenth loop's ms1 ends (its ms2 is an outage)
    assert cap.drain_s(0.0, 3 * PKT * 10) == pytest.approx(0.029)
    assert cap.drain_s(0.0, 0.0) == 0.0
    assert cap.delivered_bits(0.003 * 7) == pytest.approx(7 * 3 * PKT)


def test_throughput_windows_count_the_opportunities(tmp_path: Path) -> None:
    stamps = [0] * 5 + [1500] * 2 + [2000]           # 5 in s0, 2 in s1, period 2 s
    cap = read_mahimahi_capacity(_mm(tmp_path, "b.down", stamps))
    th = cap.throughput_bps(np.array([2.0]), 2)[0]
    assert th.tolist() == pytest.approx([6 * PKT, 2 * PKT])      # stamp 2000 wraps onto ms 0


def test_capacity_refuses_a_trace_with_no_capacity() -> None:
    with pytest.raises(QsplitInputError, match="no capacity"):
        CapacityTrace("z", np.array([0.0, 1.0]), np.array([0.0, 0.0]))


def test_pairs_need_both_directions_and_routes_are_selectable(tmp_path: Path) -> None:
    _mm(tmp_path, "x.up", [1, 2, 3])
    with pytest.raises(QsplitInputError, match=r"x\.down"):
        load_link_pairs(tmp_path)
    _mm(tmp_path, "x.down", [1, 2, 3, 4])
    _mm(tmp_path, "y-LTE.up", [1, 5])
    _mm(tmp_path, "y-LTE.down", [2, 9])
    pairs = load_link_pairs(tmp_path)
    assert [p.name for p in pairs] == ["x", "y-LTE"]
    assert [r.name for r in load_routes([f"{tmp_path}:y-LTE"])] == ["y-LTE"]
    with pytest.raises(QsplitInputError, match="no route 'nope'"):
        load_routes([f"{tmp_path}:nope"])


def _route(rng: np.random.Generator, name: str, seconds: int = 40) -> LinkPair:
    """A random route: rates per 100 ms, a fifth of them outages."""
    def cap(scale: float) -> CapacityTrace:
        rates = np.exp(rng.normal(np.log(scale), 1.0, seconds * 10))
        rates[rng.random(rates.size) < 0.2] = 0.0
        cum = np.concatenate([[0.0], np.cumsum(rates * 0.1)])
        return CapacityTrace(name, np.arange(rates.size + 1) * 0.1, cum)
    return LinkPair(name, cap(2e6), cap(8e6), "lte")


def _brute(prof, req, fut) -> float:  # type: ignore[no-untyped-def]
    """The least cost under ``fut`` by enumerating every plan (test_optimal's enumeration)."""
    return brute_force_cost(prof, req, lambda c, w, a: price(prof, req, fut, c, w, a))


@pytest.mark.parametrize("chunk", range(3))
def test_clairvoyant_and_saa_equal_brute_force(chunk: int) -> None:
    rng = np.random.default_rng(70 + chunk)
    scen = load_scenario("default")
    for _ in range(8):
        prof = random_profile(int(rng.integers(1, 5)), rng)
        routes = [_route(rng, "r0"), _route(rng, "r1")]
        sit = place(scen, routes, World(), rng, 3, prof)
        lib = FutureLibrary.build(routes, 5, k_futures=4)
        for i in range(len(sit)):
            fut = clairvoyant_future(prof, sit, i)
            sol = clairvoyant(prof, sit, i)
            assert sol.cost == pytest.approx(_brute(prof, sit.requests[i], fut), rel=1e-9)
            w = np.full((1, prof.n_units), 32)
            w[0, :sol.plan.cut] = sol.plan.weight_bits
            real = realise(prof, sit, i, np.array([sol.plan.cut]), w,
                           np.array([sol.plan.act_bits]))
            assert real.cost[0] == pytest.approx(sol.cost, rel=1e-9)
            sfut = saa_future(prof, sit, i, lib)
            assert saa(prof, sit, i, lib).cost == pytest.approx(
                _brute(prof, sit.requests[i], sfut), rel=1e-9)


def test_solver_without_incumbents_is_still_exact() -> None:
    rng = np.random.default_rng(5)
    prof = random_profile(3, rng)
    sit = place(load_scenario("default"), [_route(rng, "r")], World(), rng, 4, prof)
    for i in range(4):
        fut = clairvoyant_future(prof, sit, i)
        assert solve_future(prof, sit.requests[i], fut).cost == pytest.approx(
            _brute(prof, sit.requests[i], fut), rel=1e-9)


def test_placement_is_deterministic_and_observes_only_the_past() -> None:
    rng = np.random.default_rng(0)
    prof = random_profile(4, rng)
    routes = [_route(np.random.default_rng(1), "r")]
    a = place(load_scenario("default"), routes, World(), np.random.default_rng(3), 20, prof)
    b = place(load_scenario("default"), routes, World(), np.random.default_rng(3), 20, prof)
    for f in ("t0_s", "up_hist_bps", "down_hist_bps", "share_hist", "share_now", "deadline_s"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    r = routes[0]
    t0 = a.t0_s[0]
    want = [(r.up.delivered_bits(t0 - j) - r.up.delivered_bits(t0 - j - 1)) for j in (1, 0)]
    assert a.up_hist_bps[0, -2:] == pytest.approx(want)
    req = planning_request(a, 0)
    assert req.up_bps == pytest.approx(max(a.up_hist_bps[0].mean(), 1e3))


def test_estimators_and_share_chain() -> None:
    h = np.array([[1e6, 0.0, 3e6, 2e6, 4e6]])
    assert estimate_bps(h, "mean")[0] == pytest.approx(2e6)
    assert estimate_bps(h, "last")[0] == pytest.approx(4e6)
    assert estimate_bps(h, "harmonic")[0] < 1e4          # the outage dominates
    assert set(ESTIMATORS) >= {"mean", "last", "harmonic", "ewma"}
    with pytest.raises(QsplitInputError, match="estimator"):
        estimate_bps(h, "median")
    ch = ShareChain()
    paths = ch.paths(np.random.default_rng(0), 4000, 2)
    stay = np.mean(paths[:, 0] == paths[:, 1])
    assert stay == pytest.approx(ch.stay, abs=0.02)
    last = np.array(1.0)
    exp = ch.next_inverse_mean(last)
    assert exp == pytest.approx(0.9 * 1.0 + 0.1 * (1 / 0.6 + 1 / 0.3) / 2)


@pytest.mark.skipif(not MAHIMAHI.is_dir(), reason="../shared traces absent")
def test_real_mahimahi_pairs_load_and_match_their_source_means() -> None:
    pairs = {p.name: p for p in load_link_pairs(MAHIMAHI)}
    assert set(pairs) == {"ATT-LTE-driving-2016", "TMobile-LTE-short", "TMobile-UMTS-driving",
                          "Verizon-LTE-short"}
    # SOURCE.md: per-second uplink means 1.89, 13.2, 0.94, 5.90 Mbit/s
    for name, mean in (("ATT-LTE-driving-2016", 1.89), ("TMobile-LTE-short", 13.2),
                       ("TMobile-UMTS-driving", 0.94), ("Verizon-LTE-short", 5.90)):
        assert pairs[name].up.mean_bps / 1e6 == pytest.approx(mean, rel=0.02)
    assert pairs["TMobile-UMTS-driving"].link == "3g"


def test_rate_replay_of_a_mahimahi_folder_draws_downlinks_only(tmp_path: Path) -> None:
    from system.channel import TraceChannel

    _mm(tmp_path, "z.up", [1, 2, 3])
    _mm(tmp_path, "z.down", [1, 1, 1, 2, 3])
    ch = TraceChannel.from_folder(tmp_path, link="lte")
    assert [t.direction for t in ch.traces] == ["downlink"]


def test_an_infeasible_incumbent_does_not_prune_the_optimum() -> None:
    from dataclasses import replace as dc_replace

    from system.plan import Plan

    rng = np.random.default_rng(11)
    prof = random_profile(3, rng)
    sit = place(load_scenario("default"), [_route(rng, "r")], World(), rng, 4, prof)
    for i in range(4):
        req = dc_replace(sit.requests[i], eps_pp=0.01)
        fut = clairvoyant_future(prof, sit, i)
        cheap = Plan(prof.n_units, (2,) * prof.n_units, 32)     # cheap and far over budget
        got = solve_future(prof, req, fut, incumbents=(cheap,))
        assert got.cost == pytest.approx(_brute(prof, req, fut), rel=1e-9)
