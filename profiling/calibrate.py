"""Sensitivity calibration: measure one unit at a time, fit the law, choose the safety factor.

Why: the planner's accuracy model (DESIGN.md §1, ``system.accuracy``) is the additive law

    drop_pp(plan) = sum_{l<=p} sens_w[l] * q(b_w[l]) + [0<p<L] sens_a[p] * q(b_a),
    q(b) = (2^b - 1)^-2   (``system.bits.q_noise``),

and its sensitivities must be measured on a real network and real data, then checked on
plans that quantize many units at once. Everything here works on a network given as a chain
of unit modules (``profiler.split_units`` makes one from any traceable model; the digits CNN
is one already) and a labelled held-out set (``profiling.chain``, quantizers in
``profiling.quantize``). A 32-bit tensor runs unquantized here, while the law charges it
q(32) = (2^32 - 1)^-2, about 5e-20: sens_w * 5e-20 pp per unquantized unit, far below any
budget.

Fit: for each unit, the drops measured at several bit widths b are fitted by least squares
through the origin, sens = sum_b q(b) d(b) / sum_b q(b)^2, using only the points with
d(b) <= ``fit_cap_pp`` (5 pp: the largest budget that matters; beyond it the law is not
needed and a few collapsed points would dominate the fit) and at least the widest two widths
measured; negative estimates are clipped to 0.

Safety factor (``profiling.safety``): 600 random mixed plans are measured on the
*calibration* data, and k is the smallest multiplier of all sensitivities such that at least
``safe_target`` (0.98) of the (plan, budget) pairs predicted within a budget are measured
within it. The profile stores k * sens. Why 0.98 and 600 plans: which few plans come out
unsafe depends on the set of images, so a target just at the 0.97 wanted on unseen images is
too little, while a large k (e.g. the 90% bootstrap quantile of k: 2.23 in the shipped
profile's provenance) inflates the mean error, which grows with k; more plans make the
estimate of k less noisy. The trade-off on validation plans is printed by
``benchmarks/bench_accuracy_model.py`` (predictions scaled by 0.8-1.25). The bootstrap spread
of k is recorded as a diagnostic. Validation plans are drawn afresh and measured on the
*validation* half, which neither the fit nor k has seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from profiling import digits
from profiling.chain import Chain, measure_plans, one_unit_plan
from profiling.profiler import ModuleProfile, model_profile, profile_module, split_units
from profiling.safety import (
    SAFE_BUDGETS_PP,
    fit_safety_factor,
    random_plans,
    safe_rate,
    safety_factor_spread,
    spearman,
)
from system.accuracy import plans_drop_pp
from system.bits import DEFAULT_BITS, q_noise
from system.profiles import ModelProfile

CAL_BITS = (2, 3, 4, 5, 6, 8)


def fit_through_origin(
    bits: Sequence[int], drops_pp: Sequence[float], cap_pp: float
) -> tuple[float, list[int]]:
    """Least squares through the origin of drop = sens * q(b); returns sens and bits used.

    Points above ``cap_pp`` are left out (saturated: the small-noise law no longer applies),
    but the two widest widths are always kept so that every unit gets an estimate.
    """
    order = sorted(range(len(bits)), key=lambda i: -bits[i])
    used = [i for i in order if drops_pp[i] <= cap_pp]
    for i in order[:2]:
        if i not in used:
            used.append(i)
    q = q_noise(np.array([bits[i] for i in used]))
    d = np.array([drops_pp[i] for i in used])
    sens = float(q @ d / (q @ q))
    return max(sens, 0.0), sorted(bits[i] for i in used)


@dataclass
class Calibration:
    """Per-unit measured drops and fitted sensitivities (before the safety factor)."""

    bits: tuple[int, ...]
    n_seeds: int
    seed: int
    drops_w: dict[int, list[float]] = field(default_factory=dict)  # unit -> drop per bit width
    drops_a: dict[int, list[float]] = field(default_factory=dict)  # cut after unit -> drops
    sens_w: list[float] = field(default_factory=list)
    sens_a: list[float] = field(default_factory=list)
    fit_bits_w: dict[int, list[int]] = field(default_factory=dict)
    fit_bits_a: dict[int, list[int]] = field(default_factory=dict)
    seconds: float = 0.0


def calibrate(
    chain: Chain,
    bits: Sequence[int] = CAL_BITS,
    n_seeds: int = 32,
    seed: int = 0,
    fit_cap_pp: float = 15.0,
) -> Calibration:
    """Quantize one unit (weights) or one cut tensor at a time, measure, fit sens_w / sens_a."""
    t0 = time.perf_counter()
    L = chain.n_units
    cal = Calibration(tuple(bits), n_seeds, seed)

    def fit(i: int, kind: str, drops: dict[int, list[float]],
            fit_bits: dict[int, list[int]]) -> float:
        """Measure unit i's drop at every width (weights or its output tensor), fit the slope."""
        d = [float(chain.drop_pp(one_unit_plan(L, i, **{kind: b}), n_seeds, seed).mean())
             for b in bits]
        drops[i] = d
        s, fit_bits[i] = fit_through_origin(bits, d, fit_cap_pp)
        return s

    for i in range(L):
        cal.sens_w.append(fit(i, "w_bits", cal.drops_w, cal.fit_bits_w)
                          if chain.has_weights(i) else 0.0)
        cal.sens_a.append(fit(i, "a_bits", cal.drops_a, cal.fit_bits_a) if i < L - 1 else 0.0)
    cal.seconds = time.perf_counter() - t0
    return cal


def digits_chains() -> tuple[ModuleProfile, list[nn.Module], Chain, Chain, dict[str, int]]:
    """Profile of the committed digits CNN, its units, and calibration / validation chains."""
    model = digits.load_digits_cnn()
    prof = profile_module(model, digits.INPUT_SHAPE)
    units = split_units(prof)
    split = digits.load_split()
    cal = Chain(units, *digits.eval_views(split.x_calib, split.y_calib))
    val = Chain(units, *digits.eval_views(split.x_val, split.y_val))
    return prof, units, cal, val, split.sizes()


def calibrate_digits(
    n_seeds: int = 32,
    bits: Sequence[int] = CAL_BITS,
    n_cal_plans: int = 600,
    plan_seeds: int = 8,
    seed: int = 0,
    fit_cap_pp: float = 5.0,
    safe_target: float = 0.98,
    log: Callable[[str], None] | None = None,
) -> ModelProfile:
    """Measure the digits CNN's sensitivities and safety factor; returns its profile.

    Everything here uses the calibration half of the held-out data only.
    """
    import platform

    t0 = time.perf_counter()
    prof, _, chain, _, sizes = digits_chains()
    cal = calibrate(chain, bits, n_seeds, seed, fit_cap_pp)
    if log:
        log(f"one-unit calibration: {cal.seconds:.0f} s")
    plans = random_plans(cal.sens_w, cal.sens_a, n_cal_plans, 0, seed=seed + 1)
    pred_raw = plans_drop_pp(cal.sens_w, cal.sens_a, plans)
    loss = np.stack(
        [chain.loss_per_image(p, plan_seeds, seed + 2 + 7 * j) for j, p in enumerate(plans)]
    )
    meas = 100.0 * loss.mean(axis=1)
    k = fit_safety_factor(pred_raw, meas, safe_target)
    k_stats = safety_factor_spread(pred_raw, loss, sizes["calib"], safe_target, seed=seed)
    if log:
        log(f"safety factor k = {k} from {len(plans)} calibration plans ({k_stats})")
    names = [u.name for u in prof.units]
    record = digits.load_train_record()
    provenance = {
        "script": "python -m profiling calibrate-digits (profiling/calibrate.py)",
        "model": "profiling/digits.py build_digits_cnn, weights profiling/data/digits_cnn.npz",
        "data": "sklearn.datasets.load_digits (1,797 8x8 images, bundled), stratified split: "
        "train / calibration / validation disjoint",
        "split_sizes": sizes,
        "eval_views": "each held-out half at 3 horizontal positions (-1, 0, +1 px, zero fill): "
        f"{3 * sizes['calib']} calibration and {3 * sizes['val']} validation decisions",
        "split_seed": digits.SPLIT_SEED,
        "train": {k_: record[k_] for k_ in ("seed", "epochs", "optimizer", "train_s")},
        "test_accuracy_pct": record["test_accuracy_pct"],
        "base_accuracy_pct_on": "test = calibration + validation halves",
        "calib_accuracy_pct": chain.base_accuracy_pct,
        "quantizers": {
            "weights": "per output channel, symmetric: 2^b levels over [-max|w_c|, +max|w_c|], "
            "step 2 max|w_c| / (2^b - 1); rank >= 2 tensors only, biases float",
            "activation": "per tensor (per request), affine: 2^b levels over [min, max] of the "
            "tensor, step (max - min) / (2^b - 1)",
            "rounding": "stochastic rounding; a drop is the mean top-1 drop over seeds",
        },
        "calibration": {
            "method": "one unit (weights) or one cut tensor at a time, others float",
            "bits": list(bits),
            "seeds_per_point": n_seeds,
            "seed": seed,
            "fit": "least squares through the origin: sens = sum q(b) d(b) / sum q(b)^2, "
            f"q(b) = (2^b - 1)^-2, points with d(b) > {fit_cap_pp} pp left out (beyond the "
            "budgets that matter; the two widest widths always kept), negative -> 0",
            "drops_w_pp": {names[i]: [round(v, 4) for v in d] for i, d in cal.drops_w.items()},
            "drops_a_pp": {names[i]: [round(v, 4) for v in d] for i, d in cal.drops_a.items()},
            "fit_bits_w": {names[i]: b for i, b in cal.fit_bits_w.items()},
            "fit_bits_a": {names[i]: b for i, b in cal.fit_bits_a.items()},
            "sens_w_raw": [round(v, 6) for v in cal.sens_w],
            "sens_a_raw": [round(v, 6) for v in cal.sens_a],
        },
        "safety_factor": {
            "k": k,
            "method": "smallest k >= 1 (step 0.01) such that, on calibration plans measured on "
            f"the calibration half, >= {safe_target} of (plan, budget) pairs predicted within "
            f"budgets {list(SAFE_BUDGETS_PP)} pp are measured within; stored sens = k * raw. "
            "The bootstrap_k_* figures (k refitted on resampled calibration images) show how "
            "much k depends on the set of images; they are a diagnostic, not used",
            **k_stats,
            "plans": len(plans),
            "plan_sampling": "cut uniform 1..L, bits uniform from "
            f"{list(DEFAULT_BITS)}, kept if raw prediction in [0.1, 5] pp",
            "seeds_per_plan": plan_seeds,
            "safe_rate_raw": safe_rate(pred_raw, meas),
            "safe_rate_k": safe_rate(k * pred_raw, meas),
            "mae_pp_raw": float(np.abs(pred_raw - meas).mean()),
            "mae_pp_k": float(np.abs(k * pred_raw - meas).mean()),
        },
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return model_profile(
        prof,
        "digits_cnn",
        [k * s for s in cal.sens_w],
        [k * s for s in cal.sens_a],
        "measured",
        record["test_accuracy_pct"],
        provenance,
    )


def validate_digits(
    profile: ModelProfile,
    n_in_range: int = 240,
    n_beyond: int = 40,
    n_seeds: int = 8,
    seed: int = 1000,
    in_range_pp: tuple[float, float] = (0.1, 5.0),
    beyond_pp: tuple[float, float] = (5.0, 8.0),
    rtn: bool = True,
) -> dict[str, Any]:
    """Predicted vs measured drop of fresh random plans on the validation half.

    The plans are drawn with a seed the calibration never used and measured on images the
    calibration never saw. ``mae_pp`` is over the in-range plans (predicted drop within
    ``in_range_pp``, the budgets that matter); ``mae_pp_beyond`` over the rest; spearman over
    all. Round-to-nearest measurements are reported beside the stochastic-rounding ones.
    """
    t0 = time.perf_counter()
    _, _, _, chain, sizes = digits_chains()
    sw, sa = profile.sens_w, profile.sens_a
    plans = random_plans(sw, sa, n_in_range, n_beyond, seed, in_range_pp, beyond_pp)
    pred = plans_drop_pp(sw, sa, plans)
    meas = measure_plans(chain, plans, n_seeds, seed + 1)
    inside = (pred >= in_range_pp[0]) & (pred <= in_range_pp[1])
    out: dict[str, Any] = {
        "plans": len(plans),
        "spearman": spearman(pred, meas),
        "mae_pp": float(np.abs(pred - meas)[inside].mean()),
        "safe_rate": safe_rate(pred, meas),
        "plans_in_range": int(inside.sum()),
        "in_range_pp": list(in_range_pp),
        "mae_pp_beyond": float(np.abs(pred - meas)[~inside].mean()) if (~inside).any() else None,
        "mae_pp_all": float(np.abs(pred - meas).mean()),
        "seeds_per_plan": n_seeds,
        "val_images": sizes["val"],
        "val_base_accuracy_pct": chain.base_accuracy_pct,
    }
    arrays: dict[str, Any] = {"pred": pred, "meas": meas, "plans": plans}
    if rtn:
        meas_rtn = np.array([chain.drop_pp(p, 0)[0] for p in plans])
        out["safe_rate_rtn"] = safe_rate(pred, meas_rtn)
        out["mae_pp_rtn"] = float(np.abs(pred - meas_rtn)[inside].mean())
        arrays["meas_rtn"] = meas_rtn
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return {"metrics": out, **arrays}
