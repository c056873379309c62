"""The correction for compounding: predicted drop = g(s), s the additive law's sum.

Why: the additive law (``system.accuracy``) is fitted on one tensor quantized at a time.
Quantizing many tensors together compounds: plans whose sum s is 5-8 pp were measured at up
to 15 pp. So a monotone g with g(0) = 0 is fitted on mixed plans measured on the
*calibration* half, and the planner predicts g(s) (``system.accuracy.compound_pp``; the
profile carries g as knots, ``system.evidence.Compounding``).

Candidates (each fitted by least squares on (s, measured drop) and made strictly increasing):

  linear     g = a s                     (the old safety factor alone)
  power      g = c s^gamma               (gamma on a grid 0.5-3, c in closed form)
  quadratic  g = a s + b s^2, a, b >= 0  (s (1 + s / s0) with a free slope at 0)
  pwl        piecewise linear, non-negative slopes between knots at quantiles of s (NNLS)

The choice between them is k-fold cross-validation over plans (mean absolute error on the
held-out folds, folds drawn with a seed); the chosen one is refitted on all calibration
plans, tabulated into knots over [0, the largest s seen], then scaled by the safety factor:
the smallest k >= 1 (step 0.01) such that >= ``safe_target`` of the (plan, budget) pairs
predicted within a budget (``profiling.safety.SAFE_BUDGETS_PP``) are measured within it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import nnls

from profiling.safety import SAFE_BUDGETS_PP, fit_safety_factor, safe_rate
from system.accuracy import compound_pp
from system.evidence import MAX_KNOTS, Compounding

Fn = Callable[[np.ndarray], np.ndarray]
#: The least slope any candidate keeps (pp per pp): g must be strictly increasing.
MIN_SLOPE = 1e-3
CANDIDATES = ("linear", "power", "quadratic", "pwl")


def _linear(s: np.ndarray, d: np.ndarray) -> tuple[Fn, dict[str, float]]:
    a = max(float(s @ d / max(s @ s, 1e-300)), MIN_SLOPE)
    return (lambda x: a * x), {"a": a}


def _power(s: np.ndarray, d: np.ndarray) -> tuple[Fn, dict[str, float]]:
    best = (np.inf, 1.0, 1.0)
    for gamma in np.arange(0.5, 3.0001, 0.01):
        sg = s**gamma
        c = max(float(sg @ d / max(sg @ sg, 1e-300)), MIN_SLOPE)
        sse = float(np.square(c * sg - d).sum())
        if sse < best[0]:
            best = (sse, c, float(gamma))
    _, c, gamma = best
    return (lambda x: c * np.maximum(x, 0.0) ** gamma), {"c": c, "gamma": round(gamma, 2)}


def _quadratic(s: np.ndarray, d: np.ndarray) -> tuple[Fn, dict[str, float]]:
    (a, b), _ = nnls(np.stack([s, s * s], axis=1), d)
    a = max(float(a), MIN_SLOPE)
    b = float(b)
    return (lambda x: a * x + b * x * x), {"a": a, "b": b}


def _ramps(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Basis of a piecewise-linear g with g(0) = 0: column j is x's length inside segment j."""
    lo, hi = knots[:-1], knots[1:]
    ramp = np.clip(x[:, None] - lo[None, :], 0.0, (hi - lo)[None, :])
    # past the last knot the last segment continues
    ramp[:, -1] = np.maximum(x - lo[-1], 0.0)
    return ramp


def _pwl(s: np.ndarray, d: np.ndarray, segments: int = 6) -> tuple[Fn, dict[str, Any]]:
    qs = np.quantile(s, np.linspace(0.0, 1.0, segments + 1)[1:])
    knots = np.unique(np.concatenate([[0.0], qs]))
    basis = _ramps(s, knots)
    slopes, _ = nnls(basis, d - MIN_SLOPE * s)
    slopes = slopes + MIN_SLOPE
    return (lambda x: _ramps(np.asarray(x, dtype=np.float64), knots) @ slopes), {
        "knots_s_pp": [round(float(k), 4) for k in knots],
        "slopes": [round(float(v), 4) for v in slopes]}


FITTERS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[Fn, dict[str, Any]]]] = {
    "linear": _linear, "power": _power, "quadratic": _quadratic, "pwl": _pwl}


def cv_scores(s: np.ndarray, d: np.ndarray, folds: int = 5, seed: int = 0,
              candidates: tuple[str, ...] = CANDIDATES) -> dict[str, float]:
    """Mean absolute error (pp) of each candidate on held-out folds of the plans."""
    s = np.asarray(s, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    fold = np.random.default_rng(seed).permutation(len(s)) % folds
    out = {}
    for name in candidates:
        err = np.empty(len(s))
        for f in range(folds):
            test = fold == f
            fn, _ = FITTERS[name](s[~test], d[~test])
            err[test] = np.abs(fn(s[test]) - d[test])
        out[name] = float(err.mean())
    return out


def choose(scores: dict[str, float]) -> str:
    """The candidate with the least CV error; ties go to the simpler one (CANDIDATES order)."""
    return min(scores, key=lambda n: (round(scores[n], 9), CANDIDATES.index(n)))


def tabulate(fn: Fn, s_max_pp: float, n_knots: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Knots of g over [0, s_max], denser near 0 (where the budgets are): s_j = s_max (j/n)^2."""
    if not 2 <= n_knots <= MAX_KNOTS or not s_max_pp > 0:
        raise ValueError(f"n_knots: {n_knots} must be in [2, {MAX_KNOTS}] and s_max_pp "
                         f"{s_max_pp} pp > 0")
    xs = s_max_pp * np.linspace(0.0, 1.0, n_knots) ** 2
    ys = np.maximum(np.asarray(fn(xs), dtype=np.float64), 0.0)
    ys[0] = 0.0
    # strictly increasing even where a fit is flat (MIN_SLOPE per pp of s at least)
    ys = np.maximum.accumulate(ys)
    for j in range(1, n_knots):
        ys[j] = max(ys[j], ys[j - 1] + MIN_SLOPE * (xs[j] - xs[j - 1]))
    return xs, ys


def fit_compounding(s_pp: np.ndarray, meas_pp: np.ndarray, *, folds: int = 5, seed: int = 0,
                    safe_target: float = 0.98, n_knots: int = 40,
                    extra: dict[str, Any] | None = None) -> Compounding:
    """Choose g by CV on calibration plans, refit on all, tabulate, add the safety margin."""
    s = np.asarray(s_pp, dtype=np.float64)
    d = np.asarray(meas_pp, dtype=np.float64)
    scores = cv_scores(s, d, folds, seed)
    name = choose(scores)
    fn, params = FITTERS[name](s, d)
    xs, ys = tabulate(fn, float(s.max()), n_knots)
    raw = Compounding(xs, ys, {})
    g_s = compound_pp(raw, s)                  # the planner's own evaluation of g
    k = fit_safety_factor(g_s, d, safe_target)
    fit = {
        "candidates": list(CANDIDATES),
        "cv_mae_pp": {n: round(v, 4) for n, v in scores.items()},
        "cv": f"{folds}-fold over plans, folds drawn with seed {seed}; score = mean |g(s) - "
        "measured| on the held-out fold; least error wins, ties to the simpler",
        "chosen": name,
        "params": params,
        "knots": f"{n_knots} knots at s = s_max (j / {n_knots - 1})^2, s_max = the largest s "
        "among calibration plans; g continues with the last slope beyond",
        "safety_factor": k,
        "safety": f"knots' drop_pp = k x fitted g; k = smallest >= 1 (step 0.01) with >= "
        f"{safe_target} of (plan, budget) pairs predicted within budgets "
        f"{list(SAFE_BUDGETS_PP)} pp measured within, on the calibration plans",
        "plans": len(s),
        "s_max_pp": round(float(s.max()), 4),
        "measured_max_pp": round(float(d.max()), 4),
        "safe_rate_fit": safe_rate(g_s, d),
        "safe_rate_k": safe_rate(k * g_s, d),
        "mae_pp_fit": round(float(np.abs(g_s - d).mean()), 4),
        **(extra or {}),
    }
    return Compounding(xs, k * ys, fit)
