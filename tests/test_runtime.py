"""The runtime dispatcher: bundle safety, request validation, the guard, fast = batch = reference.

Bundles here are built from numpy arrays (random actor weights on random profiles), so these
tests need neither torch nor stable-baselines3; tests/test_export.py checks parity with
SB3's ``predict`` on exported models.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import BundleError, Dispatcher, load_bundle
from runtime import features as rf
from runtime.bundle import (
    QSPLIT_VERSION,
    SUMS_FILE,
    contract_text,
    make_contract,
    npz_bytes,
    verify_files,
    write_bundle,
)
from runtime.dispatcher import PATHS, BatchItemError, bundles_root
from runtime.refine import local_search
from system.accuracy import FEAS_TOL_PP, drop_limit_pp, plan_drop_pp
from system.bits import DEFAULT_BITS, KERNEL_WIDTHS
from system.codec import ActionCodec, ObservationEncoder
from system.cost import evaluate_plans, unit_tables
from system.errors import QsplitInputError
from system.fields import REQUEST_FIELDS, RequestField
from system.hardware import device_names, get_device, get_server
from system.optimal import solve
from system.plan import Plan
from system.profiles import ModelProfile, random_profile
from system.repair import plan_cost_drop, repair_indices
from system.request import Request, random_request
from system.scenario import load_scenario, sample_requests

ROOT = Path(__file__).resolve().parents[1]
BIG = 100.0


#: The dispatcher options under which it is exactly SB3's predict followed by the env's repair.
ENV = {"fallback": "none", "trivial_guard": False}


def build_bundle(path: Path, profile: ModelProfile, *, seed: int = 0, masking: str = "none",
                 hidden: tuple[int, ...] = (64, 64), activation: str = "tanh",
                 scale: float = 0.5, bits: tuple[int, ...] = DEFAULT_BITS) -> Path:
    """A bundle with random actor weights (numpy only)."""
    rng = np.random.default_rng(seed)
    enc, codec = ObservationEncoder(), ActionCodec(profile.n_units, bits)
    arrays, layers, n_in = {}, [], enc.n_features
    for i, n in enumerate(hidden):
        arrays[f"w{i}"] = (rng.standard_normal((n, n_in)) * scale).astype(np.float32)
        arrays[f"b{i}"] = (rng.standard_normal(n) * 0.1).astype(np.float32)
        layers.append((f"w{i}", f"b{i}", activation))
        n_in = n
    n_out = int(codec.nvec.sum())
    arrays["aw"] = (rng.standard_normal((n_out, n_in)) * scale).astype(np.float32)
    arrays["ab"] = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
    c = make_contract(profile=profile, encoder=enc, codec=codec, hidden=layers,
                      action=("aw", "ab"), masking=masking)
    return write_bundle(path, c, arrays, force=True)


@pytest.fixture(scope="module")
def prof() -> ModelProfile:
    return random_profile(14, np.random.default_rng(5), name="rand14")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, prof: ModelProfile) -> Path:
    return build_bundle(tmp_path_factory.mktemp("b") / "plain", prof)


@pytest.fixture(scope="module")
def masked_dir(tmp_path_factory: pytest.TempPathFactory, prof: ModelProfile) -> Path:
    return build_bundle(tmp_path_factory.mktemp("b") / "masked", prof, seed=1,
                        masking="feasible_options")


@pytest.fixture(scope="module")
def reqs() -> list[Request]:
    rng = np.random.default_rng(11)
    out = sample_requests(load_scenario("default"), rng, 600)
    out += [random_request(rng) for _ in range(300)]
    return out


def _as_dict(r: Request) -> dict:
    return {**{f: getattr(r, f) for f in rf.SCALAR_FIELDS}, "dev_kappa": list(r.dev_kappa)}


def reference_plan(d: Dispatcher, req: Request) -> Plan:
    """The env's decision spelled out with system's numpy code (encoder, MLP in float64 on
    the float32 observation, argmax among the env's mask, decode, the env's repair test and
    system.repair); the dispatcher's float32 logits may differ from these by ~1e-7, which
    matters only at a near tie, where :func:`reference_tie` says so."""
    return _reference(d, req)[0]


def reference_tie(d: Dispatcher, req: Request) -> bool:
    """Whether a head the reference plan uses has its two best logits within 1e-5."""
    return _reference(d, req)[1]


def _reference(d: Dispatcher, req: Request) -> tuple[Plan, bool]:
    b = d.bundle
    x = b.encoder.encode(req).astype(np.float64)
    for h in b.hidden:
        x = h.weight.astype(np.float64) @ x + h.bias
        x = np.tanh(x) if h.activation == "tanh" else np.maximum(x, 0) if h.activation == "relu" else x
    lg = b.action.weight.astype(np.float64) @ x + b.action.bias
    T = unit_tables(b.profile, req, b.codec.bits)
    if b.masking != "none":
        lg = np.where(b.codec.action_mask(T, req.eps_pp), lg, -np.inf)
    L, K = b.codec.n_units, b.codec.n_bits
    heads = np.split(lg, np.cumsum(b.codec.nvec)[:-1])
    action = np.array([int(np.argmax(h)) for h in heads])
    assert len(heads) == L + 2 and all(len(h) == K for h in heads[1:])
    cut = int(action[0])
    used = [heads[0]] + ([heads[1]] if 0 < cut < L else []) + heads[2:2 + cut]
    tie = any(len(h) > 1 and np.diff(np.sort(h)[-2:])[0] <= 1e-5 * (1 + abs(h.max()))
              for h in used)
    k32 = b.codec.bits.index(32)
    w, a = action[2:2 + cut], int(action[1]) if 0 < cut < L else k32
    if plan_cost_drop(T, cut, w, a)[1] > req.eps_pp + FEAS_TOL_PP:
        return repair_indices(T, req.eps_pp, cut, w, a).plan, tie
    return b.codec.decode(action), tie


def assert_same_as_reference(d: Dispatcher, reqs: list[Request], plans: list[Plan]) -> None:
    """Equal to the reference, except (rarely, none seen) at a near tie of the logits."""
    diff = [i for i, (r, p) in enumerate(zip(reqs, plans, strict=True)) if p != reference_plan(d, r)]
    assert all(reference_tie(d, reqs[i]) for i in diff), diff
    assert len(diff) <= len(reqs) // 1000


# ------------------------------------------------------------------ observation and paths

def test_features_bit_identical_to_encoder(bundle_dir: Path, reqs: list[Request]) -> None:
    d = Dispatcher.load(bundle_dir, **ENV)
    extra = [Request.make(get_device(n), get_server("t4"), up_bps=1e3, down_bps=1e11,
                          rtt_s=0.0, eps_pp=e, beta_s_per_j=b, reuse=u)
             for n in device_names() for e in (0.0, 100.0) for b in (0.0, 1e6) for u in (1.0, 1e9)]
    zero_power = Request(dev_flops_per_s=1e9, dev_kappa=(0.0, 2.0, 0.0, 1.0), p_comp_w=0.0,
                         p_tx_w=0.0, p_rx_w=0.0, p_idle_w=0.0, srv_flops_per_s=1e12,
                         srv_load=1e-9, up_bps=1.0, down_bps=1.0, rtt_s=0.0, eps_pp=0.0)
    every = [*reqs, *extra, zero_power]
    with np.errstate(divide="ignore"):
        want = d.encoder.encode_batch(every)
    got = np.array([d._features_of_tuple(rf.from_request(r)) for r in every], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    got = np.array([d._features_of_request(r) for r in every], dtype=np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("which", ["plain", "masked"])
def test_single_batch_arrays_and_reference_agree(which: str, bundle_dir: Path, masked_dir: Path,
                                                 reqs: list[Request]) -> None:
    d = Dispatcher.load(bundle_dir if which == "plain" else masked_dir, **ENV)
    single = [d.decide(r) for r in reqs]
    assert single == [d.decide(_as_dict(r)) for r in reqs]
    assert single == d.decide_batch(reqs)
    assert single == [d.decide_detailed(r).plan for r in reqs]
    assert_same_as_reference(d, reqs, single)
    from system.request import request_arrays
    cuts, wb, ab, paths = d.decide_arrays(request_arrays(reqs))
    assert [Plan.canonical(c, w, a, d.L) for c, w, a in zip(cuts, wb, ab, strict=True)] == single
    assert set(np.unique(paths).tolist()) <= {0, 1}
    seen = {d.decide_detailed(r).path for r in reqs}
    assert seen == {"policy", "repaired"}       # both branches exercised


@pytest.mark.parametrize(("n_units", "bits", "hidden", "activation", "masking"), [
    (1, (4, 8, 16, 32), (16,), "relu", "feasible_options"),
    (2, (2, 32), (), "tanh", "none"),
    (5, (3, 6, 32), (8, 8, 8), "identity", "feasible_options"),
])
def test_other_shapes_bits_and_activations(tmp_path: Path, reqs: list[Request], n_units: int,
                                           bits: tuple[int, ...], hidden: tuple[int, ...],
                                           activation: str, masking: str) -> None:
    prof = random_profile(n_units, np.random.default_rng(n_units), name=f"r{n_units}")
    d = Dispatcher.load(build_bundle(tmp_path / "b", prof, hidden=hidden, bits=bits,
                                     activation=activation, masking=masking, scale=1.0), **ENV)
    assert d.bits == bits
    single = [d.decide(r) for r in reqs[:300]]
    assert single == d.decide_batch(reqs[:300])
    assert_same_as_reference(d, reqs[:300], single)
    assert len({p.cut for p in single}) > 1


def test_every_plan_within_budget(masked_dir: Path, reqs: list[Request]) -> None:
    for opts in ({}, {"fallback": "infeasible"}, {"refine": True}):
        d = Dispatcher.load(masked_dir, **opts)
        for r in reqs[:300]:
            p = d.decide(r)
            p.validate(d.L, d.bits)
            assert plan_drop_pp(d.profile, p) <= r.eps_pp + FEAS_TOL_PP


def test_mask_table_equals_the_env_mask(masked_dir: Path) -> None:
    d = Dispatcher.load(masked_dir, **ENV)
    T0 = unit_tables(d.profile, random_request(np.random.default_rng(0)), d.bits)
    budgets = [0.0, 1e-12, 100.0]
    for t in d.mask.thresholds:         # at, just below and just above every threshold
        for e in (t - FEAS_TOL_PP, t, np.nextafter(t - FEAS_TOL_PP, -1), np.nextafter(t, 1)):
            if 0.0 <= e <= 100.0:
                budgets.append(float(e))
    for e in budgets:
        want = d.codec.action_mask(T0, e)
        got = np.isfinite(d.mask.rows[d.mask.row(e + FEAS_TOL_PP)])
        np.testing.assert_array_equal(got, want)


def test_guard_boundary_follows_the_env(bundle_dir: Path) -> None:
    """Budgets at, just under and well under a plan's drop: the guard does what env.step does."""
    d = Dispatcher.load(bundle_dir, **ENV)
    n = 0
    k32 = d.bits.index(32)
    for seed in range(100):
        r = random_request(np.random.default_rng(seed))
        big = r.with_budget(BIG)
        action = d._policy(d._features_of_request(big), drop_limit_pp(big.eps_pp))
        p, w, a = action
        drop = d._drop(action)
        if drop == 0.0 or drop > BIG:
            continue
        n += 1
        for eps in (drop, drop - FEAS_TOL_PP, np.nextafter(drop - FEAS_TOL_PP, 0),
                    drop - 2 * FEAS_TOL_PP, drop * 0.5):
            rr = r.with_budget(max(float(eps), 0.0))
            T = unit_tables(d.profile, rr, d.bits)
            wi = np.asarray(w, dtype=np.int64)
            if plan_cost_drop(T, p, wi, a)[1] > rr.eps_pp + FEAS_TOL_PP:      # env.step
                res = repair_indices(T, rr.eps_pp, p, wi, a)
                want = (res.cut, list(res.w_idx), res.a_idx)
            else:
                want = (p, list(w), a if 0 < p < d.L else k32)
            for source in (rr, rf.from_request(rr)):
                got = d._guard(source, action, False)
                (gp, gw, ga) = got.action
                assert (gp, list(gw), ga) == want
                # one summation order: the guard's drop is the env's, and within the budget
                assert got.drop_pp == plan_cost_drop(T, *got.action)[1]
                assert got.drop_pp <= rr.eps_pp + FEAS_TOL_PP
    assert n >= 5


def test_fallback_uses_the_exact_optimizer(bundle_dir: Path, reqs: list[Request]) -> None:
    d = Dispatcher.load(bundle_dir, fallback="infeasible", trivial_guard=False)
    plain = Dispatcher.load(bundle_dir, **ENV)
    n_fb = 0
    for r in reqs[:150]:
        det = d.decide_detailed(r)
        if det.path == "fallback":
            n_fb += 1
            assert det.plan == solve(d.profile, r).plan
            assert plain.decide_detailed(r).path == "repaired"
        else:
            assert det.plan == plain.decide(r)
    assert n_fb > 0
    oor = Dispatcher.load(bundle_dir, fallback="out_of_range")
    far = Request.make(get_device("rpi4"), get_server("t4"), up_bps=1.0, down_bps=1.0,
                       rtt_s=50.0, eps_pp=1.0)        # 1 bit/s links: far outside the features
    det = oor.decide_detailed(far)
    assert det.out_of_range and det.path == "fallback"
    assert det.plan == solve(d.profile, far).plan


def test_refine_never_worse_and_helps(bundle_dir: Path, reqs: list[Request]) -> None:
    plain = Dispatcher.load(bundle_dir, **ENV)
    ref = Dispatcher.load(bundle_dir, refine=True, fallback="none", trivial_guard=False)
    before, after = [], []
    for r in reqs[:200]:
        p0, p1 = plain.decide(r), ref.decide(r)
        c0, c1 = evaluate_plans(plain.profile, r, [p0, p1]).cost
        assert c1 <= c0 * (1 + 1e-12)
        before.append(c0)
        after.append(c1)
        assert (ref.decide_detailed(r).path == "refined") == (p1 != p0)
    assert sum(after) < sum(before)
    assert ref.decide_batch(reqs[:50]) == [ref.decide(r) for r in reqs[:50]]
    # even from a random policy's plans the refined ones are within 0.5% of the optimum
    regret = [c / solve(plain.profile, r).cost - 1 for c, r in zip(after, reqs, strict=False)]
    assert np.mean(regret) < 0.005


def test_local_search_keeps_infeasible_start_and_reaches_optimum_sometimes(prof: ModelProfile) -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(30):
        r = random_request(rng)
        T = unit_tables(prof, r)
        opt = solve(prof, r, tables=T)
        res = local_search(T, r.eps_pp, 0, [], T.bits.index(32), cut_radius=prof.n_units)
        assert res.drop_pp <= r.eps_pp + FEAS_TOL_PP
        assert res.cost >= opt.cost * (1 - 1e-9)
        hits += res.cost <= opt.cost * (1 + 1e-9)
    assert hits > 0
    T = unit_tables(prof, r.with_budget(0.0))
    res = local_search(T, 0.0, prof.n_units, [0] * prof.n_units, 0)
    assert res.steps == 0 and res.cut == prof.n_units       # infeasible start: untouched


# ------------------------------------------------------------------ bundle safety

def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _resum(path: Path) -> None:
    """Rewrite SHA256SUMS after an edit (so the edit itself, not the checksum, is tested)."""
    import hashlib
    names = [ln.split("  ")[1] for ln in (path / SUMS_FILE).read_text().splitlines()]
    (path / SUMS_FILE).write_text("".join(
        f"{hashlib.sha256((path / n).read_bytes()).hexdigest()}  {n}\n" for n in sorted(names)))


@pytest.mark.parametrize("name", ["contract.json", "weights.npz", "SHA256SUMS"])
def test_changed_byte_is_refused(tmp_path: Path, bundle_dir: Path, name: str) -> None:
    size = (bundle_dir / name).stat().st_size
    for pos in (0, size // 2, size - 2):
        b = _copy(bundle_dir, tmp_path / f"c{pos}")
        data = bytearray((b / name).read_bytes())
        data[pos] ^= 0x01
        (b / name).write_bytes(bytes(data))
        with pytest.raises(BundleError, match=r"checksum mismatch|malformed|missing|unexpected|SHA256SUMS"):
            load_bundle(b)


@pytest.mark.parametrize("name", ["contract.json", "weights.npz", "SHA256SUMS"])
def test_missing_file_is_refused(tmp_path: Path, bundle_dir: Path, name: str) -> None:
    b = _copy(bundle_dir, tmp_path / "m")
    (b / name).unlink()
    with pytest.raises(BundleError, match=rf"missing file.*{re.escape(name)}"):
        load_bundle(b)


def test_extra_file_and_not_a_folder_are_refused(tmp_path: Path, bundle_dir: Path) -> None:
    b = _copy(bundle_dir, tmp_path / "x")
    (b / "evil.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(BundleError, match=r"unexpected file.*evil\.pkl"):
        load_bundle(b)
    with pytest.raises(BundleError, match="not a folder"):
        load_bundle(tmp_path / "nowhere")


_MAJOR, _MINOR = QSPLIT_VERSION.split(".")[:2]
#: A version this runtime must refuse: same major, next minor.
_NEXT_MINOR = f"{_MAJOR}.{int(_MINOR) + 1}.0"


@pytest.mark.parametrize(("patch", "match"), [
    ({"qsplit_version": "9.0.0"}, r"qsplit '9\.0\.0'.*major\.minor"),
    ({"qsplit_version": _NEXT_MINOR}, f"qsplit '{re.escape(_NEXT_MINOR)}'"),
    ({"format": "qsplit-policy-bundle/2"}, "bundle format"),
    ({"env": {"id": "QuantSplit-v1", "version": 1}}, "env id"),
    ({"env": {"id": "QuantSplit-v0", "version": 3}}, "version 3"),
    ({"env": {"id": "QuantSplit-v0", "version": 0, "invalid_action": "penalty"}}, "repair"),
    ({"profile_sha256": "0" * 64}, "profile hash"),
    ({"model": "other"}, "model 'other'"),
    ({"unknown_key": 1}, "unknown key"),
])
def test_other_version_or_inconsistent_contract_is_refused(tmp_path: Path, bundle_dir: Path,
                                                           patch: dict, match: str) -> None:
    b = _copy(bundle_dir, tmp_path / "v")
    c = json.loads((b / "contract.json").read_text())
    c.update(patch)
    (b / "contract.json").write_text(contract_text(c))
    _resum(b)
    with pytest.raises(BundleError, match=match):
        load_bundle(b)


def test_pickled_or_misshapen_arrays_are_refused(tmp_path: Path, bundle_dir: Path) -> None:
    b = _copy(bundle_dir, tmp_path / "p")
    with np.load(b / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    buf = __import__("io").BytesIO()
    np.savez(buf, **{**arrays, "aw": np.array([{"x": 1}], dtype=object)})
    (b / "weights.npz").write_bytes(buf.getvalue())
    _resum(b)
    with pytest.raises(BundleError, match=r"unreadable|pickle"):
        load_bundle(b)
    (b / "weights.npz").write_bytes(npz_bytes({**arrays, "aw": arrays["aw"][:-1]}))
    _resum(b)
    with pytest.raises(BundleError, match="shape"):
        load_bundle(b)
    (b / "weights.npz").write_bytes(npz_bytes({**arrays, "aw": arrays["aw"].astype(np.float64)}))
    _resum(b)
    with pytest.raises(BundleError, match="dtype"):
        load_bundle(b)
    bad = arrays["b0"].copy()
    bad[0] = np.nan
    (b / "weights.npz").write_bytes(npz_bytes({**arrays, "b0": bad}))
    _resum(b)
    with pytest.raises(BundleError, match="non-finite"):
        load_bundle(b)


def test_write_is_atomic_and_deterministic(tmp_path: Path, prof: ModelProfile) -> None:
    a = build_bundle(tmp_path / "a", prof, seed=4)
    b = build_bundle(tmp_path / "b", prof, seed=4)
    assert (a / SUMS_FILE).read_bytes() == (b / SUMS_FILE).read_bytes()
    build_bundle(tmp_path / "a", prof, seed=5)           # replaces in place
    assert (a / SUMS_FILE).read_bytes() != (b / SUMS_FILE).read_bytes()
    names = sorted(p.name for p in tmp_path.iterdir())
    # each bundle is a link to its one current version: no temp folder or old version left
    assert [n for n in names if not n.startswith(".")] == ["a", "b"]
    assert sorted(names) == sorted(["a", "b", os.readlink(a), os.readlink(b)])
    verify_files(a)


def test_version_constant_matches_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == QSPLIT_VERSION


# ------------------------------------------------------------------ request validation

GOOD = {"dev_flops_per_s": 2e10, "dev_kappa": [0.0, 3.2, 1.8, 1.0], "p_comp_w": 5.0,
        "p_tx_w": 1.0, "p_rx_w": 0.8, "p_idle_w": 0.5, "srv_flops_per_s": 8e12, "srv_load": 0.5,
        "up_bps": 5e6, "down_bps": 2e7, "rtt_s": 0.04, "eps_pp": 1.0, "beta_s_per_j": 0.1,
        "reuse": 1.0}


@pytest.mark.parametrize("field", [f for f in GOOD if f != "dev_kappa"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, None, "1", True])
def test_bad_field_is_named(bundle_dir: Path, field: str, bad: object) -> None:
    d = Dispatcher.load(bundle_dir)
    lo = rf.RANGES[field][0]
    if bad == -1.0 and lo is None:
        return
    with pytest.raises(QsplitInputError, match=re.escape(field)):
        d.decide({**GOOD, field: bad})
    good, bad_item = d.decide_batch([GOOD, {**GOOD, field: bad}])
    assert good == d.decide(GOOD)
    assert isinstance(bad_item, BatchItemError) and bad_item.index == 1
    assert "request[1]" in str(bad_item) and field in str(bad_item)


@pytest.mark.parametrize(("patch", "field"), [
    ({"dev_kappa": [0.0, 3.2, 1.8]}, "dev_kappa"),
    ({"dev_kappa": [0.0, 3.2, math.nan, 1.0]}, "dev_kappa[16]"),
    ({"dev_kappa": [-1.0, 3.2, 1.8, 1.0]}, "dev_kappa[4]"),
    ({"dev_kappa": [0.0, 3.2, 1.8, 2.0]}, "dev_kappa[32]"),
    ({"dev_kappa": {"32": 1.0, "5": 2.0}}, "dev_kappa"),
    ({"dev_kappa": "fast"}, "dev_kappa"),
    ({"srv_load": 1.5}, "srv_load"),
    ({"reuse": 0.5}, "reuse"),
    ({"eps_pp": 101.0}, "eps_pp"),
    ({"bandwidth": 3}, "bandwidth"),
])
def test_bad_request_names_the_field(bundle_dir: Path, patch: dict, field: str) -> None:
    d = Dispatcher.load(bundle_dir)
    with pytest.raises(QsplitInputError, match=re.escape(field)):
        d.decide({**GOOD, **patch})


@pytest.mark.parametrize("field", [f.name for f in REQUEST_FIELDS if f.default is None])
def test_missing_field_is_named(bundle_dir: Path, field: str) -> None:
    d = Dispatcher.load(bundle_dir)
    req = {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(QsplitInputError, match=f"missing.*{re.escape(field)}"):
        d.decide(req)


@pytest.mark.parametrize("field", [f for f in REQUEST_FIELDS if f.default is not None],
                         ids=lambda f: f.name)
def test_missing_field_takes_the_tables_default(bundle_dir: Path, field: RequestField) -> None:
    d = Dispatcher.load(bundle_dir)
    req = {k: v for k, v in GOOD.items() if k != field.name}
    assert d.decide(req) == d.decide({**req, field.name: field.default})
    req = {k: v for k, v in GOOD.items() if k != field.name}
    assert rf.from_mapping(req) == rf.from_mapping({**req, field.name: field.default})


def test_array_batch_validation_names_row_and_field(bundle_dir: Path) -> None:
    from system.request import request_arrays
    d = Dispatcher.load(bundle_dir)
    rs = [random_request(np.random.default_rng(i)) for i in range(5)]
    arr = request_arrays(rs)
    arr["up_bps"][3] = np.nan
    with pytest.raises(QsplitInputError, match=r"request\[3\]\.up_bps"):
        d.decide_arrays(arr)
    arr = request_arrays(rs)
    del arr["rtt_s"]
    with pytest.raises(QsplitInputError, match=r"missing.*rtt_s"):
        d.decide_arrays(arr)


_num = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**12),
                 st.floats(1e-300, 1e300), st.sampled_from([0.0, -0.0, 1.0, 1e-320, 5e-324]))
_val = st.one_of(_num, _num, _num, st.none(), st.booleans(), st.text(max_size=3))


@st.composite
def fuzz_requests(draw: st.DrawFn) -> dict:
    out: dict[str, object] = {}
    for f, v in GOOD.items():
        mode = draw(st.integers(0, 9))
        if mode == 0:
            continue                                        # missing
        if f == "dev_kappa":
            out[f] = draw(st.one_of(
                st.just(v), st.lists(_num, min_size=3, max_size=5),
                st.builds(lambda a, b, c: [a, b, c, 1.0], _num, _num, _num),
                st.dictionaries(st.sampled_from(["4", "8", "16", "32", "5"]), _num)))
        else:
            out[f] = v if mode < 4 else draw(_val)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz_requests())
def test_fuzz_only_input_errors_and_never_over_budget(bundle_dir: Path, req: dict) -> None:
    d = _fuzz_dispatcher(bundle_dir)
    try:
        plan = d.decide(req)
    except QsplitInputError as exc:
        assert "\n" not in str(exc)
        return
    r = rf.to_request(rf.from_mapping(req))
    plan.validate(d.L, d.bits)
    assert plan_drop_pp(d.profile, plan) <= r.eps_pp + FEAS_TOL_PP
    assert d.decide_batch([req]) == [plan]


_pos = st.floats(5e-324, 1e308)
_nonneg = st.one_of(st.just(0.0), _pos)
_valid_extreme = st.fixed_dictionaries({
    "dev_flops_per_s": _pos, "p_comp_w": _nonneg, "p_tx_w": _nonneg, "p_rx_w": _nonneg,
    "p_idle_w": _nonneg, "srv_flops_per_s": _pos, "srv_load": st.floats(5e-324, 1.0),
    "up_bps": _pos, "down_bps": _pos, "rtt_s": _nonneg, "eps_pp": st.floats(0.0, 100.0),
    "beta_s_per_j": _nonneg, "reuse": st.floats(1.0, 1e308),
    "dev_kappa": st.tuples(_nonneg, _nonneg, _nonneg, st.just(1.0))})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_valid_extreme)
def test_fuzz_valid_extremes_decide_within_budget(masked_dir: Path, req: dict) -> None:
    """Valid but extreme requests (overflowing prices, underflowing server share): a plan
    within budget from every path, the same from the single and the batch forms."""
    r = rf.to_request(rf.from_mapping(req))
    for opts in ({}, {"refine": True, "fallback": "out_of_range"}):
        d = _fuzz_dispatcher(masked_dir, **opts)
        with np.errstate(all="ignore"):
            plan = d.decide(req)
            assert d.decide_batch([req]) == [plan]
        assert plan_drop_pp(d.profile, plan) <= r.eps_pp + FEAS_TOL_PP


_FUZZ: dict[str, Dispatcher] = {}


def _fuzz_dispatcher(path: Path, **opts: object) -> Dispatcher:
    key = f"{path}{sorted(opts.items())}"
    if key not in _FUZZ:
        _FUZZ[key] = Dispatcher.load(path, **opts)
    return _FUZZ[key]


# ------------------------------------------------------------------ imports and command line

def test_runtime_imports_neither_torch_gymnasium_nor_sb3(bundle_dir: Path) -> None:
    code = (
        "import sys, json\n"
        "import runtime, runtime.__main__, runtime.dispatcher, runtime.bundle, runtime.refine\n"
        "from runtime import Dispatcher\n"
        f"d = Dispatcher.load({str(bundle_dir)!r}, refine=True, fallback='infeasible')\n"
        f"d.decide({GOOD!r})\n"
        "bad = [m for m in ('torch', 'gymnasium', 'gym', 'stable_baselines3', 'sb3_contrib')\n"
        "       if m in sys.modules]\n"
        "print(json.dumps(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True,
                          text=True, cwd=ROOT, input=stdin,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_cli_decide_prints_plan_json(bundle_dir: Path) -> None:
    req = ROOT / "examples" / "request_lte_nano.json"
    out = _cli("decide", "--bundle", str(bundle_dir), "--request", str(req))
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    for k in ("cut", "weight_bits", "act_bits", "latency_s", "energy_j", "drop_pp", "cost",
              "feasible", "path"):
        assert k in res
    assert res["feasible"] is True and res["path"] in PATHS
    out = _cli("decide", "--bundle", str(bundle_dir), "--request", "-", "--refine",
               "--fallback", "infeasible", stdin=req.read_text())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["path"] in PATHS


def test_cli_errors_exit_2_with_one_line(tmp_path: Path, bundle_dir: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"device": "jetson_nano", "server": "t4", "up_mbps": -5,
                               "down_mbps": 20, "rtt_ms": 40, "eps_pp": 1}))
    out = _cli("decide", "--bundle", str(bundle_dir), "--request", str(bad))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "up_mbps: -5 is outside the allowed range (0, inf) Mbit/s" in out.stderr
    b = _copy(bundle_dir, tmp_path / "t")
    data = bytearray((b / "weights.npz").read_bytes())
    data[-1] ^= 0xFF
    (b / "weights.npz").write_bytes(bytes(data))
    out = _cli("decide", "--bundle", str(b), "--request",
               str(ROOT / "examples" / "request_lte_nano.json"))
    assert out.returncode == 2 and "checksum mismatch for weights.npz" in out.stderr
    out = _cli("verify", "--bundle", str(bundle_dir))
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True


# ------------------------------------------------------------------ committed bundles

COMMITTED = sorted(p.name for p in bundles_root().iterdir() if (p / "contract.json").is_file()) \
    if bundles_root().is_dir() else []


@pytest.mark.skipif(not COMMITTED, reason="no committed bundles yet")
@pytest.mark.parametrize("model", COMMITTED)
def test_committed_bundle_loads_and_matches_its_shipped_profile(model: str) -> None:
    from system.profiles import builtin_profile_names, load_profile
    d = Dispatcher.load(model=model)
    assert d.profile.name == model
    if model in builtin_profile_names():
        assert d.profile.sha256() == load_profile(model).sha256(), (
            f"the shipped {model} profile changed since the bundle was exported: retrain / "
            "re-export (python -m agents.export --run RUN --out runtime/bundles/" + model + ")")
    r = random_request(np.random.default_rng(0))
    p = d.decide(r)
    assert plan_drop_pp(d.profile, p) <= r.eps_pp + FEAS_TOL_PP


@pytest.mark.skipif(not COMMITTED, reason="no committed bundles yet")
@pytest.mark.parametrize("model", COMMITTED)
def test_cli_committed_bundle_by_model_name(model: str) -> None:
    out = _cli("decide", "--model", model, "--request",
               str(ROOT / "examples" / "request_lte_nano.json"))
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["model"] == model and res["feasible"] is True and res["path"] in PATHS
    assert _cli("verify", "--model", model).returncode == 0


@pytest.mark.skipif("resnet18" not in COMMITTED, reason="no committed resnet18 bundle yet")
def test_cli_default_bundle_loads_without_arguments() -> None:
    req = str(ROOT / "examples" / "request_lte_nano.json")
    out = _cli("decide", "--request", req)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"] == "resnet18"
    if "digits_cnn" in COMMITTED:
        out = _cli("decide", "--model", "digits_cnn", "--request", req)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["model"] == "digits_cnn"


def test_kernel_widths_layout_is_what_the_runtime_assumes() -> None:
    assert KERNEL_WIDTHS[-1] == 32 and len(rf.FIELDS) == len(rf.SCALAR_FIELDS) + len(KERNEL_WIDTHS)


def test_atomic_write_gives_umask_mode(tmp_path: Path) -> None:
    """Artifacts get the mode a plain open() would give, not mkstemp's 0600."""
    import os

    from system.atomic import atomic_write_text

    umask = os.umask(0)
    os.umask(umask)
    out = tmp_path / "a.json"
    atomic_write_text(out, "{}")
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert out.read_text() == "{}"
