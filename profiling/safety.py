"""Random mixed plans, the safe rate and the safety factor of the accuracy law.

Why: the additive law fitted on one-unit points under-predicts some mixed plans (errors of
several units compound), and a plan predicted feasible must be measured feasible. So random
mixed plans are measured, and the factor k >= 1 is the smallest multiplier of all
sensitivities (or of the correction g, ``profiling.compounding``) such that, over budgets
{0.5, 1, 2, 5} pp, at least a target share of the (plan, budget) pairs predicted within a
budget are measured within it. Predictions are the planner's own (``system.accuracy``) on the
planner's own plans (``system.plan.Plan``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from system.accuracy import plans_drop_pp
from system.bits import DEFAULT_BITS
from system.plan import NO_ACT_BITS, Plan

SAFE_BUDGETS_PP = (0.5, 1.0, 2.0, 5.0)


def random_plans(
    sens_w: Sequence[float] | np.ndarray,
    sens_a: Sequence[float] | np.ndarray,
    n_in_range: int,
    n_beyond: int,
    seed: int,
    in_range_pp: tuple[float, float] = (0.1, 5.0),
    beyond_pp: tuple[float, float] = (5.0, 10.0),
    bit_set: Sequence[int] = DEFAULT_BITS,
    max_draws: int = 2_000_000,
) -> list[Plan]:
    """Random mixed plans (cut 1..L, each bit width uniform from ``bit_set``), kept by range.

    Rejection sampling on the predicted drop: ``n_in_range`` plans with predicted drop in
    ``in_range_pp`` (the budgets that matter) and ``n_beyond`` in ``beyond_pp``. Duplicates
    are skipped.
    """
    rng = np.random.default_rng(seed)
    sw = np.asarray(sens_w, dtype=np.float64)
    sa = np.asarray(sens_a, dtype=np.float64)
    L = len(sw)
    inside: list[Plan] = []
    beyond: list[Plan] = []
    seen: set[Plan] = set()
    for _ in range(max_draws):
        if len(inside) >= n_in_range and len(beyond) >= n_beyond:
            break
        cut = int(rng.integers(1, L + 1))
        wb = tuple(int(b) for b in rng.choice(bit_set, size=cut))
        ab = int(rng.choice(bit_set)) if cut < L else NO_ACT_BITS
        plan = Plan(cut, wb, ab)
        if plan in seen:
            continue
        seen.add(plan)
        p = float(plans_drop_pp(sw, sa, [plan])[0])
        if in_range_pp[0] <= p <= in_range_pp[1] and len(inside) < n_in_range:
            inside.append(plan)
        elif beyond_pp[0] < p <= beyond_pp[1] and len(beyond) < n_beyond:
            beyond.append(plan)
    return inside + beyond


def _draw(rng: np.random.Generator, L: int, bit_set: Sequence[int]) -> Plan:
    """One random mixed plan: cut uniform in 1..L, every width uniform from ``bit_set``."""
    cut = int(rng.integers(1, L + 1))
    wb = tuple(int(b) for b in rng.choice(bit_set, size=cut))
    ab = int(rng.choice(bit_set)) if cut < L else NO_ACT_BITS
    return Plan(cut, wb, ab)


def stratified_plans(
    sens_w: Sequence[float] | np.ndarray,
    sens_a: Sequence[float] | np.ndarray,
    edges_pp: Sequence[float],
    per_bin: Sequence[int],
    seed: int,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    bit_set: Sequence[int] = DEFAULT_BITS,
    max_draws: int = 2_000_000,
) -> list[Plan]:
    """Random mixed plans, ``per_bin[j]`` with prediction in (edges[j], edges[j+1]].

    Why: uniform widths put most plans at tiny or huge drops; a correction fitted (or
    checked) across 0-15 pp needs plans spread over that range. The prediction binned on is
    ``predict(s)`` (default the additive sum s itself). Duplicates are skipped; a bin that
    stays short after ``max_draws`` draws is left short.
    """
    rng = np.random.default_rng(seed)
    sw = np.asarray(sens_w, dtype=np.float64)
    sa = np.asarray(sens_a, dtype=np.float64)
    edges = np.asarray(edges_pp, dtype=np.float64)
    want = np.asarray(per_bin, dtype=np.int64)
    if len(want) != len(edges) - 1:
        raise ValueError(f"per_bin: {len(want)} counts for {len(edges) - 1} bins")
    have = np.zeros_like(want)
    out: list[Plan] = []
    seen: set[Plan] = set()
    batch = 512
    for _ in range(max_draws // batch):
        if (have >= want).all():
            break
        plans = [_draw(rng, len(sw), bit_set) for _ in range(batch)]
        pred = plans_drop_pp(sw, sa, plans)
        if predict is not None:
            pred = predict(pred)
        bins = np.searchsorted(edges, pred, side="left") - 1
        for plan, j in zip(plans, bins, strict=True):
            if 0 <= j < len(want) and have[j] < want[j] and plan not in seen:
                seen.add(plan)
                have[j] += 1
                out.append(plan)
    return out


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
    """Rank correlation of predicted and measured drops."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
