"""Golden tests of every cost term on the hand-made 3-unit profile, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from system.accuracy import drop_pp
from system.cost import (
    bits_at_cut,
    evaluate_arrays,
    payload_reduction,
    t_dev_s,
    t_down_s,
    t_srv_s,
    t_up_s,
    unit_tables,
)
from system.plan import Plan, plans_to_arrays
from system.profiles import toy3
from system.request import Request

# kappa over kernel widths (4, 8, 16, 32): no int4, int8 4x, fp16 2x.
REQ = Request(dev_flops_per_s=1e9, dev_kappa=(0.0, 4.0, 2.0, 1.0), p_comp_w=2.0, p_tx_w=1.0,
              p_rx_w=0.5, p_idle_w=0.1, srv_flops_per_s=1e11, srv_load=0.5, up_bps=1e6,
              down_bps=1e7, rtt_s=0.02, eps_pp=1.0, beta_s_per_j=0.1, reuse=2.0)
PROF = toy3()  # macs 1e6, 2e6, 0.5e6; params 1000, 2000, 500; out 4000, 1000, 10; in 3000 x 8 bits
CUT2 = Plan(cut=2, weight_bits=(8, 4), act_bits=8)


def arrays(plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return plans_to_arrays([plan], PROF.n_units)


def test_t_down_by_hand() -> None:
    c, w, _ = arrays(CUT2)
    # (rtt + (1000*8 + 2000*4) bits / 1e7 bit/s) / reuse 2
    assert t_down_s(PROF, REQ, c, w)[0] == pytest.approx((0.02 + 16000 / 1e7) / 2, rel=1e-12)
    c0, w0, _ = arrays(Plan(0, (), 32))
    assert t_down_s(PROF, REQ, c0, w0)[0] == 0.0


def test_t_dev_by_hand_with_kernel_widths() -> None:
    c, w, _ = arrays(CUT2)
    # 8 bits -> int8 (x4); 4 bits -> no int4 kernel, so int8 (x4) as well
    assert t_dev_s(PROF, REQ, c, w)[0] == pytest.approx(2e6 / 4e9 + 4e6 / 4e9, rel=1e-12)
    c6, w6, _ = arrays(Plan(1, (16,), 8))
    assert t_dev_s(PROF, REQ, c6, w6)[0] == pytest.approx(2e6 / 2e9, rel=1e-12)


def test_t_up_by_hand() -> None:
    c, _, a = arrays(CUT2)
    assert bits_at_cut(PROF, c, a)[0] == 8000.0
    assert t_up_s(PROF, REQ, c, a)[0] == pytest.approx(0.01 + 8000 / 1e6, rel=1e-12)
    c0, _, a0 = arrays(Plan(0, (), 32))
    assert t_up_s(PROF, REQ, c0, a0)[0] == pytest.approx(0.01 + 24000 / 1e6, rel=1e-12)
    c3, _, a3 = arrays(Plan(3, (32, 32, 32), 32))
    assert t_up_s(PROF, REQ, c3, a3)[0] == 0.0


def test_t_srv_by_hand() -> None:
    assert t_srv_s(PROF, REQ, np.array([2]))[0] == pytest.approx(1e6 / 5e10, rel=1e-12)
    assert t_srv_s(PROF, REQ, np.array([0]))[0] == pytest.approx(7e6 / 5e10, rel=1e-12)
    assert t_srv_s(PROF, REQ, np.array([3]))[0] == 0.0


def test_totals_drop_and_payload_by_hand() -> None:
    c, w, a = arrays(CUT2)
    f = evaluate_arrays(PROF, REQ, c, w, a)
    lat = 0.0108 + 0.0015 + 0.018 + 2e-5
    energy = 0.5 * 0.0108 + 2 * 0.0015 + 1 * 0.018 + 0.1 * 2e-5
    assert f.latency_s[0] == pytest.approx(lat, rel=1e-12)
    assert f.energy_j[0] == pytest.approx(energy, rel=1e-12)
    assert f.cost[0] == pytest.approx(lat + 0.1 * energy, rel=1e-12)
    drop = 100 / 255**2 + 50 / 15**2 + 40 / 255**2
    assert drop_pp(PROF, c, w, a)[0] == pytest.approx(drop, rel=1e-12)
    assert f.feasible[0]
    # device payload: 2e6*8/32 + 4e6*4/32 = 1e6 of 7e6 fp32 FLOPs
    assert payload_reduction(PROF, c, w)[0] == pytest.approx(6 / 7, rel=1e-12)


def test_activation_bits_unused_at_the_ends() -> None:
    for cut in (0, 3):
        wb = (32,) * cut
        f2 = evaluate_arrays(PROF, REQ, *arrays(Plan(cut, wb, 2)))
        f32 = evaluate_arrays(PROF, REQ, *arrays(Plan(cut, wb, 32)))
        assert f2.cost[0] == f32.cost[0]
        assert f2.drop_pp[0] == f32.drop_pp[0]


def test_unit_tables_regroup_the_same_cost() -> None:
    rng = np.random.default_rng(0)
    T = unit_tables(PROF, REQ)
    bits = np.asarray(T.bits)
    for _ in range(200):
        cut = int(rng.integers(0, 4))
        ks = rng.integers(0, len(bits), size=3)
        a = int(rng.integers(0, len(bits)))
        wb = np.full((1, 3), 32)
        wb[0, :cut] = bits[ks[:cut]]
        f = evaluate_arrays(PROF, REQ, np.array([cut]), wb, np.array([bits[a]]))
        cost = T.c_w[np.arange(cut), ks[:cut]].sum() + T.fixed[cut, a]
        drop = T.d_w[np.arange(cut), ks[:cut]].sum() + T.d_a[cut, a]
        assert cost == pytest.approx(f.cost[0], rel=1e-12)
        assert drop == pytest.approx(f.drop_pp[0], rel=1e-12, abs=1e-18)


def test_one_drop_sum_for_single_plans_and_batches() -> None:
    """drop_sums_pp adds in drop_sum_pp's order, so the batch and the guard agree bit for bit."""
    from system.cost import drop_sum_pp, drop_sums_pp

    rng = np.random.default_rng(5)
    terms = 10.0 ** rng.uniform(-12, 1, size=(500, 53))
    cuts = rng.integers(0, 54, size=500)
    terms[np.arange(53)[None, :] >= cuts[:, None]] = 0.0
    act = 10.0 ** rng.uniform(-12, 1, size=500)
    got = drop_sums_pp(terms, act)
    want = [drop_sum_pp(terms[i, :c].tolist(), float(act[i])) for i, c in enumerate(cuts)]
    assert got.tolist() == want
