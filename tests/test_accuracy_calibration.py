"""Tests of the accuracy model's calibration: compounding, evidence, the second network, and
execution's packed path against the simulated quantizer."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from profiling import compounding as cp  # noqa: E402
from profiling import digits, netcal, safety  # noqa: E402
from profiling.calibrate import PLAN_BITS, Calibration, law_table  # noqa: E402
from profiling.chain import Chain  # noqa: E402
from profiling.profiler import profile_module, split_units  # noqa: E402
from profiling.quantize import activation_codes, quantize_weight, weight_codes  # noqa: E402
from system.accuracy import compound_pp, plans_drop_pp  # noqa: E402
from system.evidence import parse_compounding  # noqa: E402
from system.plan import Plan  # noqa: E402
from system.profiles import load_profile_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "system" / "data" / "profiles"
NETS = ("digits_cnn", "digits_resnet")


def _bench():
    """benchmarks/bench_accuracy_model.py as a module (its packed runner)."""
    path = ROOT / "benchmarks" / "bench_accuracy_model.py"
    spec = importlib.util.spec_from_file_location("bench_accuracy_model", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_accuracy_model"] = mod
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- the CV chooser
def test_cv_chooser_prefers_the_simpler_law_on_a_tie_and_a_curve_when_data_bend() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.0, 10.0, 300)
    scores = cp.cv_scores(s, 2.0 * s)          # every candidate fits a line exactly
    assert cp.choose(scores) == "linear"
    d = 0.3 * s**2 + rng.normal(0.0, 0.3, s.size)   # compounding: convex
    scores = cp.cv_scores(s, d)
    assert cp.choose(scores) != "linear"
    assert min(scores.values()) < 0.5 * scores["linear"]
    assert cp.cv_scores(s, d) == scores           # folds drawn with a seed


def test_fitted_knots_are_monotone_from_zero_and_carry_the_margin() -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(0.0, 12.0, 400)
    meas = 0.2 * s**1.8 + rng.normal(0.0, 0.4, s.size)
    g = cp.fit_compounding(s, meas, safe_target=0.98)
    assert g.s_pp[0] == 0.0 and g.drop_pp[0] == 0.0
    assert (np.diff(g.s_pp) > 0).all() and (np.diff(g.drop_pp) > 0).all()
    assert 2 <= len(g.s_pp) <= 64 and g.s_pp[-1] == pytest.approx(s.max())
    assert compound_pp(g, 0.0) == 0.0
    assert (np.diff(compound_pp(g, np.linspace(0, 20, 200))) > 0).all()
    k = g.fit["safety_factor"]
    assert k >= 1.0
    assert safety.safe_rate(compound_pp(g, s), meas) >= 0.98
    # what the profile carries is what system's validator accepts, and evaluates the same
    back = parse_compounding("compounding", json.loads(json.dumps(g.to_dict())))
    assert np.array_equal(compound_pp(back, s), compound_pp(g, s))


def test_tabulate_refuses_bad_knot_counts() -> None:
    with pytest.raises(ValueError, match="n_knots"):
        cp.tabulate(lambda x: x, 5.0, 65)


def test_stratified_plans_fill_their_bins() -> None:
    prof = load_profile_file(PROFILES / "digits_cnn.json")
    edges, want = (0.0, 1.0, 3.0, 8.0), (5, 7, 4)
    plans = safety.stratified_plans(prof.sens_w, prof.sens_a, edges, want, seed=3)
    s = plans_drop_pp(prof.sens_w, prof.sens_a, plans)
    counts = np.histogram(s, bins=edges)[0]
    assert counts.tolist() == list(want) and len(set(plans)) == len(plans)
    assert plans == safety.stratified_plans(prof.sens_w, prof.sens_a, edges, want, seed=3)


def test_law_table_ratios_per_width() -> None:
    cal = Calibration((2, 3), 0, 0, drops_w={0: [9.0, 0.5]}, drops_a={0: [4.5, 0.0]},
                      sens_w=[81.0], sens_a=[81.0])
    rows = law_table(cal)
    assert rows[0]["bits"] == 2 and rows[0]["tensors_compared"] == 2
    assert rows[0]["ratio_median"] == pytest.approx(0.75)     # 9/9 and 4.5/9
    assert rows[1]["ratio_q10"] < rows[1]["ratio_q90"]        # 0.5/1.65 and 0/1.65


# --------------------------------------------------------------------------- shipped profiles
@pytest.mark.parametrize("net", NETS)
def test_profile_records_evidence_and_compounding(net: str) -> None:
    prof = load_profile_file(PROFILES / f"{net}.json")
    assert prof.sensitivity_source == "measured" and prof.compounding is not None
    for i, (e, p) in enumerate(zip(prof.evidence, prof.params, strict=True)):
        if p > 0:
            assert (e.w_bits, e.w_method) == (PLAN_BITS, "ptq")
        else:
            assert (e.w_bits, e.w_method) == ((), "none")
        last = i == prof.n_units - 1
        assert (e.a_bits, e.a_method) == (((), "none") if last else (PLAN_BITS, "ptq"))
    fit = prof.compounding.fit
    assert fit["chosen"] in cp.CANDIDATES and set(fit["cv_mae_pp"]) == set(cp.CANDIDATES)
    assert fit["chosen"] == cp.choose(fit["cv_mae_pp"])
    assert fit["measured_max_pp"] >= 15.0      # calibration plans cover 0-15 pp
    table = prof.provenance["calibration"]["law_per_width"]
    assert [r["bits"] for r in table] == list(PLAN_BITS)
    assert prof.provenance["quantizers"]["rounding"].startswith("round-to-nearest")


def test_second_network_profile_matches_its_module() -> None:
    prof = load_profile_file(PROFILES / "digits_resnet.json")
    model = digits.load_net("digits_resnet")
    mp = profile_module(model, digits.INPUT_SHAPE)
    assert list(prof.unit_names) == [u.name for u in mp.units]
    assert prof.macs.tolist() == [u.macs for u in mp.units]
    assert prof.params.tolist() == [u.params for u in mp.units]
    assert prof.params.sum() == sum(p.numel() for p in model.parameters())
    assert prof.out_elems.tolist() == [u.out_elems for u in mp.units]
    split = digits.load_split()
    record = digits.load_train_record(net="digits_resnet")
    acc = digits.accuracy_pct(model, split.x_test, split.y_test)
    assert acc == record["test_accuracy_pct"] == prof.base_accuracy_pct and acc > 95.0


def test_net_names_are_checked() -> None:
    with pytest.raises(ValueError, match=r"--net: 'vgg' is not one of"):
        digits.check_net("vgg")


# --------------------------------------------------------------------------- packed = simulated
def test_packed_execution_equals_the_simulated_quantizer() -> None:
    """Codes on the wire are the simulated quantizer's codes, bit for bit, and so are the
    decoded weights, the cut tensor and every top-1 decision."""
    from execution import packing
    from execution.codec import act_frame
    from execution.frames import decode

    torch.set_num_threads(1)
    bench = _bench()
    units = split_units(profile_module(digits.load_net("digits_cnn"), digits.INPUT_SHAPE))
    split = digits.load_split()
    x, y = digits.eval_views(split.x_val[:40], split.y_val[:40])
    runner = bench.PackedRunner(units, x, y)
    chain = Chain(units, x, y)
    plan = Plan(4, (3, 4, 32, 2), 3)
    frames = runner.load_head(plan.cut, plan.weight_bits)
    quantized = [f for f in frames if f.bits < 32]
    assert len(quantized) == 3               # conv1, conv2 and conv3 weights (pool has none)
    wts = [p for i in (0, 1, 3) for p in units[i].parameters() if p.dim() >= 2]
    for f, w, b in zip(quantized, wts, (3, 4, 2), strict=True):
        codes = packing.unpack(f.payload, w.numel(), f.bits).reshape(w.shape)
        want, _ = weight_codes(w, b)
        assert np.array_equal(codes.astype(np.int64), want.to(torch.int64).numpy())
    dev = [p for i in (0, 1, 3) for p in runner.device[i].parameters() if p.dim() >= 2]
    for d, w, b in zip(dev, wts, (3, 4, 2), strict=True):
        assert torch.equal(d, quantize_weight(w, b))
    h = chain.acts[plan.cut][:1]
    f = decode(act_frame(h, 3))
    want, _, _ = activation_codes(h, 3)
    got = packing.unpack(f.payload, h.numel(), 3).reshape(h.shape)
    assert np.array_equal(got.astype(np.int64), want.to(torch.int64).numpy())
    assert torch.equal(runner.predictions(plan) == y, chain._correct_vec(plan, None))
    assert runner.drop_pp(plan) == chain.drop_pp(plan, 0)[0]


@pytest.mark.slow
def test_validation_through_execution_small() -> None:
    """A reduced validation (the benchmark runs the full one): packed and simulated agree."""
    torch.set_num_threads(1)
    bench = _bench()
    prof = load_profile_file(PROFILES / "digits_resnet.json")
    runner = bench.packed_runner("digits_resnet")
    res = netcal.validate_net(prof, "digits_resnet", measure=runner.measure,
                              per_bin=[2] * len(netcal.VAL_PER_BIN))
    sim = netcal.measure_plans(netcal.net_chains("digits_resnet")[3], res["arrays"]["plans"])
    assert np.array_equal(sim, res["arrays"]["meas"])
    assert res["after"]["spearman"] > 0.5
