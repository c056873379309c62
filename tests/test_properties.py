"""Monotonicity properties of the cost and accuracy models (hypothesis)."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from system.bits import DEFAULT_BITS
from system.cost import evaluate_arrays
from system.plan import Plan, plans_to_arrays
from system.profiles import random_profile
from system.request import random_request

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _instance(seed: int, n_units: int):
    rng = np.random.default_rng(seed)
    prof = random_profile(n_units, rng)
    req = random_request(rng)
    cut = int(rng.integers(0, n_units + 1))
    wb = tuple(int(b) for b in rng.choice(DEFAULT_BITS, size=cut))
    plan = Plan.canonical(cut, wb, int(rng.choice(DEFAULT_BITS)), n_units)
    return rng, prof, req, plan


def _figs(prof, req, plan):
    return evaluate_arrays(prof, req, *plans_to_arrays([plan], prof.n_units))


@settings(max_examples=200, deadline=None)
@given(seed=seeds, n_units=st.integers(1, 12))
def test_more_bits_never_raise_drop(seed: int, n_units: int) -> None:
    rng, prof, req, plan = _instance(seed, n_units)
    base = _figs(prof, req, plan).drop_pp[0]
    if plan.cut > 0:
        i = int(rng.integers(0, plan.cut))
        higher = [b for b in DEFAULT_BITS if b >= plan.weight_bits[i]]
        wb = list(plan.weight_bits)
        wb[i] = int(rng.choice(higher))
        assert _figs(prof, req, Plan(plan.cut, tuple(wb), plan.act_bits)).drop_pp[0] <= base
    higher_a = [b for b in DEFAULT_BITS if b >= plan.act_bits]
    more_a = Plan(plan.cut, plan.weight_bits, int(rng.choice(higher_a)))
    assert _figs(prof, req, more_a).drop_pp[0] <= base


@settings(max_examples=200, deadline=None)
@given(seed=seeds, n_units=st.integers(1, 12), factor=st.floats(1.0, 1e3))
def test_faster_uplink_never_raises_latency(seed: int, n_units: int, factor: float) -> None:
    _, prof, req, plan = _instance(seed, n_units)
    faster = dataclasses.replace(req, up_bps=req.up_bps * factor)
    assert _figs(prof, faster, plan).latency_s[0] <= _figs(prof, req, plan).latency_s[0]


@settings(max_examples=100, deadline=None)
@given(seed=seeds, n_units=st.integers(1, 12))
def test_cut_zero_has_no_device_compute_and_cut_l_no_uplink(seed: int, n_units: int) -> None:
    _, prof, req, _ = _instance(seed, n_units)
    f0 = _figs(prof, req, Plan.canonical(0, (), 8, n_units))
    assert f0.t_dev_s[0] == 0.0 and f0.t_down_s[0] == 0.0 and f0.drop_pp[0] == 0.0
    fl = _figs(prof, req, Plan.canonical(n_units, (8,) * n_units, 8, n_units))
    assert fl.t_up_s[0] == 0.0 and fl.t_srv_s[0] == 0.0 and fl.uplink_bits[0] == 0.0
