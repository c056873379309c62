"""Tests of system/codec.py (observation encoder, action codec) and system/repair.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from system.accuracy import FEAS_TOL_PP
from system.bits import DEFAULT_BITS
from system.codec import ActionCodec, Feature, ObservationEncoder, dumps
from system.cost import evaluate_plans, unit_tables
from system.errors import QsplitInputError
from system.hardware import device_names, get_device, get_server
from system.plan import Plan, plans_to_arrays
from system.profiles import ModelProfile, random_profile, toy3
from system.repair import repair, repair_indices
from system.request import Request
from system.scenario import load_scenario, sample_requests

K = len(DEFAULT_BITS)


@st.composite
def plans(draw: st.DrawFn, n_units: int) -> Plan:
    cut = draw(st.integers(0, n_units))
    wb = draw(st.lists(st.sampled_from(DEFAULT_BITS), min_size=cut, max_size=cut))
    ab = draw(st.sampled_from(DEFAULT_BITS))
    return Plan.canonical(cut, wb, ab, n_units)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    log = lambda lo, hi: 10 ** draw(st.floats(math.log10(lo), math.log10(hi)))  # noqa: E731
    return Request.make(
        get_device(draw(st.sampled_from(device_names()))), get_server("t4"),
        up_bps=log(1e4, 1e9), down_bps=log(1e4, 3e9), rtt_s=log(1e-3, 1.0),
        eps_pp=draw(st.sampled_from([0.0, 1e-6, 0.01])) if draw(st.booleans()) else log(1e-3, 50),
        beta_s_per_j=draw(st.floats(0.0, 2.0)), reuse=log(1.0, 1e3),
        srv_load=draw(st.floats(0.05, 1.0)), dev_speed_factor=draw(st.floats(0.1, 1.0)))


# ---------------------------------------------------------------- codec

@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12).flatmap(lambda L: st.tuples(st.just(L), plans(L))))
def test_codec_round_trip(case: tuple[int, Plan]) -> None:
    L, plan = case
    codec = ActionCodec(L)
    action = codec.encode(plan)
    assert action.shape == (L + 2,)
    assert np.all(action >= 0) and np.all(action < codec.nvec)
    assert codec.decode(action) == plan


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10), st.data())
def test_decode_is_canonical_and_matches_plan_arrays(L: int, data: st.DataObject) -> None:
    codec = ActionCodec(L)
    acts = np.array([[data.draw(st.integers(0, int(n) - 1)) for n in codec.nvec]
                     for _ in range(5)])
    plans_ = [codec.decode(a) for a in acts]
    for a, p in zip(acts, plans_, strict=True):
        assert p == Plan.canonical(p.cut, p.weight_bits, p.act_bits, L)
        assert codec.decode(codec.encode(p)) == p
        assert p.cut == a[0]
    for x, y in zip(codec.decode_arrays(acts), plans_to_arrays(plans_, L), strict=True):
        np.testing.assert_array_equal(x, y)


def test_codec_layout_and_json() -> None:
    codec = ActionCodec(3)
    assert codec.nvec.tolist() == [4, K] + [K] * 3
    assert codec.decode([0, 0, 0, 0, 0]) == Plan(0, (), 32)
    assert codec.decode([3, 0, 1, 2, 3]) == Plan(3, (3, 4, 6), 32)
    assert codec.decode([2, 4, 0, 0, 6]) == Plan(2, (2, 2), 8)
    again = ActionCodec.from_json(json.loads(json.dumps(codec.to_json())))
    assert again == codec and dumps(again) == dumps(codec)
    with pytest.raises(QsplitInputError, match=r"action\[0\]"):
        codec.decode([4, 0, 0, 0, 0])
    with pytest.raises(QsplitInputError, match=r"action\[3\]"):
        codec.decode([1, 0, 0, -1, 0])
    with pytest.raises(QsplitInputError, match="n_units"):
        ActionCodec(0)
    with pytest.raises(QsplitInputError, match=r"codec\.nvec"):
        ActionCodec.from_json({**codec.to_json(), "nvec": [1, 2]})


# ---------------------------------------------------------------- encoder

def test_encoder_shapes_bounds_and_batch_equality() -> None:
    enc = ObservationEncoder()
    reqs = sample_requests(load_scenario(), np.random.default_rng(0), 200)
    X = enc.encode_batch(reqs)
    assert X.shape == (200, enc.n_features) and X.dtype == np.float32
    assert np.all(np.abs(X) <= enc.clip)
    # typical requests of the default scenario sit well inside the clip range
    assert np.percentile(np.abs(X), 99) < 2.5
    for i in (0, 17, 199):
        np.testing.assert_array_equal(enc.encode(reqs[i]), X[i])


def test_encoder_json_round_trip_and_errors() -> None:
    enc = ObservationEncoder()
    again = ObservationEncoder.from_json(json.loads(json.dumps(enc.to_json())))
    assert again == enc
    with pytest.raises(QsplitInputError, match="quantity"):
        Feature("colour")
    with pytest.raises(QsplitInputError, match="scale"):
        Feature("eps_pp", scale=0.0)
    with pytest.raises(QsplitInputError, match="unknown key"):
        ObservationEncoder.from_json({**enc.to_json(), "extra": 1})


def test_encoder_formula() -> None:
    enc = ObservationEncoder(features=(Feature("eps_pp", center=0.0, scale=2.0),
                                       Feature("srv_load", "linear", center=0.5, scale=0.25),
                                       Feature("up_bps", center=0.0, scale=0.1)), clip=3.0)
    r = sample_requests(load_scenario(), np.random.default_rng(0), 1)[0]
    x = enc.encode(r)
    assert x[0] == pytest.approx(math.log10(r.eps_pp) / 2.0, rel=1e-6)
    assert x[1] == pytest.approx((r.srv_load - 0.5) / 0.25, rel=1e-6)
    assert x[2] == 3.0   # clipped


# ---------------------------------------------------------------- repair

def _reference_repair(profile: ModelProfile, req: Request, plan: Plan) -> Plan:
    """The docstring's global rule, written plainly (every move scored every step)."""
    T = unit_tables(profile, req)
    L = profile.n_units
    idx = {b: i for i, b in enumerate(DEFAULT_BITS)}
    p = plan.cut
    k = [idx[b] for b in plan.weight_bits]
    a = idx[plan.act_bits]
    eps = req.eps_pp + FEAS_TOL_PP

    def drop() -> float:
        return sum(T.d_w[i, k[i]] for i in range(p)) + T.d_a[p, a]

    while drop() > eps:
        moves = []   # (score, dd, order, row, option)
        rows = [(T.d_w[i], T.c_w[i], k[i]) for i in range(p)]
        if 0 < p < L:
            rows.append((T.d_a[p], T.fixed[p], a))
        for r, (d, c, cur) in enumerate(rows):
            for j in range(cur + 1, K):
                dd, dc = d[cur] - d[j], c[j] - c[cur]
                if dd > 0:
                    moves.append((dd / dc if dc > 0 else math.inf, dd, -r, r, j))
        if not moves:
            return Plan(0, (), 32)
        _, _, _, r, j = max(moves)
        if r < p:
            k[r] = j
        else:
            a = j
    return Plan.canonical(p, [DEFAULT_BITS[i] for i in k], DEFAULT_BITS[a], L)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**32 - 1), requests(), st.data())
def test_repair_always_feasible_and_matches_the_rule(L: int, seed: int, req: Request,
                                                      data: st.DataObject) -> None:
    profile = random_profile(L, np.random.default_rng(seed))
    plan = data.draw(plans(L))
    res = repair(profile, req, plan)
    fig = evaluate_plans(profile, req, [res.plan])
    assert bool(fig.feasible[0])
    assert res.drop_pp == pytest.approx(float(fig.drop_pp[0]), rel=1e-9, abs=1e-15)
    assert res.cost == pytest.approx(float(fig.cost[0]), rel=1e-9)
    before = evaluate_plans(profile, req, [plan])
    if bool(before.feasible[0]):
        assert res.plan == plan and not res.repaired
    elif not res.fallback:
        assert res.repaired and res.plan.cut == plan.cut
        assert all(b1 >= b0 for b0, b1 in zip(plan.weight_bits, res.plan.weight_bits,
                                              strict=True))
    assert res.plan == _reference_repair(profile, req, plan)
    assert repair(profile, req, plan) == res


def test_repair_falls_back_to_server_only() -> None:
    base = toy3()
    huge = ModelProfile(**{**base.__dict__, "sens_w": base.sens_w * 1e12})
    req = Request.make(get_device("rpi4"), get_server("t4"), up_bps=1e6, down_bps=1e7,
                       rtt_s=0.05, eps_pp=0.0)
    res = repair(huge, req, Plan(3, (2, 2, 2), 32))
    assert res.fallback and res.repaired and res.plan == Plan(0, (), 32)
    assert res.drop_pp == 0.0


def test_repair_on_53_units_is_fast_and_near_optimal() -> None:
    import time

    from system.optimal import solve

    profile = random_profile(53, np.random.default_rng(1))
    reqs = sample_requests(load_scenario(), np.random.default_rng(0), 100)
    regrets, t = [], 0.0
    for r in reqs:
        T = unit_tables(profile, r)
        sol = solve(profile, r, tables=T)
        t0 = time.perf_counter()
        res = repair_indices(T, r.eps_pp, sol.plan.cut, np.zeros(53, dtype=np.int64), 0)
        t += time.perf_counter() - t0
        regrets.append(res.cost / sol.cost - 1.0)
    # all-2-bit at the optimal cut, repaired: a greedy knapsack, close to the optimum
    assert min(regrets) >= -1e-9
    assert np.mean(regrets) < 0.02
    assert t / len(reqs) < 0.005


def test_execute_action_repairs_or_passes_through() -> None:
    from system.repair import execute_action

    profile = random_profile(6, np.random.default_rng(0))
    req = sample_requests(load_scenario(), np.random.default_rng(1), 1)[0].with_budget(0.01)
    T = unit_tables(profile, req)
    codec = ActionCodec(6)
    action = codec.encode(Plan(6, (2,) * 6, 32))
    raw = execute_action(T, req.eps_pp, action, repair=False)
    assert raw.plan == Plan(6, (2,) * 6, 32) and not raw.repaired
    assert raw.drop_pp > req.eps_pp
    fixed = execute_action(T, req.eps_pp, action)
    assert fixed.repaired and fixed.drop_pp <= req.eps_pp + FEAS_TOL_PP
