"""The vectorised batch path: the same plans as one-at-a-time decisions, each vectorised step
equal to its scalar form bit for bit."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from runtime import Dispatcher
from runtime import batch as rb
from runtime import features as rf
from runtime.dispatcher import PATHS
from runtime.support import SupportCheck
from system.accuracy import drop_limit_pp
from system.bits import DEFAULT_BITS
from system.cost import drop_tables, unit_tables, unit_tables_batch
from system.plan import Plan
from system.profiles import load_profile, random_profile
from system.repair import repair_batch, repair_indices
from system.request import Request, random_request, request_arrays
from system.scenario import load_scenario, sample_requests

MODELS = ("digits_cnn", "resnet18")


def _mixed(n: int, seed: int) -> list[Request]:
    """Training-like requests, random ones (many outside the support), and ones far out."""
    rng = np.random.default_rng(seed)
    reqs = sample_requests(load_scenario("default"), rng, n * 8 // 10)
    reqs += [random_request(rng) for _ in range(n // 10)]
    k = n - len(reqs)
    reqs += [dataclasses.replace(r, up_bps=r.up_bps / 100) for r in reqs[:k // 2]]
    reqs += [dataclasses.replace(r, dev_flops_per_s=r.dev_flops_per_s / 20) for r in reqs[:k - k // 2]]
    return reqs


@pytest.mark.parametrize("model", MODELS)
def test_batch_equals_one_at_a_time_on_10000_requests(model: str) -> None:
    d = Dispatcher.load(model=model)
    reqs = _mixed(10_000, 3)
    assert len(reqs) == 10_000
    single = [d.decide(r) for r in reqs]
    assert d.decide_batch(reqs) == single
    # the flat arrays carry no processor labels: the catalog's per-unit overheads do not apply
    plain = [dataclasses.replace(r, device="", server="") for r in reqs]
    single = [d.decide(r) for r in plain]
    cuts, wb, ab, paths = d.decide_arrays(request_arrays(reqs))
    assert [Plan.canonical(c, w, a, d.L) for c, w, a in zip(cuts, wb, ab, strict=True)] == single
    detailed = [d.decide_detailed(r) for r in plain[::10]]
    assert [PATHS[i] for i in paths[::10]] == [x.path for x in detailed]
    seen = {x.path for x in detailed}
    assert {"policy", "repaired", "fallback", "trivial"} <= seen     # every step exercised


@pytest.mark.parametrize("options", [{"fallback": "none"}, {"fallback": "infeasible"},
                                     {"fallback": "none", "trivial_guard": False}])
def test_batch_equals_one_at_a_time_under_other_options(options: dict) -> None:
    reqs = _mixed(2_000, 4)
    for model in MODELS:
        d = Dispatcher.load(model=model, **options)
        assert d.decide_batch(reqs) == [d.decide(r) for r in reqs]


def _labelled_rows(d: Dispatcher, sources: list[Request]) -> int:
    groups, group = rb._label_groups(d, [(s.device, s.server) for s in sources], len(sources))
    return int(sum(groups[g] != ("", "") for g in group.tolist()))


def test_batch_on_named_processors_is_grouped_by_their_names(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """Rows on processors whose times are not the plain model (here: every named one) are
    decided in groups, each with its names' tables and prices: as one at a time."""
    d = Dispatcher.load(model="resnet18")
    reqs = _mixed(500, 5)
    want = [d.decide(r) for r in reqs]
    monkeypatch.setattr(rb, "mac_proportional", lambda profile, label: label == "")
    d._plain_labels.clear()
    assert _labelled_rows(d, reqs) == sum(bool(r.device or r.server) for r in reqs) > 0
    assert d.decide_batch(reqs) == want


def test_decide_requests_keeps_the_processor_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests in, their labels reach the batch (arrays carry none): the same rows are sent to
    the single form, so plans equal decide_batch's and paths equal decide_detailed's."""
    d = Dispatcher.load(model="resnet18")
    reqs = _mixed(300, 6)
    monkeypatch.setattr(rb, "mac_proportional", lambda profile, label: label == "")
    d._plain_labels.clear()
    seen: list[int] = []
    single = rb.decide_matrix

    def spy(d_: Dispatcher, M: np.ndarray, sources: object = None) -> object:
        seen.append(_labelled_rows(d_, sources) if sources is not None else 0)
        return single(d_, M, sources) if sources is not None else single(d_, M)

    monkeypatch.setattr(rb, "decide_matrix", spy)
    cuts, wbits, abits, paths = d.decide_requests(reqs)
    assert seen == [sum(bool(r.device or r.server) for r in reqs)] and seen[0] > 0
    plans = [Plan.canonical(int(c), w, int(a), d.L) for c, w, a in zip(cuts, wbits, abits,
                                                                          strict=True)]
    assert plans == d.decide_batch(reqs)
    assert [PATHS[p] for p in paths] == [d.decide_detailed(r).path for r in reqs]


def test_decide_rows_equals_decide_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flat rows with their labels (the service's batch intake) decide as the Requests do,
    paths included, with named processors grouped and the single-form rows labelled."""
    d = Dispatcher.load(model="resnet18")
    reqs = _mixed(300, 7)
    monkeypatch.setattr(rb, "mac_proportional", lambda profile, label: label == "")
    d._plain_labels.clear()
    want = d.decide_requests(reqs)
    rows = np.asarray([rf.from_request(r) for r in reqs], dtype=np.float64)
    got = d.decide_rows(rows, [(r.device, r.server) for r in reqs])
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    # the optimizer's rows (out of the training support) are rebuilt as labelled Requests
    assert {PATHS.index("fallback"), PATHS.index("policy")} <= set(want[3].tolist())


@pytest.mark.parametrize("bits", [DEFAULT_BITS, (2, 32), (4, 8, 16, 32)])
def test_repair_batch_equals_repair_indices(bits: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(bits))
    for prof in (load_profile("resnet18"), random_profile(9, rng), random_profile(1, rng)):
        N, L, K = 400, prof.n_units, len(bits)
        k32 = bits.index(32)
        reqs = [random_request(rng).with_budget(float(e)) for e in 10 ** rng.uniform(-5, 0.7, N)]
        eps = np.array([r.eps_pp for r in reqs])
        eps[:5] = -1.0                                  # below every plan: the cut-0 fallback
        cuts, w, a = rng.integers(0, L + 1, N), rng.integers(0, K, (N, L)), rng.integers(0, K, N)
        c_w, fixed = unit_tables_batch(prof, request_arrays(reqs), bits)
        d_w, d_a = drop_tables(prof, bits)
        bc, bw, ba, fb = repair_batch(c_w, fixed, d_w, d_a, eps, cuts, w, a, bits)
        n_repaired = 0
        for i, r in enumerate(reqs):
            res = repair_indices(unit_tables(prof, r, bits), float(eps[i]), int(cuts[i]), w[i], int(a[i]))
            n_repaired += res.repaired
            got = (int(bc[i]), bw[i, :bc[i]].tolist(), int(ba[i]), bool(fb[i]))
            assert got == (res.cut, list(res.w_idx), res.a_idx, res.fallback), i
            assert (bw[i, bc[i]:] == k32).all()
        assert n_repaired > N // 10 and fb[:5].all()


def test_unit_tables_batch_equals_unit_tables() -> None:
    rng = np.random.default_rng(7)
    prof = load_profile("resnet18")
    reqs = [random_request(rng) for _ in range(200)]
    reqs += [dataclasses.replace(r, dev_flops_per_s=1e-300, up_bps=1e-300) for r in reqs[:5]]
    reqs += [dataclasses.replace(r, beta_s_per_j=1e300, reuse=1e300) for r in reqs[:5]]
    c_w, fixed = unit_tables_batch(prof, request_arrays(reqs), DEFAULT_BITS)
    for i, r in enumerate(reqs):
        with np.errstate(all="ignore"):
            T = unit_tables(prof, dataclasses.replace(r, device="", server=""), DEFAULT_BITS)
        np.testing.assert_array_equal(c_w[i], T.c_w)
        np.testing.assert_array_equal(fixed[i], T.fixed)


def test_floor_batch_agrees_with_floor() -> None:
    d = Dispatcher.load(model="digits_cnn", fallback="none")
    tp = d.trivial
    reqs = _mixed(1_000, 6)
    reqs += [dataclasses.replace(r, up_bps=r.up_bps / 100) for r in reqs[:500]]
    M = rf.matrix_of([rf.from_request(r) for r in reqs])
    arr = rf.columns(M)
    actions = [d._policy(d._features_of_request(r), drop_limit_pp(r.eps_pp)) for r in reqs]
    cuts = np.array([p for p, _, _ in actions])
    w_idx = np.full((len(reqs), d.L), d.net.k32)
    for i, (p, w, _) in enumerate(actions):
        w_idx[i, :p] = w
    act_idx = np.array([a for _, _, a in actions])
    kap = np.array([tp.kappa_of(tuple(k)) for k in arr["dev_kappa"].tolist()])
    pick, undecided = tp.floor_batch(tp.prices_batch(arr, kap), cuts, w_idx, act_idx,
                                     drop_limit_pp(arr["eps_pp"]))
    assert undecided.mean() < 0.01 and (pick >= 0).sum() > 10
    for i, r in enumerate(reqs):
        if not undecided[i]:
            want = tp.floor(rf.from_request(r), actions[i], drop_limit_pp(r.eps_pp))
            assert (tp.actions[pick[i]] if pick[i] >= 0 else None) == \
                (None if want is None else (want[0], want[1], want[2]))


def test_support_bounds_equal_the_float32_comparison() -> None:
    """The single form compares float64 features with float64 bounds chosen so the result is
    the float32 comparison's: checked at, between and around every float32 bound."""
    d = Dispatcher.load(model="resnet18")
    for check in (d.support, SupportCheck(None, d.encoder)):
        n = len(check.lo)
        pack = struct.Struct(f"<{n}f")
        lo, hi = check.lo.astype(float).tolist(), check.hi.astype(float).tolist()
        rng = np.random.default_rng(1)
        mid = ((check.lo.astype(float) + check.hi.astype(float)) / 2).tolist()
        for j in range(n):
            for b in (check.lo[j], check.hi[j]):
                up = float(np.nextafter(b, np.float32(np.inf))) - float(b)
                for f in (-1.0, -0.5, -0.4999999, 0.0, 0.4999999, 0.5, 0.5000001, 1.0, 2.0):
                    x = list(mid)
                    x[j] = float(b) + f * up * rng.choice([1, -1])
                    y = pack.unpack(pack.pack(*x))
                    want = not all(lo[i] <= y[i] <= hi[i] for i in range(n))
                    assert check.outside(x) == want, (j, f)
        assert check.outside([float("nan"), *mid[1:]])


def test_argmax_near_tie_equals_argmax_and_near_tie() -> None:
    """The slice-wise argmax and near-tie test of the batch heads give np.argmax (first
    index of the best) and near_tie's answer; rows with NaN are left to the single form."""
    from runtime.policy import argmax_near_tie, near_tie

    rng = np.random.default_rng(11)
    x = rng.normal(size=(600, 13, 7)).astype(np.float32)
    x[:100, :, 3] = x[:100, :, 0]                          # exact ties: the first index wins
    x[100:200, :, 2] = x[100:200, :, 5] * np.float32(1 + 3e-5)   # near ties
    x[200:260, :, 6] = x[200:260, :, 1] + np.float32(0.5)          # clear winners
    x[260:300, :, 1] = -np.inf                             # masked options
    x[300:310, 4, 4] = np.nan
    best, tie = argmax_near_tie(x)
    ok = ~np.isnan(x).any(axis=-1)
    assert np.array_equal(best[ok], x.argmax(axis=-1)[ok])
    assert np.array_equal(tie[ok], near_tie(x)[ok]) and tie[ok].sum() > 100
    assert tie[~ok].all()
