"""Quantizers, sensitivity calibration, the safety factor and validation plans.

Why: the planner's accuracy model (DESIGN.md §1) is the additive law

    drop_pp(plan) = sum_{l<=p} sens_w[l] * q(b_w[l]) + [0<p<L] sens_a[p] * q(b_a),
    q(b) = (2^b - 1)^-2,

and its sensitivities must be measured on a real network and real data, then checked on
plans that quantize many units at once. Everything here works on a network given as a chain
of unit modules (``profiler.split_units`` makes one from any traceable model; the digits CNN
is one already) and a labelled held-out set.

Quantizers (chosen so the noise power follows q(b) exactly when nothing clips):

* weights, per output channel, symmetric: 2^b levels spanning [-m_c, +m_c] with
  m_c = max |w_c| and step 2 m_c / (2^b - 1) (a mid-rise grid: symmetric about 0, 0 itself
  is not a level). Only weight tensors of rank >= 2 (conv, linear) are quantized; biases stay
  in float, as integer kernels keep them at 32 bits.
* the activation tensor at the cut, per tensor, affine: 2^b levels spanning [lo, hi], the
  minimum and maximum of that request's tensor (step (hi - lo) / (2^b - 1)); lo and hi travel
  with the tensor (64 bits, negligible next to out_elems * b).
* 32 bits means unquantized; 16 bits is quantized with the same grids.

Measured drop: top-1 accuracy of the float network minus top-1 accuracy of the quantized
network, in percentage points, on a held-out set. With ~450 images and ~98% accuracy a drop
is decided by a handful of images near the decision boundary: one image is 0.22 pp, and two
disjoint halves disagree by tens of percent on the same plan. Two things make it smoother and
keep it top-1:

* **stochastic rounding**, averaged over ``n_seeds`` independent rounding draws (round up with
  probability equal to the fractional part). Each draw is a real on-grid quantized network and
  its drop a real top-1 drop; the mean estimates the expected drop of a plan, which is what the
  planner predicts. Stochastic rounding has about twice the noise power of round-to-nearest,
  so the figures are conservative for round-to-nearest deployments (the validation reports
  round-to-nearest figures beside them).
* **three views of each held-out image** (``digits.eval_views``: shifted -1, 0, +1 pixel
  horizontally), tripling the top-1 decisions per half.

Fit: for each unit, the drops measured at several bit widths b are fitted by least squares
through the origin, sens = sum_b q(b) d(b) / sum_b q(b)^2, using only the points with
d(b) <= ``fit_cap_pp`` (5 pp: the largest budget that matters; beyond it the law is not
needed and a few collapsed points would dominate the fit) and at least the widest two widths
measured; negative estimates are clipped to 0.

Safety factor: the additive law fitted on one-unit points under-predicts some mixed plans
(errors of several units compound), and a plan predicted feasible must be measured feasible.
So 600 random mixed plans are measured on the *calibration* data, and the factor k >= 1 is
the smallest multiplier of all sensitivities such that, over budgets {0.5, 1, 2} pp, at
least ``safe_target`` (0.98) of the (plan, budget) pairs predicted within a budget are
measured within it. The profile stores k * sens. Why 0.98 and 600 plans: which few plans
come out unsafe depends on the set of images, so a target just at the 0.97 wanted on unseen
images is too little, while a large k (e.g. the 90% bootstrap quantile of k: 2.23 in the
shipped profile's provenance) inflates the mean error, which grows with k; more plans make
the estimate of k less noisy. The trade-off on validation
plans is printed by ``benchmarks/bench_accuracy_model.py`` (predictions scaled by 0.8-1.25).
The bootstrap spread of k is recorded as a diagnostic. Validation plans are drawn
afresh and measured on the *validation* half, which neither the fit nor k has seen.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from profiling.profiler import q_law

BIT_SET = (2, 3, 4, 6, 8, 16, 32)
CAL_BITS = (2, 3, 4, 5, 6, 8)
SAFE_BUDGETS_PP = (0.5, 1.0, 2.0)


# --------------------------------------------------------------------------- quantizers
def _round(u: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Round to nearest (gen None) or stochastically (floor(u + U[0,1)))."""
    if gen is None:
        return torch.round(u)
    return torch.floor(u + torch.rand(u.shape, generator=gen, dtype=u.dtype))


def quantize_weight(w: torch.Tensor, bits: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Per-output-channel symmetric quantization (2^b levels over [-max|w_c|, +max|w_c|])."""
    if bits >= 32:
        return w
    levels = 2.0**bits - 1.0
    m = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-12)
    m = m.view(-1, *([1] * (w.dim() - 1)))
    step = 2.0 * m / levels
    k = _round((w + m) / step, gen).clamp(0.0, levels)
    return k * step - m


def quantize_activation(
    x: torch.Tensor, bits: int, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Per-tensor affine quantization over [min, max] of each request's tensor (dim 0 = batch)."""
    if bits >= 32:
        return x
    levels = 2.0**bits - 1.0
    flat = x.flatten(1)
    lo = flat.amin(dim=1).view(-1, *([1] * (x.dim() - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (x.dim() - 1)))
    step = ((hi - lo) / levels).clamp_min(1e-12)
    k = _round((x - lo) / step, gen).clamp(0.0, levels)
    return k * step + lo


def quantizable_weights(unit: nn.Module) -> list[nn.Parameter]:
    """The weight tensors a plan quantizes: parameters of rank >= 2 (conv and linear)."""
    return [p for p in unit.parameters() if p.dim() >= 2]


@contextmanager
def quantized_unit(unit: nn.Module, bits: int, gen: torch.Generator | None = None):
    """Temporarily replace the unit's weights by their quantized values, then restore them."""
    params = quantizable_weights(unit) if bits < 32 else []
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                p.copy_(quantize_weight(p, bits, gen))
        yield unit
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


# --------------------------------------------------------------------------- measurement
@dataclass(frozen=True)
class Plan:
    """A partition plan: cut p in 0..L, weight bits of units 1..p, activation bits at the cut."""

    cut: int
    w_bits: tuple[int, ...]
    a_bits: int

    def as_json(self) -> dict[str, Any]:
        return {"cut": self.cut, "w_bits": list(self.w_bits), "a_bits": self.a_bits}


class Chain:
    """A network as a chain of units plus a labelled data set, with float activations cached.

    Caching the float output of every unit means a plan whose first quantized operation is
    at unit i only runs units i..L, which makes one-unit-at-a-time calibration cheap.
    """

    def __init__(self, units: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> None:
        self.units = list(units)
        for u in self.units:
            u.eval()
        self.y = y
        self.acts: list[torch.Tensor] = [x]
        with torch.no_grad():
            for u in self.units:
                self.acts.append(u(self.acts[-1]))
        self.base_vec = self.acts[-1].argmax(1) == y
        self.base_correct = int(self.base_vec.sum())

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def base_accuracy_pct(self) -> float:
        return 100.0 * self.base_correct / len(self.y)

    def has_weights(self, i: int) -> bool:
        return bool(quantizable_weights(self.units[i]))

    def _correct(self, plan: Plan, gen: torch.Generator | None) -> int:
        return int(self._correct_vec(plan, gen).sum())

    def _correct_vec(self, plan: Plan, gen: torch.Generator | None) -> torch.Tensor:
        """Per image: is the quantized network's top-1 right?"""
        L = self.n_units
        quant_w = [i for i in range(plan.cut) if plan.w_bits[i] < 32 and self.has_weights(i)]
        quant_a = 0 < plan.cut < L and plan.a_bits < 32
        starts = [*quant_w, *([plan.cut] if quant_a else [])]
        if not starts:
            return self.base_vec
        start = min(starts)
        h = self.acts[start]
        with torch.no_grad():
            if quant_a and start == plan.cut:
                h = quantize_activation(h, plan.a_bits, gen)
            for i in range(start, L):
                if i in quant_w:
                    with quantized_unit(self.units[i], plan.w_bits[i], gen):
                        h = self.units[i](h)
                else:
                    h = self.units[i](h)
                if quant_a and i == plan.cut - 1:
                    h = quantize_activation(h, plan.a_bits, gen)
        return h.argmax(1) == self.y

    def loss_per_image(self, plan: Plan, n_seeds: int, seed: int = 0) -> np.ndarray:
        """Per image, float-correct minus quantized-correct, averaged over rounding seeds.

        Its mean times 100 is the plan's mean drop in pp (the same draws as ``drop_pp``);
        kept per image so that the calibration set can be bootstrapped.
        """
        acc = torch.zeros(len(self.y), dtype=torch.float64)
        for s in range(n_seeds):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + s)
            acc += self._correct_vec(plan, gen).double()
        return (self.base_vec.double() - acc / n_seeds).numpy()

    def drop_pp(self, plan: Plan, n_seeds: int, seed: int = 0) -> np.ndarray:
        """Top-1 drop (pp) of the plan for each of ``n_seeds`` stochastic-rounding draws.

        ``n_seeds = 0`` means one round-to-nearest evaluation instead.
        """
        n = len(self.y)
        if n_seeds == 0:
            return np.array([100.0 * (self.base_correct - self._correct(plan, None)) / n])
        out = np.empty(n_seeds)
        for s in range(n_seeds):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + s)
            out[s] = 100.0 * (self.base_correct - self._correct(plan, gen)) / n
        return out


def one_unit_plan(L: int, unit: int, w_bits: int | None = None, a_bits: int | None = None) -> Plan:
    """Plan quantizing only unit ``unit``'s weights (cut L) or only the tensor after it."""
    if w_bits is not None:
        return Plan(L, tuple(w_bits if i == unit else 32 for i in range(L)), 32)
    assert a_bits is not None
    return Plan(unit + 1, tuple([32] * (unit + 1)), a_bits)


# --------------------------------------------------------------------------- calibration
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
    q = np.array([q_law(bits[i]) for i in used])
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
    for i in range(L):
        if chain.has_weights(i):
            d = [float(chain.drop_pp(one_unit_plan(L, i, w_bits=b), n_seeds, seed).mean()) for b in bits]
            cal.drops_w[i] = d
            s, used = fit_through_origin(bits, d, fit_cap_pp)
            cal.fit_bits_w[i] = used
            cal.sens_w.append(s)
        else:
            cal.sens_w.append(0.0)
        if i < L - 1:
            d = [float(chain.drop_pp(one_unit_plan(L, i, a_bits=b), n_seeds, seed).mean()) for b in bits]
            cal.drops_a[i] = d
            s, used = fit_through_origin(bits, d, fit_cap_pp)
            cal.fit_bits_a[i] = used
            cal.sens_a.append(s)
        else:
            cal.sens_a.append(0.0)
    cal.seconds = time.perf_counter() - t0
    return cal


# --------------------------------------------------------------------------- plans
def predict_pp(sens_w: Sequence[float], sens_a: Sequence[float], plan: Plan) -> float:
    """DESIGN.md §1 additive law for a plan (0-based unit lists)."""
    L = len(sens_w)
    d = sum(sens_w[i] * q_law(plan.w_bits[i]) for i in range(plan.cut))
    if 0 < plan.cut < L:
        d += sens_a[plan.cut - 1] * q_law(plan.a_bits)
    return float(d)


def random_plans(
    sens_w: Sequence[float],
    sens_a: Sequence[float],
    n_in_range: int,
    n_beyond: int,
    seed: int,
    in_range_pp: tuple[float, float] = (0.1, 5.0),
    beyond_pp: tuple[float, float] = (5.0, 10.0),
    bit_set: Sequence[int] = BIT_SET,
    max_draws: int = 2_000_000,
) -> list[Plan]:
    """Random mixed plans (cut 1..L, each bit width uniform from ``bit_set``), kept by range.

    Rejection sampling on the predicted drop: ``n_in_range`` plans with predicted drop in
    ``in_range_pp`` (the budgets that matter) and ``n_beyond`` in ``beyond_pp``. Duplicates
    are skipped.
    """
    rng = np.random.default_rng(seed)
    L = len(sens_w)
    inside: list[Plan] = []
    beyond: list[Plan] = []
    seen: set[Plan] = set()
    for _ in range(max_draws):
        if len(inside) >= n_in_range and len(beyond) >= n_beyond:
            break
        cut = int(rng.integers(1, L + 1))
        wb = [int(b) for b in rng.choice(bit_set, size=cut)] + [32] * (L - cut)
        ab = int(rng.choice(bit_set)) if cut < L else 32
        plan = Plan(cut, tuple(wb), ab)
        if plan in seen:
            continue
        seen.add(plan)
        p = predict_pp(sens_w, sens_a, plan)
        if in_range_pp[0] <= p <= in_range_pp[1] and len(inside) < n_in_range:
            inside.append(plan)
        elif beyond_pp[0] < p <= beyond_pp[1] and len(beyond) < n_beyond:
            beyond.append(plan)
    return inside + beyond


def safe_rate(pred: np.ndarray, meas: np.ndarray, budgets: Sequence[float] = SAFE_BUDGETS_PP) -> float:
    """Share of (plan, budget) pairs predicted within the budget that are measured within it."""
    hits = total = 0
    for b in budgets:
        ok = pred <= b
        total += int(ok.sum())
        hits += int((meas[ok] <= b).sum())
    return float(hits / total) if total else float("nan")


def fit_safety_factor(
    pred_raw: np.ndarray,
    meas: np.ndarray,
    target: float = 0.99,
    budgets: Sequence[float] = SAFE_BUDGETS_PP,
) -> float:
    """Smallest k >= 1 (grid of 0.01) with safe_rate(k * pred, meas) >= target."""
    for k in np.arange(1.0, 5.0001, 0.01):
        if safe_rate(k * pred_raw, meas, budgets) >= target:
            return float(round(k, 2))
    return 5.0


def safety_factor_spread(
    pred_raw: np.ndarray,
    loss: np.ndarray,
    groups: int,
    target: float,
    n_boot: int = 200,
    seed: int = 0,
    budgets: Sequence[float] = SAFE_BUDGETS_PP,
) -> dict[str, float]:
    """How much the safety factor depends on which images the calibration set holds.

    ``loss`` is plans x evaluations (``Chain.loss_per_image``); evaluation j belongs to
    image j % groups (the views of one image are resampled together). The images are
    resampled with replacement ``n_boot`` times and ``fit_safety_factor`` is run on each.
    A diagnostic recorded in the provenance: the spread is wide because a few images near
    the decision boundary decide which plans are unsafe.
    """
    rng = np.random.default_rng(seed)
    img = np.arange(loss.shape[1]) % groups
    per_img = np.zeros((loss.shape[0], groups))
    np.add.at(per_img.T, img, loss.T)
    views = np.bincount(img, minlength=groups)
    ks = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, groups, groups), minlength=groups)
        meas = 100.0 * (per_img @ counts) / float(views @ counts)
        ks.append(fit_safety_factor(pred_raw, meas, target, budgets))
    q10, q50, q90 = (float(v) for v in np.quantile(ks, [0.1, 0.5, 0.9]))
    return {"bootstrap_k_q10": q10, "bootstrap_k_median": q50, "bootstrap_k_q90": q90,
            "n_boot": n_boot}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def measure_plans(chain: Chain, plans: Sequence[Plan], n_seeds: int, seed: int) -> np.ndarray:
    """Mean stochastic-rounding drop (pp) of each plan."""
    return np.array([chain.drop_pp(p, n_seeds, seed + 7 * k).mean() for k, p in enumerate(plans)])


def q_table(bits: Sequence[int]) -> list[float]:
    return [q_law(b) for b in bits]




# --------------------------------------------------------------------------- digits CNN
def digits_chains(seed: int = 0) -> tuple[Any, list[nn.Module], Chain, Chain, dict[str, int]]:
    """Profile of the committed digits CNN, its units, and calibration / validation chains."""
    from profiling import digits
    from profiling.profiler import profile_module, split_units

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
    log: Any = None,
) -> dict[str, Any]:
    """Measure the digits CNN's sensitivities and safety factor; returns its profile dict.

    Everything here uses the calibration half of the held-out data only.
    """
    import platform

    from profiling import digits
    from profiling.profiler import profile_dict

    t0 = time.perf_counter()
    prof, _, chain, _, sizes = digits_chains()
    cal = calibrate(chain, bits, n_seeds, seed, fit_cap_pp)
    if log:
        log(f"one-unit calibration: {cal.seconds:.0f} s")
    plans = random_plans(cal.sens_w, cal.sens_a, n_cal_plans, 0, seed=seed + 1)
    pred_raw = np.array([predict_pp(cal.sens_w, cal.sens_a, p) for p in plans])
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
            f"{list(BIT_SET)}, kept if raw prediction in [0.1, 5] pp",
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
    return profile_dict(
        prof,
        "digits_cnn",
        [k * s for s in cal.sens_w],
        [k * s for s in cal.sens_a],
        "measured",
        record["test_accuracy_pct"],
        provenance,
    )


def validate_digits(
    profile: dict[str, Any],
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
    sw = [u["sens_w"] for u in profile["units"]]
    sa = [u["sens_a"] for u in profile["units"]]
    plans = random_plans(sw, sa, n_in_range, n_beyond, seed, in_range_pp, beyond_pp)
    pred = np.array([predict_pp(sw, sa, p) for p in plans])
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
