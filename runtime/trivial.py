"""Fixed plans as a floor under every decision: no plan returned costs more than the best of them.

A policy far outside what it was trained on can pick a plan much worse than an obvious one
(the raw input up a slow link where the device alone would do). The fixed plans are every
cut at fp32 (server-only, device-only and Neurosurgeon's best fp32 cut among them) and
every cut at uniform 16 and 8 bits (device-only at 8 bits among them) where the budget
allows; the dispatcher returns the cheapest of those and the guarded policy plan.

Their costs take microseconds because cost is linear in a request's prices (DESIGN.md §1):
a plan is a handful of request-free quantities (head bits shipped, device work at each
bit width, bits sent up, whether there is an uplink or a download, server work, and where
a processor has a per-unit overhead the units on each side), and ``cost = quantities .
prices`` with the request's prices. The work is :func:`system.cost.unit_time`'s for the
processors named (FLOPs at unit efficiency, or seconds where a table was measured); no
names: the MAC-proportional model. This is
:func:`system.cost.unit_tables`' regrouping of the same terms, tested against
:func:`system.cost.evaluate_arrays`; it compares plans and decides nothing else.
"""

from __future__ import annotations

import bisect
import math
import operator

import numpy as np

from runtime import features as rf
from system.bits import KERNEL_WIDTHS, kernel_kappa
from system.cost import UnitTime, bits_at_cut, drop_sum_pp, unit_time
from system.fields import WIDTH_FIELDS
from system.profiles import ModelProfile
from system.request import Request

#: Uniform widths of the fixed plans (those in the bundle's bit set).
WIDTHS = (32, 16, 8)
#: A fixed plan replaces the policy's only if cheaper by more than this share (rounding).
REL_TOL = 1e-9
_I = {name: rf.FIELDS.index(name) for name in rf.SCALAR_FIELDS}
_J = [f.name for f in WIDTH_FIELDS].index("dev_kappa")
_KAPPA = list(range(len(rf.SCALAR_FIELDS) + _J * len(KERNEL_WIDTHS),
                    len(rf.SCALAR_FIELDS) + (_J + 1) * len(KERNEL_WIDTHS)))
#: The fields prices are made of, read at C speed from a Request or from its flat tuple.
_PRICED = ("beta_s_per_j", "p_rx_w", "p_comp_w", "p_tx_w", "p_idle_w", "reuse", "rtt_s",
           "dev_flops_per_s", "srv_load", "down_bps", "up_bps", "srv_flops_per_s")
_OF_REQUEST = operator.attrgetter(*_PRICED, "dev_kappa")
_OF_TUPLE = operator.itemgetter(*(_I[n] for n in _PRICED))
_CACHE_MAX = 4096
#: Costs below this bound cannot overflow, so the fast path needs no floating-point error state.
_SAFE = 1e300
div = rf._div            # a quotient whose divisor can underflow to 0: inf or nan, as numpy

Action = tuple[int, list[int], int]


def mac_proportional(profile: ModelProfile, processor: str) -> bool:
    """Whether a processor's unit times on ``profile`` are the plain model, 2 macs / (F kappa):
    no measured table, no overhead, unit efficiency; then its name changes no cost."""
    ut = unit_time(profile, processor)
    return not ut.measured and ut.overhead_s == 0.0 and np.array_equal(ut.work, 2.0 * profile.macs)


class TrivialPlans:
    """The fixed plans of one profile and bit set, and the cost of any plan for a request."""

    def __init__(self, profile: ModelProfile, bits: tuple[int, ...], weight_drop_rows: list[list[float]],
                 act_drop_rows: list[list[float]]) -> None:
        L, K = profile.n_units, len(bits)
        self.L, self.bits = L, np.asarray(bits)
        self._params = profile.params.astype(np.float64).tolist()
        self._profile = profile
        self._works: dict[tuple[str, str], tuple[list[float], list[float], UnitTime, UnitTime]] = {}
        self._Qs: dict[tuple[str, str], tuple[np.ndarray, list[np.ndarray], float]] = {}
        self._bits_f = [float(b) for b in bits]
        k32 = bits.index(32)
        cuts = np.arange(L + 1)
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
        self._kap: dict[tuple[float, ...], list[float]] = {}
        self._quantities: dict[tuple, list[float]] = {}
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}

    def _work(self, device: str, server: str
              ) -> tuple[list[float], list[float], UnitTime, UnitTime]:
        """Per-unit device work and the server's work from each cut on, for these processors."""
        got = self._works.get((device, server))
        if got is None:
            if len(self._works) >= _CACHE_MAX:
                self._works.clear()
            d, s = unit_time(self._profile, device), unit_time(self._profile, server)
            srv = np.concatenate([np.cumsum(s.work[::-1])[::-1], [0.0]])
            got = self._works[(device, server)] = (d.work.tolist(), srv.tolist(), d, s)
        return got

    def quantities(self, action: Action, device: str = "", server: str = "") -> list[float]:
        """[head bits, device work at each bit width, bits up, uplink?, download?, server work]
        and, where a processor has a per-unit overhead, [units on the device, on the server]."""
        p, w, a = action
        work, srv, d, s = self._work(device, server)
        head = 0.0
        dev = [0.0] * len(self._bits_f)
        for i, k in enumerate(w):
            head += self._params[i] * self._bits_f[k]
            dev[k] += work[i]
        q = [head, *dev, self._up[p][a], float(p < self.L), float(p > 0), srv[p]]
        return [*q, float(p), float(self.L - p)] if d.overhead_s or s.overhead_s else q

    def _canonical(self, device: str, server: str) -> tuple[str, str]:
        """The labels as costs see them: "" for a processor on the plain model."""
        got = self._labels.get((device, server))
        if got is None:
            if len(self._labels) >= _CACHE_MAX:
                self._labels.clear()
            got = self._labels[(device, server)] = (
                "" if mac_proportional(self._profile, device) else device,
                "" if mac_proportional(self._profile, server) else server)
        return got

    def _fixed(self, device: str, server: str) -> tuple[np.ndarray, list[np.ndarray], float]:
        """The fixed plans' quantities (rows of ``actions``) on these (canonical) processors,
        the plans within each budget (prefixes, as views made once) and the largest row sum
        (the overflow bound); made once per pair of processors."""
        got = self._Qs.get((device, server))
        if got is None:
            if len(self._Qs) >= _CACHE_MAX:
                self._Qs.clear()
            Q = np.asarray([self.quantities(a, device, server) for a in self.actions])
            got = self._Qs[(device, server)] = (
                Q, [Q[:n] for n in range(len(self.actions) + 1)],
                float(Q.sum(axis=1).max()) if len(self.actions) else 0.0)
        return got

    def kappa_of(self, kappa: tuple[float, ...]) -> list[float]:
        """:func:`system.bits.kernel_kappa` of the bit set for a device's speedups (kept: a
        fleet has few kinds of device)."""
        kap = self._kap.get(kappa)
        if kap is None:
            if len(self._kap) >= _CACHE_MAX:
                self._kap.clear()
            kap = self._kap[kappa] = kernel_kappa(self.bits, np.asarray(kappa)).tolist()
        return kap

    def prices(self, t: tuple[float, ...] | Request, device: str = "", server: str = ""
               ) -> list[float]:
        """A request's price of each quantity (seconds of cost per unit), from the Request or
        its flat tuple and the names of its processors (a Request's ``device`` and ``server``
        labels)."""
        _, _, d, s = self._work(device, server)
        if isinstance(t, tuple):
            beta, p_rx, p_comp, p_tx, p_idle, reuse, rtt, f_dev, load, down, up, f_srv = _OF_TUPLE(t)
            kappa = t[_KAPPA[0]:_KAPPA[-1] + 1]
        else:
            beta, p_rx, p_comp, p_tx, p_idle, reuse, rtt, f_dev, load, down, up, f_srv, kappa = \
                _OF_REQUEST(t)
        w_rx = 1.0 + beta * p_rx
        w_comp = 1.0 + beta * p_comp
        w_tx = 1.0 + beta * p_tx
        w_idle = 1.0 + beta * p_idle
        kap = self.kappa_of(kappa)
        f_dev = d.rate(f_dev)
        down, srv = down * reuse, s.rate(f_srv) * load
        # no divisor is 0 (the rule, then): the operator itself, a C call
        q = operator.truediv if down and srv and reuse and up and f_dev * min(kap) else div
        out = [q(w_rx, down), *[q(w_comp, f_dev * k) for k in kap],
               q(w_tx, up), rtt / 2.0 * w_tx, q(rtt, reuse) * w_rx, q(w_idle, srv)]
        if d.overhead_s or s.overhead_s:
            out += [d.overhead_s * w_comp if d.overhead_s else 0.0,
                    div(s.overhead_s * w_idle, load) if s.overhead_s else 0.0]
        return out


    def cost(self, action: Action, prices: list[float], device: str = "", server: str = "") -> float:
        """The cost of one plan for the request whose prices these are (quantities kept per
        plan: a policy repeats its plans, and they take a loop over the units)."""
        p, w, a = action
        key = (device, server, p, a, *w)
        q = self._quantities.get(key)
        if q is None:
            if len(self._quantities) >= _CACHE_MAX:
                self._quantities.clear()
            q = self._quantities[key] = self.quantities(action, device, server)
        if len(q) != len(prices):
            raise ValueError(f"prices: expected {len(q)} entries, got {len(prices)}")
        return sum(map(operator.mul, q, prices))

    def floor(self, t: tuple[float, ...] | Request, action: Action, limit_pp: float, device: str = "",
              server: str = "") -> Action | None:
        """The cheapest fixed plan within ``limit_pp`` if it is cheaper than ``action``, else None."""
        n = bisect.bisect_right(self.drops, limit_pp)
        if n == 0:
            return None
        if device or server:
            device, server = self._canonical(device, server)
        prices = self.prices(t, device, server)
        Q, prefixes, q_max = self._fixed(device, server)
        if sum(prices) * q_max < _SAFE:                      # finite, no overflow, no NaN
            costs = prefixes[n].dot(np.array(prices))           # the same gemv as ``@``
            i = int(costs.argmin())
        else:
            with np.errstate(all="ignore"):
                costs = Q[:n] @ np.array(prices)
                i = int(costs.argmin())
                if costs[i] != costs[i]:                 # a NaN cost (extreme request): skip it
                    if np.isnan(costs).all():
                        return None
                    i = int(np.nanargmin(costs))
        best = costs.item(i)
        mine = self.cost(action, prices, device, server)
        if best < mine * (1.0 - REL_TOL) or (mine != mine and best < math.inf):
            p, w, a = self.actions[i]
            return p, list(w), a
        return None

    # ------------------------------------------------------------------ many requests

    def prices_batch(self, arrays: dict[str, np.ndarray], kap: np.ndarray, device: str = "",
                     server: str = "") -> np.ndarray:
        """:meth:`prices` of N requests on the same (canonical) processors, (N, quantities):
        the same operations elementwise (``kap`` (N, K) is each request's kernel_kappa)."""
        _, _, d, s = self._work(device, server)
        g = arrays
        beta = g["beta_s_per_j"]
        w_rx, w_comp = 1.0 + beta * g["p_rx_w"], 1.0 + beta * g["p_comp_w"]
        w_tx, w_idle = 1.0 + beta * g["p_tx_w"], 1.0 + beta * g["p_idle_w"]
        reuse, rtt, load = g["reuse"], g["rtt_s"], g["srv_load"]
        f_dev = np.ones_like(beta) if d.measured else g["dev_flops_per_s"]
        f_srv = np.ones_like(beta) if s.measured else g["srv_flops_per_s"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            cols = [w_rx / (g["down_bps"] * reuse), w_comp[:, None] / (f_dev[:, None] * kap),
                    w_tx / g["up_bps"], rtt / 2.0 * w_tx, rtt / reuse * w_rx,
                    w_idle / (f_srv * load)]
            if d.overhead_s or s.overhead_s:
                zero = np.zeros_like(beta)
                cols += [d.overhead_s * w_comp if d.overhead_s else zero,
                         s.overhead_s * w_idle / load if s.overhead_s else zero]
            return np.column_stack(cols)

    def floor_batch(self, prices: np.ndarray, cuts: np.ndarray, w_idx: np.ndarray,
                    act_idx: np.ndarray, limit_pp: np.ndarray, device: str = "", server: str = ""
                    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`floor` of N plans on unnamed processors: (index into ``actions`` of the
        fixed plan that replaces the plan, or -1; rows to decide with :meth:`floor` instead).

        Costs summed in another order (a matrix product, a row sum) round differently from
        the single form's, by far less than 1e-12 of a cost; rows where that could change
        the answer (two fixed plans, or the best one and the plan's threshold, that close; a
        price that is not finite or a cost that could overflow) are left to :meth:`floor`,
        so the two forms always agree.
        """
        N, L = w_idx.shape
        n = np.searchsorted(np.asarray(self.drops), limit_pp, side="right")
        rows = np.arange(N)
        on = np.arange(L)[None, :] < cuts[:, None]
        work, srv, _, _ = self._work(device, server)
        Q, _, q_max = self._fixed(device, server)
        params = np.asarray(self._params)
        bits_f = np.asarray(self._bits_f)
        K = len(bits_f)
        q = np.empty((N, Q.shape[1]))
        q[:, 0] = np.where(on, bits_f[w_idx], 0.0) @ params
        q[:, 1:1 + K] = np.bincount((rows[:, None] * K + w_idx).ravel(),
                                    np.where(on, np.asarray(work), 0.0).ravel(), N * K).reshape(N, K)
        q[:, 1 + K] = np.asarray(self._up)[cuts, act_idx]
        q[:, 2 + K] = cuts < L
        q[:, 3 + K] = cuts > 0
        q[:, 4 + K] = np.asarray(srv)[cuts]
        if Q.shape[1] > 5 + K:                   # units on each side, priced by the overheads
            q[:, 5 + K] = cuts
            q[:, 6 + K] = L - cuts
        with np.errstate(over="ignore", invalid="ignore"):
            mine = np.einsum("ij,ij->i", q, prices)
            safe = prices @ np.ones(prices.shape[1]) * q_max < _SAFE
            costs = np.where(np.arange(len(self.actions))[None, :] < n[:, None],
                             np.where(safe[:, None], prices, 0.0) @ Q.T, np.inf)
        pick = costs.argmin(axis=1)
        best = costs[rows, pick]
        others = costs.copy()                    # the second least: the least of the others
        others[rows, pick] = np.inf
        second = others.min(axis=1)
        threshold = mine * (1.0 - REL_TOL)
        close = (second <= best * (1.0 + 1e-12)) | (np.abs(best - threshold) <= 1e-12 * threshold)
        undecided = (n > 0) & (~safe | close)
        return np.where((n > 0) & (best < threshold) & ~undecided, pick, -1), undecided
