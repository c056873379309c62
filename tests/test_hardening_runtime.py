"""The dispatcher under hostile options, requests far from its training, and mixed batches."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import Dispatcher
from runtime import features as rf
from runtime.bundle import CONTRACT_FILE, SUMS_FILE, load_bundle
from runtime.dispatcher import BatchItemError, bundles_root
from runtime.support import SupportCheck
from system.baselines import device_only, device_only_int8, partition_only, server_only
from system.cost import evaluate_arrays, evaluate_plans
from system.errors import QsplitInputError
from system.optimal import solve
from system.plan import Plan
from system.request import Request, random_request, request_arrays
from system.scenario import load_scenario, sample_requests

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("digits_cnn", "resnet18")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def training() -> list[Request]:
    return sample_requests(load_scenario("default"), np.random.default_rng(11), 400)


# ------------------------------------------------------------------ item 13

def test_c13_decide_model_refuses_a_path() -> None:
    for bad in ("../bundles/digits_cnn", str(bundles_root() / "digits_cnn"), "..", "x/y"):
        r = _cli("decide", "--model", bad, "--request", "-")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "--bundle" in lines[0], r.stderr
    with pytest.raises(QsplitInputError, match="not a path"):
        Dispatcher.load(model="../bundles/digits_cnn")


# ------------------------------------------------------------------ item 14

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"refine": "no"}, "refine"), ({"refine": 1}, "refine"),
    ({"cut_radius": -3}, "cut_radius"), ({"cut_radius": 1.7}, "cut_radius"),
    ({"cut_radius": True}, "cut_radius"), ({"cut_radius": 10 ** 9}, "cut_radius"),
    ({"fallback": 3}, "fallback"), ({"fallback": ["none"]}, "fallback"),
    ({"fallback": "sometimes"}, "fallback"), ({"trivial_guard": "yes"}, "trivial_guard"),
])
def test_c14_dispatcher_options_refused_in_one_line(kwargs: dict, field: str) -> None:
    with pytest.raises(QsplitInputError) as exc:
        Dispatcher.load(model="digits_cnn", **kwargs)
    assert str(exc.value).startswith(field) and "\n" not in str(exc.value)


def test_c14_decide_arrays_refuses_unknown_keys_as_decide_does(training: list[Request]) -> None:
    d = Dispatcher.load(model="digits_cnn")
    arrays = request_arrays(training[:3])
    d.decide_arrays(arrays)
    with pytest.raises(QsplitInputError, match=r"unknown key.*bandwidth"):
        d.decide_arrays({**arrays, "bandwidth": np.ones(3)})
    with pytest.raises(QsplitInputError, match=r"unknown key.*bandwidth"):
        d.decide({**dataclasses.asdict(rf.to_request(rf.from_request(training[0]))),
                  "bandwidth": 1.0})


# ------------------------------------------------------------------ item 18

def _slow_device(r: Request, factor: float = 30.0) -> Request:
    return dataclasses.replace(r, dev_flops_per_s=r.dev_flops_per_s / factor)


@pytest.mark.parametrize("model", MODELS)
def test_c18_support_flags_requests_outside_training(model: str, training: list[Request]) -> None:
    d = Dispatcher.load(model=model)
    assert d.bundle.support is not None
    inside = [d.decide_detailed(r).out_of_range for r in training]
    assert np.mean(inside) < 0.01                     # the training population is inside
    far = [dataclasses.replace(r, up_bps=10.0) for r in training[:40]]     # 10 bit/s up
    far += [dataclasses.replace(r, dev_flops_per_s=1e7) for r in training[:40]]   # 10 MFLOP/s
    for r in far:
        det = d.decide_detailed(r)
        assert det.out_of_range and det.path == "fallback"
        assert det.plan == solve(d.profile, r, d.bits).plan
    assert d.decide_batch(far) == [det.plan for det in map(d.decide_detailed, far)]
    flags = d.support.outside_batch(d.encoder.encode_batch(far))
    assert flags.all()


def test_c18_old_bundle_without_support_still_loads(tmp_path: Path) -> None:
    b = shutil.copytree(bundles_root() / "digits_cnn", tmp_path / "old")
    c = json.loads((b / CONTRACT_FILE).read_text())
    del c["observation"]["support"]
    (b / CONTRACT_FILE).write_text(json.dumps(c))
    import hashlib
    names = sorted(p.name for p in b.iterdir() if p.name != SUMS_FILE)
    (b / SUMS_FILE).write_text("".join(
        f"{hashlib.sha256((b / n).read_bytes()).hexdigest()}  {n}\n" for n in names))
    bundle = load_bundle(b)
    assert bundle.support is None
    check = SupportCheck(None, bundle.encoder)
    clip = bundle.encoder.clip
    assert not check.outside([0.0] * bundle.encoder.n_features)
    assert check.outside([clip] + [0.0] * (bundle.encoder.n_features - 1))


def test_c18_trivial_costs_equal_the_cost_model(training: list[Request]) -> None:
    d = Dispatcher.load(model="resnet18")
    tp = d.trivial
    L = d.profile.n_units
    for r in training[:50]:
        prices = tp.prices(rf.from_request(r), r.device, r.server)   # labels: the T4's overhead
        for p, w, a in tp.actions[::3]:
            bits = np.full((1, L), 32)
            bits[0, :p] = [d.bits[k] for k in w]
            want = evaluate_arrays(d.profile, r, np.array([p]), bits, np.array([d.bits[a]])).cost[0]
            assert tp.cost((p, w, a), prices, r.device, r.server) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("model", MODELS)
def test_c18_no_decision_worse_than_the_best_trivial_plan(model: str) -> None:
    rng = np.random.default_rng(5)
    reqs = [random_request(rng) for _ in range(300)]
    reqs += [dataclasses.replace(r, up_bps=r.up_bps / 100) for r in reqs[:100]]
    reqs += [_slow_device(r, 20.0) for r in reqs[:100]]
    for opts in ({}, {"fallback": "none"}, {"fallback": "none", "refine": True}):
        d = Dispatcher.load(model=model, **opts)
        plans = d.decide_batch(reqs)
        assert plans == [d.decide(r) for r in reqs]
        for r, plan in zip(reqs, plans, strict=True):
            trivial = [f(d.profile, r, d.bits) for f in
                       (server_only, device_only, device_only_int8, partition_only)]
            f = evaluate_plans(d.profile, r, [plan, *trivial])
            best = min(c for c, ok in zip(f.cost[1:], f.feasible[1:], strict=True) if ok)
            assert f.feasible[0] and f.cost[0] <= best * (1 + 1e-9)


def test_c18_guard_replaces_a_bad_policy_plan(training: list[Request]) -> None:
    """Uplink 100x slower: the plain policy sends the input up, the guard keeps the device."""
    plain = Dispatcher.load(model="digits_cnn", fallback="none", trivial_guard=False)
    guard = Dispatcher.load(model="digits_cnn", fallback="none")
    reqs = [dataclasses.replace(r, up_bps=r.up_bps / 100) for r in training[:200]]
    paths = [guard.decide_detailed(r).path for r in reqs]
    assert "trivial" in paths
    c0 = [evaluate_plans(plain.profile, r, [plain.decide(r)]).cost[0] for r in reqs]
    c1 = [evaluate_plans(guard.profile, r, [guard.decide(r)]).cost[0] for r in reqs]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(c0, c1, strict=True))
    assert sum(c1) < sum(c0)


# ------------------------------------------------------------------ item 19

def test_c19_batch_answers_each_item(training: list[Request]) -> None:
    d = Dispatcher.load(model="resnet18")
    good = {"dev_flops_per_s": 2e10, "dev_kappa": [0.0, 3.2, 1.8, 1.0], "p_comp_w": 5.0,
            "p_tx_w": 1.0, "p_rx_w": 0.8, "p_idle_w": 0.5, "srv_flops_per_s": 8e12,
            "srv_load": 0.5, "up_bps": 5e6, "down_bps": 2e7, "rtt_s": 0.04, "eps_pp": 1.0}
    batch = [training[0], {**good, "eps_pp": -1.0}, good, "not a request", training[1],
             {**good, "bandwidth": 3}]
    out = d.decide_batch(batch)
    assert len(out) == len(batch)
    assert out[0] == d.decide(training[0]) and out[2] == d.decide(good)
    assert out[4] == d.decide(training[1])
    for i in (1, 3, 5):
        assert isinstance(out[i], BatchItemError) and out[i].index == i
        assert f"request[{i}]" in str(out[i]) and "\n" not in str(out[i])
    assert "eps_pp" in str(out[1]) and "bandwidth" in str(out[5])
    valid = d.decide_batch(training[:20])
    assert all(isinstance(p, Plan) for p in valid)
    assert valid == [d.decide(r) for r in training[:20]]
