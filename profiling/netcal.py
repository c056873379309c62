"""Calibrate and validate the accuracy model of a digits network (``digits.NETS``).

Why one procedure for every network: a correction fitted on one architecture is only a claim
about that architecture, so ``digits_cnn`` and ``digits_resnet`` go through the same steps,
on the same split of scikit-learn's digits, with round-to-nearest as execution runs plans:

1. one tensor at a time at every planner width (``calibrate.calibrate``): sens_w, sens_a,
   the per-width law table, and each unit's evidence (the widths measured, ``ptq``);
2. mixed plans on the *calibration* half, stratified over the additive sum s so that their
   measured drops cover 0-15 pp and beyond; g chosen by cross-validation and given its
   safety margin there (``compounding.fit_compounding``);
3. :func:`validate_net`: fresh plans (another seed) on the *validation* half, stratified over
   the corrected prediction g(s), measured by a caller-given runner (``execution``'s packed
   path in ``benchmarks/bench_accuracy_model.py``; the simulated quantizer by default).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from profiling import digits
from profiling.calibrate import PLAN_BITS, calibrate, law_table
from profiling.chain import Chain, measure_plans
from profiling.compounding import fit_compounding
from profiling.profiler import ModuleProfile, model_profile, profile_module, split_units
from profiling.safety import SAFE_BUDGETS_PP, fit_safety_factor, safe_rate, spearman, stratified_plans
from system.accuracy import compound_pp, plans_drop_pp
from system.evidence import TensorEvidence
from system.plan import Plan
from system.profiles import ModelProfile, profile_from_dict

#: Calibration plans: bins of the additive sum s (pp) and plans per bin. Bins up to 12 pp of
#: s reach measured drops past 15 pp on both networks (compounding roughly doubles s there).
CAL_EDGES_PP = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.5, 8.0, 10.0, 12.0)
CAL_PER_BIN = 60
#: Validation plans: bins of the corrected prediction g(s) (pp): 200 at 0.1-5 pp (the budgets
#: that matter), 80 at 5-15 pp.
VAL_EDGES_PP = (0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 12.5, 15.0)
VAL_PER_BIN = (40, 40, 40, 40, 40, 20, 20, 20, 20)
IN_RANGE_PP = (0.1, 5.0)
BEYOND_PP = (5.0, 15.0)
Measure = Callable[[list[Plan]], np.ndarray]


def net_chains(net: str) -> tuple[ModuleProfile, list[nn.Module], Chain, Chain, dict[str, int]]:
    """Profile of a committed digits network, its units, calibration and validation chains."""
    model = digits.load_net(net)
    prof = profile_module(model, digits.INPUT_SHAPE)
    units = split_units(prof)
    split = digits.load_split()
    cal = Chain(units, *digits.eval_views(split.x_calib, split.y_calib))
    val = Chain(units, *digits.eval_views(split.x_val, split.y_val))
    return prof, units, cal, val, split.sizes()


def evidence_of(chain: Chain, bits: Sequence[int]) -> tuple[TensorEvidence, ...]:
    """Per unit: the widths its weights and its output were measured at (post-training)."""
    L = chain.n_units
    b = tuple(sorted(bits))
    return tuple(TensorEvidence(b if chain.has_weights(i) else (),
                                "ptq" if chain.has_weights(i) else "none",
                                b if i < L - 1 else (), "ptq" if i < L - 1 else "none")
                 for i in range(L))


def additive_factor(s: np.ndarray, meas: np.ndarray, target: float) -> float:
    """The old rule, kept as the 'before' baseline: one factor k on the additive sum, fitted
    on the calibration plans with s in 0.1-5 pp (where it was fitted before)."""
    inside = (s >= IN_RANGE_PP[0]) & (s <= IN_RANGE_PP[1])
    return fit_safety_factor(s[inside], meas[inside], target)


def calibrate_net(net: str, *, per_bin: int = CAL_PER_BIN, seed: int = 0,
                  fit_cap_pp: float = float("inf"), safe_target: float = 0.98, folds: int = 5,
                  log: Callable[[str], None] | None = None) -> ModelProfile:
    """Measure a digits network's sensitivities, evidence and compounding on the calibration
    half; returns its profile (sens raw, the safety margin inside g)."""
    t0 = time.perf_counter()
    prof, _, chain, _, sizes = net_chains(net)
    cal = calibrate(chain, PLAN_BITS, 0, seed, fit_cap_pp)
    table = law_table(cal)
    if log:
        log(f"{net}: one-tensor calibration {cal.seconds:.0f} s")
    edges = CAL_EDGES_PP
    plans = stratified_plans(cal.sens_w, cal.sens_a, edges, [per_bin] * (len(edges) - 1),
                             seed + 1)
    t1 = time.perf_counter()
    s = plans_drop_pp(cal.sens_w, cal.sens_a, plans)
    meas = measure_plans(chain, plans)
    k_add = additive_factor(s, meas, safe_target)
    comp = fit_compounding(s, meas, folds=folds, seed=seed, safe_target=safe_target, extra={
        "data": "calibration half (round-to-nearest), plans stratified over s: bins "
        f"{list(edges)} pp, up to {per_bin} each, cut uniform 1..L, widths uniform from the "
        "planner's bit set", "plans_seed": seed + 1, "date": time.strftime("%Y-%m-%d"),
        "measure_s": round(time.perf_counter() - t1, 1),
        "additive_k_before": k_add,
        "additive_k_rule": "the old rule, kept for comparison: smallest k on s alone over "
        "calibration plans with s in 0.1-5 pp, same target and budgets"})
    if log:
        f = comp.fit
        log(f"{net}: {len(plans)} calibration plans, measured 0-{meas.max():.1f} pp; CV "
            f"{f['cv_mae_pp']} -> {f['chosen']}, k = {f['safety_factor']}")
    names = [u.name for u in prof.units]
    record = digits.load_train_record(net=net)
    provenance = {
        "script": f"python -m profiling calibrate-digits --net {net} (profiling/netcal.py)",
        "model": f"profiling/digits.py NETS[{net!r}], weights profiling/data/{net}.npz",
        "data": "sklearn.datasets.load_digits (1,797 8x8 images, bundled), stratified split: "
        "train / calibration / validation disjoint",
        "split_sizes": sizes, "split_seed": digits.SPLIT_SEED,
        "eval_views": "each held-out half at 3 horizontal positions (-1, 0, +1 px, zero fill): "
        f"{3 * sizes['calib']} calibration and {3 * sizes['val']} validation decisions",
        "train": {k: record[k] for k in ("seed", "epochs", "optimizer", "train_s")},
        "test_accuracy_pct": record["test_accuracy_pct"],
        "base_accuracy_pct_on": "test = calibration + validation halves",
        "calib_accuracy_pct": chain.base_accuracy_pct,
        "quantizers": {
            "weights": "per output channel, symmetric: 2^b levels over [-max|w_c|, +max|w_c|], "
            "step 2 max|w_c| / (2^b - 1); rank >= 2 tensors only, biases and batch-norm float",
            "activation": "per tensor (per request), affine: 2^b levels over [min, max] of the "
            "tensor, step (max - min) / (2^b - 1)",
            "rounding": "round-to-nearest, as execution/ packs a plan; one evaluation per point",
        },
        "calibration": {
            "method": "one unit's weights or one cut tensor at a time, everything else float",
            "bits": list(PLAN_BITS), "seed": seed,
            "fit": "least squares through the origin: sens = sum q(b) d(b) / sum q(b)^2, "
            "q(b) = (2^b - 1)^-2, " + (f"points with d(b) > {fit_cap_pp} pp left out (the two "
            "widest widths always kept)" if np.isfinite(fit_cap_pp) else "every width") +
            ", negative -> 0; sens stored raw (the safety margin is in g)",
            "drops_w_pp": {names[i]: [round(v, 4) for v in d] for i, d in cal.drops_w.items()},
            "drops_a_pp": {names[i]: [round(v, 4) for v in d] for i, d in cal.drops_a.items()},
            "fit_bits_w": {names[i]: b for i, b in cal.fit_bits_w.items()},
            "fit_bits_a": {names[i]: b for i, b in cal.fit_bits_a.items()},
            "law_per_width": table,
            "law_per_width_note": "per width, over tensors with fitted drop >= 0.1 pp: "
            "measured / fitted one-tensor drop (median, 10% and 90% quantiles); the others: "
            "their largest |measured| drop",
            "seconds": round(cal.seconds, 1),
        },
        "compounding": "drop = g(s), see the profile's compounding.fit",
        "safe_budgets_pp": list(SAFE_BUDGETS_PP),
        "torch": torch.__version__, "python": platform.python_version(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    base = model_profile(prof, net, cal.sens_w, cal.sens_a, "measured",
                         record["test_accuracy_pct"], provenance)
    full = dataclasses.replace(base, evidence=evidence_of(chain, PLAN_BITS), compounding=comp)
    return profile_from_dict(full.to_dict(), where=f"profile {net}")


def validation_plans(profile: ModelProfile, seed: int = 1000,
                     per_bin: Sequence[int] = VAL_PER_BIN) -> list[Plan]:
    """Fresh plans (a seed calibration never used), stratified over the corrected g(s)."""
    return stratified_plans(profile.sens_w, profile.sens_a, VAL_EDGES_PP, per_bin, seed,
                            predict=lambda s: compound_pp(profile.compounding, s))


def figures(pred: np.ndarray, meas: np.ndarray) -> dict[str, Any]:
    """Spearman (all plans), MAE in range and beyond, safe rate at the budgets."""
    inside = (pred >= IN_RANGE_PP[0]) & (pred <= IN_RANGE_PP[1])
    beyond = (pred > BEYOND_PP[0]) & (pred <= BEYOND_PP[1])
    err = np.abs(pred - meas)
    return {
        "spearman": round(spearman(pred, meas), 4),
        "mae_pp": round(float(err[inside].mean()), 4) if inside.any() else None,
        "mae_pp_beyond": round(float(err[beyond].mean()), 4) if beyond.any() else None,
        "safe_rate": round(safe_rate(pred, meas), 4),
        "plans_in_range": int(inside.sum()), "plans_beyond": int(beyond.sum()),
        "over_budget": {str(b): [int((pred <= b).sum()), int(((pred <= b) & (meas > b)).sum())]
                        for b in SAFE_BUDGETS_PP},
    }


def validate_net(profile: ModelProfile, net: str, measure: Measure | None = None,
                 seed: int = 1000, per_bin: Sequence[int] = VAL_PER_BIN) -> dict[str, Any]:
    """Predicted vs measured drop of fresh plans on the validation half, before the
    correction (the additive law with the old single factor) and after it (g)."""
    t0 = time.perf_counter()
    _, _, _, chain, sizes = net_chains(net)
    plans = validation_plans(profile, seed, per_bin)
    s = plans_drop_pp(profile.sens_w, profile.sens_a, plans)
    meas = (measure_plans(chain, plans) if measure is None else measure(plans))
    fit = profile.compounding.fit if profile.compounding is not None else {}
    k_add = float(fit.get("additive_k_before", 1.0))
    pred_after = compound_pp(profile.compounding, s)
    return {
        "plans": len(plans), "val_images": sizes["val"],
        "val_base_accuracy_pct": round(chain.base_accuracy_pct, 4),
        "measured_max_pp": round(float(meas.max()), 3),
        "before": {"law": f"additive, k = {k_add}", **figures(k_add * s, meas)},
        "after": {"law": f"g(s), {fit.get('chosen', 'identity')}", **figures(pred_after, meas)},
        "seconds": round(time.perf_counter() - t0, 1),
        "arrays": {"s": s, "pred_before": k_add * s, "pred_after": pred_after, "meas": meas,
                   "plans": plans},
    }
