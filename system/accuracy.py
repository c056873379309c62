"""The accuracy-degradation metric of DESIGN.md §1: additive quantization-noise power.

drop_pp(plan) = sum_{l<=p} sens_w[l] q(b_w[l]) + [0 < p < L] sens_a[p] q(b_a), q(b) = (2^b-1)^-2.
"""

from __future__ import annotations

import numpy as np

from system.bits import q_noise
from system.plan import Plan, plans_to_arrays
from system.profiles import ModelProfile

#: Absolute slack on the budget test, so that a plan whose drop equals the budget up to
#: floating-point rounding (sums taken in another order) is not called infeasible.
FEAS_TOL_PP = 1e-9


def weight_drop_pp(profile: ModelProfile, cuts: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    """Drop from quantizing the device-side weights, per plan (N,)."""
    L = profile.n_units
    on_dev = np.arange(L)[None, :] < np.asarray(cuts)[:, None]
    return np.sum(on_dev * profile.sens_w[None, :] * q_noise(wbits), axis=1)


def act_drop_pp(profile: ModelProfile, cuts: np.ndarray, abits: np.ndarray) -> np.ndarray:
    """Drop from quantizing the activation tensor sent at the cut, per plan (N,)."""
    cuts = np.asarray(cuts)
    L = profile.n_units
    inner = (cuts > 0) & (cuts < L)
    sens = profile.sens_a[np.clip(cuts - 1, 0, L - 1)]
    return np.where(inner, sens * q_noise(abits), 0.0)


def drop_pp(profile: ModelProfile, cuts: np.ndarray, wbits: np.ndarray,
            abits: np.ndarray) -> np.ndarray:
    """Predicted top-1 drop in percentage points, per plan (N,)."""
    return weight_drop_pp(profile, cuts, wbits) + act_drop_pp(profile, cuts, abits)


def plan_drop_pp(profile: ModelProfile, plan: Plan) -> float:
    """Predicted drop of one plan."""
    c, w, a = plans_to_arrays([plan], profile.n_units)
    return float(drop_pp(profile, c, w, a)[0])


def is_feasible(drop: np.ndarray | float, eps_pp: float) -> np.ndarray:
    """Within budget, up to :data:`FEAS_TOL_PP` of rounding."""
    return np.asarray(drop) <= eps_pp + FEAS_TOL_PP
