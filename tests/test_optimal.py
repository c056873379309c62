"""Exactness of the optimizer: equal to brute force on small profiles, to HiGHS on large ones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from system.baselines import DECIDERS
from system.bits import DEFAULT_BITS
from system.cost import evaluate_arrays, evaluate_plans
from system.milp import solve_milp
from system.optimal import solve
from system.profiles import random_profile, toy3
from system.request import random_request


def brute_force_cost(prof, req, price=None) -> float:  # type: ignore[no-untyped-def]
    """Least feasible cost over every plan, by enumeration through the direct cost formulas;
    ``price(cuts, wbits, abits)`` replaces the cost (feasibility is still the request's)."""
    L = prof.n_units
    best = np.inf
    for p in range(L + 1):
        combos = np.array(list(itertools.product(DEFAULT_BITS, repeat=p)), dtype=np.int64)
        combos = combos.reshape(len(DEFAULT_BITS) ** p, p)
        wb = np.full((len(combos), L), 32)
        wb[:, :p] = combos
        for a in (DEFAULT_BITS if 0 < p < L else (32,)):
            cuts, ab = np.full(len(combos), p), np.full(len(combos), a)
            f = evaluate_arrays(prof, req, cuts, wb, ab)
            cost = f.cost if price is None else price(cuts, wb, ab)
            best = min(best, float(np.where(f.feasible, cost, np.inf).min()))
    return best


@pytest.mark.parametrize("chunk", range(5))
def test_equals_brute_force_on_500_small_instances(chunk: int) -> None:
    rng = np.random.default_rng(1000 + chunk)
    for _ in range(100):
        L = int(rng.integers(1, 7)) if rng.random() < 0.3 else int(rng.integers(1, 6))
        prof = random_profile(L, rng)
        req = random_request(rng)
        sol = solve(prof, req)
        ref = brute_force_cost(prof, req)
        f = evaluate_plans(prof, req, [sol.plan])
        assert f.feasible[0]
        assert f.cost[0] == pytest.approx(sol.cost, rel=1e-9)
        assert sol.cost == pytest.approx(ref, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(4))
def test_equals_milp_on_200_instances_of_10_to_60_units(chunk: int) -> None:
    rng = np.random.default_rng(2000 + chunk)
    for _ in range(50):
        prof = random_profile(int(rng.integers(10, 61)), rng)
        req = random_request(rng)
        sol = solve(prof, req)
        ref = evaluate_plans(prof, req, [solve_milp(prof, req)])
        assert ref.feasible[0]
        assert sol.cost == pytest.approx(float(ref.cost[0]), rel=1e-9)


def test_always_feasible_even_with_zero_budget() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        prof = random_profile(20, rng)
        req = random_request(rng).with_budget(0.0)
        sol = solve(prof, req)
        assert evaluate_plans(prof, req, [sol.plan]).feasible[0]


def test_no_baseline_beats_the_optimum() -> None:
    rng = np.random.default_rng(4)
    for _ in range(100):
        prof = random_profile(int(rng.integers(1, 30)), rng)
        req = random_request(rng)
        opt = solve(prof, req).cost
        for name, decide in DECIDERS.items():
            f = evaluate_plans(prof, req, [decide(prof, req, DEFAULT_BITS)])
            if f.feasible[0]:
                assert f.cost[0] >= opt * (1 - 1e-12), name


def test_solution_reports_the_plans_own_figures() -> None:
    rng = np.random.default_rng(5)
    prof = toy3()
    for _ in range(50):
        req = random_request(rng)
        sol = solve(prof, req)
        f = evaluate_plans(prof, req, [sol.plan])
        assert sol.drop_pp == pytest.approx(float(f.drop_pp[0]), rel=1e-9, abs=1e-15)
        sol.plan.validate(prof.n_units)


def test_hull_multipliers_are_where_a_units_best_option_changes() -> None:
    """Between two consecutive multipliers no unit changes its best option under
    cost + lam * drop; at each multiplier some unit does (the Lagrangian sweep relies on it)."""
    from system.cost import unit_tables
    from system.optimal import hull_multipliers

    rng = np.random.default_rng(11)
    for _ in range(40):
        prof = random_profile(int(rng.integers(2, 30)), rng)
        T = unit_tables(prof, random_request(rng))
        lam = hull_multipliers(T.c_w, T.d_w)
        assert np.all(np.diff(lam) > 0) and np.all(lam > 0)

        def pick(x: float, c: np.ndarray = T.c_w, d: np.ndarray = T.d_w) -> np.ndarray:
            return np.argmin(c + x * d, axis=1)

        edges = np.concatenate([[0.0], lam, [lam[-1] * 4 + 1.0 if len(lam) else 1.0]])
        for lo, hi in itertools.pairwise(edges):
            a, b = lo + (hi - lo) * 1e-6, hi - (hi - lo) * 1e-6
            assert np.array_equal(pick(a), pick(b))
        for x in lam:
            assert not np.array_equal(pick(x * (1 - 1e-7)), pick(x * (1 + 1e-7)))
