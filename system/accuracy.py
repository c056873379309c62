"""The accuracy-degradation metric of DESIGN.md §1: additive quantization-noise power.

drop_pp(plan) = sum_{l<=p} sens_w[l] q(b_w[l]) + [0 < p < L] sens_a[p] q(b_a), q(b) = (2^b-1)^-2.

The law is written once, on per-unit sensitivity arrays, so that a shipped profile and a
calibration that has just fitted its sensitivities (no profile yet) predict with the same sum.
"""

from __future__ import annotations

import numpy as np

from system.bits import q_noise
from system.plan import Plan, plans_to_arrays
from system.profiles import ModelProfile

#: Absolute slack on the budget test, so that a plan whose drop equals the budget up to
#: floating-point rounding (sums taken in another order) is not called infeasible.
FEAS_TOL_PP = 1e-9


def _weight_drop(sens_w: np.ndarray, cuts: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    on_dev = np.arange(len(sens_w))[None, :] < np.asarray(cuts)[:, None]
    return np.sum(on_dev * sens_w[None, :] * q_noise(wbits), axis=1)


def _act_drop(sens_a: np.ndarray, cuts: np.ndarray, abits: np.ndarray) -> np.ndarray:
    cuts = np.asarray(cuts)
    L = len(sens_a)
    inner = (cuts > 0) & (cuts < L)
    sens = sens_a[np.clip(cuts - 1, 0, L - 1)]
    return np.where(inner, sens * q_noise(abits), 0.0)


def weight_drop_pp(profile: ModelProfile, cuts: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    """Drop from quantizing the device-side weights, per plan (N,)."""
    return _weight_drop(profile.sens_w, cuts, wbits)


def act_drop_pp(profile: ModelProfile, cuts: np.ndarray, abits: np.ndarray) -> np.ndarray:
    """Drop from quantizing the activation tensor sent at the cut, per plan (N,)."""
    return _act_drop(profile.sens_a, cuts, abits)


def drop_pp(profile: ModelProfile, cuts: np.ndarray, wbits: np.ndarray,
            abits: np.ndarray) -> np.ndarray:
    """Predicted top-1 drop in percentage points, per plan (N,)."""
    return weight_drop_pp(profile, cuts, wbits) + act_drop_pp(profile, cuts, abits)


def plans_drop_pp(sens_w: np.ndarray | list[float], sens_a: np.ndarray | list[float],
                  plans: list[Plan]) -> np.ndarray:
    """Predicted drop of each plan (N,) from sensitivities in pp per unit of q(b) (L each)."""
    sw = np.asarray(sens_w, dtype=np.float64)
    sa = np.asarray(sens_a, dtype=np.float64)
    cuts, wbits, abits = plans_to_arrays(plans, len(sw))
    return _weight_drop(sw, cuts, wbits) + _act_drop(sa, cuts, abits)


def plan_drop_pp(profile: ModelProfile, plan: Plan) -> float:
    """Predicted drop of one plan."""
    c, w, a = plans_to_arrays([plan], profile.n_units)
    return float(drop_pp(profile, c, w, a)[0])


def drop_limit_pp(eps_pp: float) -> float:
    """The largest drop a budget accepts: the one feasibility threshold. A plain float for
    per-plan loops, where a numpy call per test would dominate; arrays work elementwise."""
    return eps_pp + FEAS_TOL_PP


def is_feasible(drop: np.ndarray | float, eps_pp: np.ndarray | float) -> np.ndarray:
    """Within budget, up to :data:`FEAS_TOL_PP` of rounding; elementwise over arrays."""
    return np.asarray(drop) <= drop_limit_pp(np.asarray(eps_pp))
