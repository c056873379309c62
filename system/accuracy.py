"""The accuracy-degradation metric of DESIGN.md §1: additive quantization-noise power,
corrected for compounding, over the widths the profile's evidence backs.

s(plan) = sum_{l<=p} sens_w[l] q(b_w[l]) + [0 < p < L] sens_a[p] q(b_a), q(b) = (2^b-1)^-2;
drop_pp(plan) = g(s), g the profile's :class:`~system.evidence.Compounding` (identity
without one); a width below its tensor's evidence floor costs an infinite drop.

The law is written once, on per-unit sensitivity arrays, so that a shipped profile and a
calibration that has just fitted its sensitivities (no profile yet) predict with the same sum.
The planner works with additive sums (per-unit tables, knapsacks) and tests them against
:func:`drop_limit_pp`, the budget mapped through g^-1: the same test as g(s) <= budget, since
g is strictly increasing.
"""

from __future__ import annotations

import numpy as np

from system.bits import q_noise
from system.evidence import Compounding, unbacked
from system.plan import Plan, plans_to_arrays
from system.profiles import ModelProfile

#: Absolute slack on the budget test, so that a plan whose drop equals the budget up to
#: floating-point rounding (sums taken in another order) is not called infeasible.
FEAS_TOL_PP = 1e-9


def _noise(sens: np.ndarray, bits: np.ndarray, floors: np.ndarray | None) -> np.ndarray:
    """sens q(b), and inf where b is below the tensor's evidence floor (no claim there)."""
    d = sens * q_noise(bits)
    return d if floors is None else np.where(unbacked(bits, floors), np.inf, d)


def _weight_drop(sens_w: np.ndarray, cuts: np.ndarray, wbits: np.ndarray,
                 floors: np.ndarray | None = None) -> np.ndarray:
    on_dev = np.arange(len(sens_w))[None, :] < np.asarray(cuts)[:, None]
    return np.where(on_dev, _noise(sens_w[None, :], np.asarray(wbits), floors), 0.0).sum(axis=1)


def _act_drop(sens_a: np.ndarray, cuts: np.ndarray, abits: np.ndarray,
              floors: np.ndarray | None = None) -> np.ndarray:
    cuts = np.asarray(cuts)
    L = len(sens_a)
    inner = (cuts > 0) & (cuts < L)
    at = np.minimum(np.maximum(cuts - 1, 0), L - 1)
    return np.where(inner, _noise(sens_a[at], np.asarray(abits), None if floors is None
                                  else floors[at]), 0.0)


def weight_drop_pp(profile: ModelProfile, cuts: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    """Additive drop from quantizing the device-side weights, per plan (N,)."""
    return _weight_drop(profile.sens_w, cuts, wbits, profile.width_floors[0])


def act_drop_pp(profile: ModelProfile, cuts: np.ndarray, abits: np.ndarray) -> np.ndarray:
    """Additive drop from quantizing the activation tensor sent at the cut, per plan (N,)."""
    return _act_drop(profile.sens_a, cuts, abits, profile.width_floors[1])


def compound_pp(compounding: Compounding | None, s_pp: np.ndarray | float) -> np.ndarray:
    """g(s): the predicted drop of plans whose additive sum is ``s_pp`` (identity if None)."""
    s = np.asarray(s_pp, dtype=np.float64)
    return s if compounding is None else compounding(s)


def drop_pp(profile: ModelProfile, cuts: np.ndarray, wbits: np.ndarray,
            abits: np.ndarray) -> np.ndarray:
    """Predicted top-1 drop in percentage points, per plan (N,): g of the additive sum."""
    s = weight_drop_pp(profile, cuts, wbits) + act_drop_pp(profile, cuts, abits)
    return compound_pp(profile.compounding, s)


def plans_drop_pp(sens_w: np.ndarray | list[float], sens_a: np.ndarray | list[float],
                  plans: list[Plan]) -> np.ndarray:
    """Additive sum s of each plan (N,) from sensitivities in pp per unit of q(b) (L each),
    every width taken at the law (a calibration's view, before any evidence floor or g)."""
    sw = np.asarray(sens_w, dtype=np.float64)
    sa = np.asarray(sens_a, dtype=np.float64)
    cuts, wbits, abits = plans_to_arrays(plans, len(sw))
    return _weight_drop(sw, cuts, wbits) + _act_drop(sa, cuts, abits)


def plan_drop_pp(profile: ModelProfile, plan: Plan) -> float:
    """Predicted drop of one plan."""
    c, w, a = plans_to_arrays([plan], profile.n_units)
    return float(drop_pp(profile, c, w, a)[0])


def extrapolated_tensors(profile: ModelProfile, plan: Plan) -> list[str]:
    """The tensors a plan quantizes below the widths their sensitivity was measured at
    (``unit.weight@2``, ``unit.output@3``): empty unless the profile asks to extrapolate."""
    fw, fa = (f.tolist() for f in profile.evidence_floors)      # scalars: no numpy per unit
    names = profile.unit_names
    out = [f"{names[i]}.weight@{b}" for i, b in enumerate(plan.weight_bits)
           if unbacked(b, fw[i])]
    if 0 < plan.cut < profile.n_units and unbacked(plan.act_bits, fa[plan.cut - 1]):
        out.append(f"{names[plan.cut - 1]}.output@{plan.act_bits}")
    return out


def drop_limit_pp(eps_pp: float, compounding: Compounding | None = None) -> float:
    """The largest additive sum a budget accepts: the one feasibility threshold,
    g^-1(eps + slack). A plain float for per-plan loops, where a numpy call per test would
    dominate; arrays work elementwise."""
    if compounding is None:
        return eps_pp + FEAS_TOL_PP
    limit = compounding.inverse(np.asarray(eps_pp) + FEAS_TOL_PP)
    return float(limit) if np.ndim(limit) == 0 else limit


def within_limit(sum_pp: np.ndarray | float, eps_pp: np.ndarray | float,
                 compounding: Compounding | None) -> np.ndarray:
    """An additive sum (a plan's table terms added) within budget: the planner's test,
    elementwise over arrays."""
    return np.asarray(sum_pp) <= drop_limit_pp(np.asarray(eps_pp), compounding)


def is_feasible(drop: np.ndarray | float, eps_pp: np.ndarray | float) -> np.ndarray:
    """A predicted drop (after g) within budget, up to :data:`FEAS_TOL_PP` of rounding;
    elementwise over arrays."""
    return np.asarray(drop) <= drop_limit_pp(np.asarray(eps_pp))
