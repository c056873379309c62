"""Latency, device energy and cost of plans (DESIGN.md §1), vectorised over many plans.

Every term is a function of its own so it can be tested alone. Plans come as arrays:
``cuts`` (N,), ``wbits`` (N, L) with entries past the cut ignored, ``abits`` (N,).

    T_down = [p>0] (rtt + sum_{l<=p} params[l] b_w[l] / R_down) / reuse
    T_dev  = sum_{l<=p} t_dev[l](b_w[l])
    T_up   = [p<L] (rtt/2 + bits_at_cut(p, b_a) / R_up)
    T_srv  = sum_{l>p} t_srv[l](32) / load
    energy = P_rx T_down + P_comp T_dev + P_tx T_up + P_idle T_srv
    cost   = latency + beta energy

The per-unit time t[l](b) of DESIGN.md §1a is :class:`UnitTime`, picked by the request's
``device`` and ``server`` labels: a table measured on that processor, else
o + 2 macs[l] / (F eff[l] kappa(b)); without tables, overhead or carried efficiencies
(eff = 1, o = 0) it is 2 macs[l] / (F kappa(b)), bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from system.accuracy import drop_pp, extrapolated_tensors, is_feasible
from system.bits import DEFAULT_BITS, kernel_kappa, q_noise
from system.errors import QsplitInputError
from system.evidence import Compounding, unbacked
from system.hardware import processor_timing
from system.plan import Plan, plans_to_arrays
from system.profiles import ModelProfile
from system.request import Request


@dataclass(frozen=True, eq=False)
class UnitTime:
    """Per-unit time on one processor: t[l](b) = overhead_s + work[l] / (rate kappa(b)).

    Measured there: ``work`` = the measured fp32 seconds, no overhead, rate 1 (the request's
    FLOP/s do not enter). Otherwise ``work`` = 2 macs[l] / eff[l] (FLOPs at unit efficiency)
    at the request's FLOP/s, plus the processor's per-unit overhead.
    """

    overhead_s: float
    work: np.ndarray
    measured: bool

    def seconds(self, flops_per_s: float, kappa: np.ndarray | float = 1.0,
                share: float = 1.0) -> np.ndarray:
        """t[l] at kernel speedups ``kappa`` (broadcast against ``work``), on ``share`` of
        the processor (the server's load; the overhead stretches too)."""
        return self.overhead_s / share + self.work / (self.rate(flops_per_s) * share * kappa)

    def rate(self, flops_per_s: float) -> float:
        """What ``work`` is divided by besides kappa and share: 1 for a measured table."""
        return 1.0 if self.measured else flops_per_s


@lru_cache(maxsize=1024)
def unit_time(profile: ModelProfile, processor: str) -> UnitTime:
    """The one per-unit time of DESIGN.md §1a that every cost is made of: the profile's table
    for ``processor`` (a request's ``device`` or ``server`` label) where one was measured,
    else the catalog's overhead and, where the catalog processor carries them, the profile's
    fitted efficiencies (else eff = 1)."""
    table = profile.time_tables.get(processor)
    if table is not None:
        work = np.array(table.time_s, dtype=np.float64)
        ut = UnitTime(0.0, work, True)
    else:
        timing = processor_timing(processor)
        work = 2.0 * profile.macs
        if timing.carry_eff and profile.efficiency is not None:
            work = work / profile.efficiency.eff
        ut = UnitTime(timing.overhead_s, work, False)
    work.flags.writeable = False
    return ut


def _on_device(profile: ModelProfile, cuts: np.ndarray) -> np.ndarray:
    return np.arange(profile.n_units)[None, :] < np.asarray(cuts)[:, None]


def t_down_s(profile: ModelProfile, req: Request, cuts: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    """Time to ship the quantized head to the device, amortised over ``reuse`` inferences."""
    cuts = np.asarray(cuts)
    head_bits = (_on_device(profile, cuts) * profile.params[None, :] * wbits).sum(axis=1)
    return (cuts > 0) * (req.rtt_s + head_bits / req.down_bps) / req.reuse


def t_dev_s(profile: ModelProfile, req: Request, cuts: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    """Device compute time; each width runs on the narrowest native kernel that holds it."""
    kap = kernel_kappa(wbits, np.asarray(req.dev_kappa))
    per_unit = unit_time(profile, req.device).seconds(req.dev_flops_per_s, kap)
    return np.where(_on_device(profile, cuts), per_unit, 0.0).sum(axis=1)


def bits_at_cut(profile: ModelProfile, cuts: np.ndarray, abits: np.ndarray) -> np.ndarray:
    """Bits sent up: the raw input at cut 0, the cut tensor at b_a bits, nothing at cut L."""
    cuts = np.asarray(cuts)
    L = profile.n_units
    inner = profile.out_elems[np.minimum(np.maximum(cuts - 1, 0), L - 1)] * np.asarray(abits)
    out = np.where(cuts == 0, float(profile.in_elems * profile.input_bits), inner)
    return np.where(cuts >= L, 0.0, out)


def t_up_s(profile: ModelProfile, req: Request, cuts: np.ndarray, abits: np.ndarray,
           up_bits: np.ndarray | None = None) -> np.ndarray:
    """Uplink time: half a round trip plus the serialisation of the cut tensor
    (``up_bits``: :func:`bits_at_cut`'s answer, where the caller has it)."""
    cuts = np.asarray(cuts)
    bits = bits_at_cut(profile, cuts, abits) if up_bits is None else up_bits
    return (cuts < profile.n_units) * (req.rtt_s / 2.0 + bits / req.up_bps)


def server_suffix_s(profile: ModelProfile, req: Request) -> np.ndarray:
    """T_srv for every cut 0..L: the server runs units p+1..L at fp32."""
    per_unit = unit_time(profile, req.server).seconds(req.srv_flops_per_s, share=req.srv_load)
    suffix = np.concatenate([np.cumsum(per_unit[::-1])[::-1], [0.0]])
    return suffix


def t_srv_s(profile: ModelProfile, req: Request, cuts: np.ndarray) -> np.ndarray:
    """Server compute time of the tail."""
    return server_suffix_s(profile, req)[np.asarray(cuts)]


@dataclass(frozen=True)
class PlanFigures:
    """Figures of N plans under one request (arrays of shape (N,))."""

    t_down_s: np.ndarray
    t_dev_s: np.ndarray
    t_up_s: np.ndarray
    t_srv_s: np.ndarray
    latency_s: np.ndarray
    energy_j: np.ndarray
    cost: np.ndarray
    drop_pp: np.ndarray
    feasible: np.ndarray
    payload_reduction: np.ndarray
    uplink_bits: np.ndarray


def device_payload(profile: ModelProfile, cuts: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    """Bit-weighted FLOPs on the device: sum_{l<=p} 2 macs[l] b_w[l] / 32 (QPART's payload)."""
    return (_on_device(profile, cuts) * 2.0 * profile.macs[None, :] * wbits / 32.0).sum(axis=1)


def payload_reduction(profile: ModelProfile, cuts: np.ndarray, wbits: np.ndarray) -> np.ndarray:
    """1 - device payload / all FLOPs at fp32.

    A network without MACs has no payload to reduce: its reduction is 0 for every plan (the
    ratio would be 0 / 0).
    """
    total = 2.0 * float(profile.macs.sum())
    payload = device_payload(profile, cuts, wbits)
    if total == 0.0:
        return np.zeros_like(payload)
    return 1.0 - payload / total


@np.errstate(over="ignore", invalid="ignore")
def evaluate_arrays(profile: ModelProfile, req: Request, cuts: np.ndarray, wbits: np.ndarray,
                    abits: np.ndarray) -> PlanFigures:
    """All figures of many plans at once.

    An extreme request may overflow a figure to inf: that is a value here, not a warning;
    :func:`check_finite_figures` refuses it wherever figures are reported.
    """
    cuts = np.asarray(cuts, dtype=np.int64)
    wbits = np.asarray(wbits)
    abits = np.asarray(abits)
    td = t_down_s(profile, req, cuts, wbits)
    tc = t_dev_s(profile, req, cuts, wbits)
    up_bits = bits_at_cut(profile, cuts, abits)
    tu = t_up_s(profile, req, cuts, abits, up_bits)
    ts = t_srv_s(profile, req, cuts)
    lat = td + tc + tu + ts
    en = req.p_rx_w * td + req.p_comp_w * tc + req.p_tx_w * tu + req.p_idle_w * ts
    dr = drop_pp(profile, cuts, wbits, abits)
    return PlanFigures(t_down_s=td, t_dev_s=tc, t_up_s=tu, t_srv_s=ts, latency_s=lat,
                       energy_j=en, cost=lat + req.beta_s_per_j * en, drop_pp=dr,
                       feasible=is_feasible(dr, req.eps_pp),
                       payload_reduction=payload_reduction(profile, cuts, wbits),
                       uplink_bits=up_bits)


def evaluate_plans(profile: ModelProfile, req: Request, plans: list[Plan]) -> PlanFigures:
    """Figures of a list of plans."""
    c, w, a = plans_to_arrays(plans, profile.n_units)
    return evaluate_arrays(profile, req, c, w, a)


#: Each figure of :class:`PlanFigures` with its unit and the inputs (as users write them)
#: that set it: what an overflow error names.
_FIGURE_INPUTS = {
    "t_down_s": ("s", "rtt_ms, down_mbps, reuse and the profile's params"),
    "t_dev_s": ("s", "dev_gflops, dev_kappa and the profile's macs or measured times"),
    "t_up_s": ("s", "rtt_ms, up_mbps and the profile's out_elems or in_elems"),
    "t_srv_s": ("s", "srv_gflops, srv_load and the profile's macs or measured times"),
    "latency_s": ("s", "the sum of the four times"),
    "energy_j": ("J", "p_rx_w, p_comp_w, p_tx_w and p_idle_w"),
    "cost": ("s", "beta_s_per_j"),
    "drop_pp": ("pp", "the profile's sens_w and sens_a"),
    "payload_reduction": ("", "the profile's macs"),
}


def check_finite_figures(f: PlanFigures, where: str = "plan") -> PlanFigures:
    """Return ``f``, or refuse (one line) when a figure left the range of a double.

    Valid but extreme inputs (a device of 1e-300 GFLOP/s, beta 1e308 s/J) can make a time,
    an energy or the cost overflow to inf (and inf x 0 to NaN): such a figure is no number
    JSON can hold or a plan can be compared by, so it is refused, naming what set it.
    """
    if np.isfinite(np.concatenate([np.ravel(getattr(f, name)) for name in _FIGURE_INPUTS])).all():
        return f                                            # the common case, in one test
    with np.errstate(invalid="ignore"):
        for name, (unit, inputs) in _FIGURE_INPUTS.items():
            vals = np.asarray(getattr(f, name), dtype=np.float64)
            bad = ~np.isfinite(vals)
            if np.any(bad):
                v = float(vals[np.argmax(bad)])
                raise QsplitInputError(
                    f"{where}: {name} is {v}{f' {unit}' if unit else ''}, beyond the range of a "
                    f"double (set by {inputs}: too extreme to cost)")
    return f


def plan_report(profile: ModelProfile, req: Request, plan: Plan) -> dict:
    """One plan's figures as a JSON-ready dict (what the command line prints).

    Every figure is a finite number (else :func:`check_finite_figures` refuses the request).
    """
    return plan_reports(profile, req, [plan])[0]


def plan_reports(profile: ModelProfile, req: Request, plans: list[Plan]) -> list[dict]:
    """:func:`plan_report` of several plans for one request, costed in one call."""
    f = check_finite_figures(evaluate_plans(profile, req, plans))
    cols = {k: getattr(f, k).tolist() for k in ("latency_s", "energy_j", "drop_pp", "cost",
                                                 "payload_reduction", "feasible")}
    return [{**plan.to_json_dict(), **{k: v[i] for k, v in cols.items()},
             "extrapolated": extrapolated_tensors(profile, plan)} for i, plan in enumerate(plans)]


@dataclass(frozen=True)
class UnitTables:
    """The cost and drop of a plan split into per-unit and per-(cut, act-bits) terms.

    cost(plan) = sum_{l<=p} c_w[l, k_l] + fixed[p, a];  drop = sum d_w[l, k_l] + d_a[p, a].
    This is what makes the weight bits, for a fixed (p, a), a multiple-choice knapsack.
    """

    bits: tuple[int, ...]
    c_w: np.ndarray     # (L, K)  cost of unit l on the device at bits[k]
    d_w: np.ndarray     # (L, K)  drop of unit l at bits[k]
    fixed: np.ndarray   # (L+1, K) cost terms set by the cut and activation bits
    d_a: np.ndarray     # (L+1, K) activation drop at the cut
    #: g of the profile: sums of d_w and d_a are tested against drop_limit_pp(eps, this)
    compounding: Compounding | None = None


def drop_sum_pp(weight_drops: Iterable[float], act_drop: float) -> float:
    """A plan's drop from its terms (device units in order, then the activation), added left
    to right: the one summation order of the repair, the runtime's guard and its batch
    (:func:`drop_sums_pp`), so their budget tests agree bit for bit. A plain loop, not
    ``sum()``: from Python 3.12 ``sum`` compensates float rounding, another order."""
    total = 0.0
    for d in weight_drops:
        total += d
    return total + act_drop


def drop_sums_pp(weight_drops: np.ndarray, act_drops: np.ndarray) -> np.ndarray:
    """:func:`drop_sum_pp` of N plans: ``weight_drops`` (N, L) is 0 past each cut.

    ``np.cumsum`` adds sequentially (``np.sum`` pairwise), so the order is the same.
    """
    return np.cumsum(weight_drops, axis=1)[:, -1] + act_drops


def drop_tables(profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS
                ) -> tuple[np.ndarray, np.ndarray]:
    """UnitTables' d_w (L, K) and d_a (L+1, K): they depend on the profile and bits only, so
    they are made once per pair (read-only arrays) and every request's tables share them.
    A width the profile's evidence does not back is an infinite drop (never feasible)."""
    return _drop_tables(profile, tuple(bits))


@lru_cache(maxsize=256)
def _drop_tables(profile: ModelProfile, bits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    L = profile.n_units
    b = np.asarray(bits)
    q = q_noise(b.astype(np.float64))
    fw, fa = profile.width_floors
    d_w = np.where(unbacked(b[None, :], fw[:, None]), np.inf, profile.sens_w[:, None] * q[None, :])
    cuts = np.arange(L + 1)
    inner = (cuts > 0) & (cuts < L)
    sa = np.concatenate([[0.0], profile.sens_a])
    d_a = (inner * sa)[:, None] * q[None, :]
    off = inner[:, None] & unbacked(b[None, :], np.concatenate([[1], fa])[:, None])
    d_a = np.where(off, np.inf, d_a)
    d_w.flags.writeable = d_a.flags.writeable = False
    return d_w, d_a


def unbacked_options(d_w: np.ndarray, d_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where :func:`drop_tables` refuses a width: those options cost inf too, so no solver or
    repair ever weighs them (an inf cost is an option too costly to take)."""
    return np.isinf(d_w), np.isinf(d_a)


@np.errstate(over="ignore", invalid="ignore")
def unit_tables(profile: ModelProfile, req: Request,
                bits: tuple[int, ...] = DEFAULT_BITS) -> UnitTables:
    """Per-unit decomposition of :func:`evaluate_arrays` (same formulas, regrouped; an inf
    entry is an option too costly to take)."""
    L = profile.n_units
    b = np.asarray(bits, dtype=np.float64)
    w_rx = 1.0 + req.beta_s_per_j * req.p_rx_w
    w_comp = 1.0 + req.beta_s_per_j * req.p_comp_w
    w_tx = 1.0 + req.beta_s_per_j * req.p_tx_w
    w_idle = 1.0 + req.beta_s_per_j * req.p_idle_w
    kap = kernel_kappa(np.asarray(bits), np.asarray(req.dev_kappa))
    t_dev = unit_time(profile, req.device).seconds(req.dev_flops_per_s, kap[:, None]).T
    c_w = (profile.params[:, None] * b[None, :] / (req.down_bps * req.reuse)) * w_rx \
        + t_dev * w_comp
    d_w, d_a = drop_tables(profile, bits)
    cuts = np.arange(L + 1)
    up_bits = bits_at_cut(profile, np.repeat(cuts, len(bits)), np.tile(b, L + 1)).reshape(L + 1, -1)
    up = (cuts[:, None] < L) * (req.rtt_s / 2.0 + up_bits / req.up_bps) * w_tx
    down = (cuts[:, None] > 0) * (req.rtt_s / req.reuse) * w_rx
    srv = server_suffix_s(profile, req)[:, None] * w_idle
    fixed = up + down + srv
    off_w, off_a = unbacked_options(d_w, d_a)
    return UnitTables(bits=tuple(bits), c_w=np.where(off_w, np.inf, c_w), d_w=d_w,
                      fixed=np.where(off_a, np.inf, fixed), d_a=d_a,
                      compounding=profile.compounding)


@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def unit_tables_batch(profile: ModelProfile, arrays: dict[str, np.ndarray],
                      bits: tuple[int, ...] = DEFAULT_BITS, device: str = "",
                      server: str = "", kap: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`unit_tables`' ``c_w`` (N, L, K) and ``fixed`` (N, L+1, K) for N requests on the
    same processors (``device``, ``server`` labels), given as :func:`request_arrays` columns;
    ``kap`` (N, K): each request's :func:`kernel_kappa` of ``bits``, if the caller has it.

    The same elementwise operations in the same order, so row i equals ``unit_tables`` of
    request i bit for bit (tested); many requests cost a few numpy calls instead of a few
    dozen each.
    """
    L = profile.n_units
    b = np.asarray(bits, dtype=np.float64)

    def col(name: str) -> np.ndarray:
        return np.asarray(arrays[name], dtype=np.float64)[:, None, None]

    beta = col("beta_s_per_j")
    w_rx, w_comp = 1.0 + beta * col("p_rx_w"), 1.0 + beta * col("p_comp_w")
    w_tx, w_idle = 1.0 + beta * col("p_tx_w"), 1.0 + beta * col("p_idle_w")
    if kap is None:
        kap = kernel_kappa(np.asarray(bits), arrays["dev_kappa"])
    t_dev = unit_time(profile, device).seconds(col("dev_flops_per_s"), kap[:, :, None])
    c_w = (profile.params[:, None] * b[None, :] / (col("down_bps") * col("reuse"))) * w_rx \
        + t_dev.transpose(0, 2, 1) * w_comp
    cuts = np.arange(L + 1)
    up_bits = bits_at_cut(profile, np.repeat(cuts, len(bits)), np.tile(b, L + 1)).reshape(L + 1, -1)
    up = (cuts[:, None] < L) * (col("rtt_s") / 2.0 + up_bits / col("up_bps")) * w_tx
    down = (cuts[:, None] > 0) * (col("rtt_s") / col("reuse")) * w_rx
    per_unit = unit_time(profile, server).seconds(col("srv_flops_per_s")[:, :, 0],
                                                  share=col("srv_load")[:, :, 0])
    suffix = np.concatenate([np.cumsum(per_unit[:, ::-1], axis=1)[:, ::-1],
                             np.zeros((len(per_unit), 1))], axis=1)
    off_w, off_a = unbacked_options(*drop_tables(profile, bits))
    return (np.where(off_w[None], np.inf, c_w),
            np.where(off_a[None], np.inf, up + down + suffix[:, :, None] * w_idle))
