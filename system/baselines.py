"""Baseline deciders the optimizer and the learned policy are measured against.

Each takes (profile, request, bits) and returns a canonical Plan; all are vectorised through
:func:`system.cost.evaluate_arrays`, so they cost microseconds, not a search.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from system.bits import DEFAULT_BITS
from system.cost import evaluate_arrays
from system.optimal import solve
from system.plan import Plan
from system.profiles import ModelProfile
from system.request import Request

Decider = Callable[[ModelProfile, Request, tuple[int, ...]], Plan]


def server_only(profile: ModelProfile, req: Request, bits: tuple[int, ...] = DEFAULT_BITS) -> Plan:
    """Upload the raw input; the server runs everything (always feasible)."""
    return Plan.canonical(0, (), 32, profile.n_units)


def device_only(profile: ModelProfile, req: Request, bits: tuple[int, ...] = DEFAULT_BITS) -> Plan:
    """Ship the whole network at fp32 and run it on the device (always feasible)."""
    L = profile.n_units
    return Plan.canonical(L, (32,) * L, 32, L)


def device_only_int8(profile: ModelProfile, req: Request,
                     bits: tuple[int, ...] = DEFAULT_BITS) -> Plan:
    """The whole network at uniform 8-bit weights on the device when that fits the budget;
    otherwise the fp32 device-only plan (8 bits is then not an option for this request)."""
    L = profile.n_units
    f = evaluate_arrays(profile, req, np.array([L]), np.full((1, L), 8), np.array([32]))
    return Plan.canonical(L, (8,) * L, 32, L) if f.feasible[0] else device_only(profile, req, bits)


def _best_uniform(profile: ModelProfile, req: Request, widths: tuple[int, ...]) -> Plan:
    """Best feasible (cut, b) with every device weight and the cut tensor at one width b."""
    L = profile.n_units
    cuts = np.tile(np.arange(L + 1), len(widths))
    b = np.repeat(np.asarray(widths), L + 1)
    f = evaluate_arrays(profile, req, cuts, np.repeat(b[:, None], L, axis=1), b)
    i = int(np.argmin(np.where(f.feasible, f.cost, np.inf)))
    return Plan.canonical(int(cuts[i]), (int(b[i]),) * int(cuts[i]), int(b[i]), L)


def partition_only(profile: ModelProfile, req: Request,
                   bits: tuple[int, ...] = DEFAULT_BITS) -> Plan:
    """Best cut with fp32 weights and fp32 activations, as Neurosurgeon does."""
    return _best_uniform(profile, req, (32,))


def uniform_bits(profile: ModelProfile, req: Request, bits: tuple[int, ...] = DEFAULT_BITS) -> Plan:
    """Best cut for each single bit width (weights and activation alike), best of those."""
    return _best_uniform(profile, req, tuple(bits))


def optimal(profile: ModelProfile, req: Request, bits: tuple[int, ...] = DEFAULT_BITS) -> Plan:
    """The exact optimum (system.optimal.solve)."""
    return solve(profile, req, bits).plan


#: Deciders by the name used on the command line and in evaluation reports.
DECIDERS: dict[str, Decider] = {
    "optimal": optimal,
    "server_only": server_only,
    "device_only": device_only,
    "device_only_int8": device_only_int8,
    "partition_only": partition_only,
    "uniform": uniform_bits,
}
