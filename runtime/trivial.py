"""Fixed plans as a floor under every decision: no plan returned costs more than the best of them.

A policy far outside what it was trained on can pick a plan much worse than an obvious one
(the raw input up a slow link where the device alone would do). The fixed plans are every
cut at fp32 (server-only, device-only and Neurosurgeon's best fp32 cut among them) and
every cut at uniform 16 and 8 bits (device-only at 8 bits among them) where the budget
allows; the dispatcher returns the cheapest of those and the guarded policy plan.

Their costs take microseconds because cost is linear in a request's prices (DESIGN.md §1):
a plan is a handful of request-free quantities (head bits shipped, device FLOPs at each
bit width, bits sent up, whether there is an uplink or a download, server FLOPs), and
``cost = quantities . prices`` with the request's prices. This is
:func:`system.cost.unit_tables`' regrouping of the same terms, tested against
:func:`system.cost.evaluate_arrays`; it compares plans and decides nothing else.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from runtime import features as rf
from system.bits import KERNEL_WIDTHS, kernel_kappa
from system.cost import bits_at_cut, drop_sum_pp
from system.fields import WIDTH_FIELDS
from system.profiles import ModelProfile

#: Uniform widths of the fixed plans (those in the bundle's bit set).
WIDTHS = (32, 16, 8)
#: A fixed plan replaces the policy's only if cheaper by more than this share (rounding).
REL_TOL = 1e-9
_I = {name: rf.FIELDS.index(name) for name in rf.SCALAR_FIELDS}
_J = [f.name for f in WIDTH_FIELDS].index("dev_kappa")
_KAPPA = list(range(len(rf.SCALAR_FIELDS) + _J * len(KERNEL_WIDTHS),
                    len(rf.SCALAR_FIELDS) + (_J + 1) * len(KERNEL_WIDTHS)))
_CACHE_MAX = 4096
div = rf._div            # a quotient whose divisor can underflow to 0: inf or nan, as numpy

Action = tuple[int, list[int], int]


class TrivialPlans:
    """The fixed plans of one profile and bit set, and the cost of any plan for a request."""

    def __init__(self, profile: ModelProfile, bits: tuple[int, ...], weight_drop_rows: list[list[float]],
                 act_drop_rows: list[list[float]]) -> None:
        L, K = profile.n_units, len(bits)
        self.L, self.bits = L, np.asarray(bits)
        self._params = profile.params.astype(np.float64).tolist()
        self._flops = (2.0 * profile.macs.astype(np.float64)).tolist()
        self._bits_f = [float(b) for b in bits]
        k32 = bits.index(32)
        cuts = np.arange(L + 1)
        srv = np.concatenate([np.cumsum((2.0 * profile.macs)[::-1])[::-1], [0.0]])
        self._srv: list[float] = srv.tolist()
        self._up: list[list[float]] = bits_at_cut(
            profile, np.repeat(cuts, K), np.tile(self.bits, L + 1)).reshape(L + 1, K).tolist()
        actions: list[Action] = []
        for b in (w for w in WIDTHS if w in bits):
            k = bits.index(b)
            for p in range(0 if b == 32 else 1, L + 1):
                actions.append((p, [k] * p, k if 0 < p < L else k32))
        drops = [drop_sum_pp([weight_drop_rows[i][k] for i, k in enumerate(w)], act_drop_rows[p][a])
                 for p, w, a in actions]
        order = sorted(range(len(actions)), key=drops.__getitem__)    # stable: fp32 first
        #: the fixed plans by increasing drop: those within a budget are a prefix
        self.actions = [actions[i] for i in order]
        self.drops: list[float] = [drops[i] for i in order]
        self.Q = np.asarray([self.quantities(a) for a in self.actions])
        self._kap: dict[tuple[float, ...], list[float]] = {}

    def quantities(self, action: Action) -> list[float]:
        """[head bits, device FLOPs at each bit width, bits up, uplink?, download?, server FLOPs]."""
        p, w, a = action
        head = 0.0
        dev = [0.0] * len(self._bits_f)
        for i, k in enumerate(w):
            head += self._params[i] * self._bits_f[k]
            dev[k] += self._flops[i]
        return [head, *dev, self._up[p][a], float(p < self.L), float(p > 0), self._srv[p]]

    def prices(self, t: tuple[float, ...]) -> list[float]:
        """A request's price of each quantity (seconds of cost per unit), from its flat tuple."""
        beta = t[_I["beta_s_per_j"]]
        w_rx = 1.0 + beta * t[_I["p_rx_w"]]
        w_comp = 1.0 + beta * t[_I["p_comp_w"]]
        w_tx = 1.0 + beta * t[_I["p_tx_w"]]
        w_idle = 1.0 + beta * t[_I["p_idle_w"]]
        reuse, rtt = t[_I["reuse"]], t[_I["rtt_s"]]
        kappa = tuple(t[j] for j in _KAPPA)
        kap = self._kap.get(kappa)
        if kap is None:
            if len(self._kap) >= _CACHE_MAX:
                self._kap.clear()
            kap = self._kap[kappa] = kernel_kappa(self.bits, np.asarray(kappa)).tolist()
        f_dev = t[_I["dev_flops_per_s"]]
        return [div(w_rx, t[_I["down_bps"]] * reuse), *[div(w_comp, f_dev * k) for k in kap],
                div(w_tx, t[_I["up_bps"]]), rtt / 2.0 * w_tx, div(rtt, reuse) * w_rx,
                div(w_idle, t[_I["srv_flops_per_s"]] * t[_I["srv_load"]])]

    def cost(self, action: Action, prices: list[float]) -> float:
        """The cost of one plan for the request whose prices these are."""
        return sum(q * c for q, c in zip(self.quantities(action), prices, strict=True))

    def floor(self, t: tuple[float, ...], action: Action, limit_pp: float) -> Action | None:
        """The cheapest fixed plan within ``limit_pp`` if it is cheaper than ``action``, else None."""
        n = bisect.bisect_right(self.drops, limit_pp)
        if n == 0:
            return None
        prices = self.prices(t)
        with np.errstate(all="ignore"):
            costs = self.Q[:n] @ np.array(prices)
            i = int(costs.argmin())
            if costs[i] != costs[i]:                 # a NaN cost (extreme request): skip it
                if np.isnan(costs).all():
                    return None
                i = int(np.nanargmin(costs))
        best = float(costs[i])
        mine = self.cost(action, prices)
        if best < mine * (1.0 - REL_TOL) or (mine != mine and best < math.inf):
            p, w, a = self.actions[i]
            return p, list(w), a
        return None
