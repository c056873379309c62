"""Decide with a trace policy (QuantSplitTrace-v0): the caller passes the device's past.

    d = TraceDispatcher.load("runtime/bundles/trace/resnet18")
    plan = d.decide(request, up_samples_bps=[...5], down_samples_bps=[...5],
                    share_samples=[...10], deadline_s=0.4)

``request`` is the request at the device's full compute (its catalog FLOP/s; the share
samples say how much of it is free) with any up/down rates (they are replaced by the mean
of the samples, as the policy was trained). The bundle's ``observation.history`` says how
many samples of each kind it expects (:mod:`runtime.history`); a wrong count, a negative or
non-finite sample, or a share outside (0, 1] is refused in one line naming the argument.
The policy's plan is repaired to the accuracy budget by the one repair, so no plan returned
is over it. A bundle whose history says ``ce_plan`` also takes the exact optimizer's plan at
the estimate as input (about a millisecond more per decision). numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.bundle import Bundle, BundleError, load_bundle
from runtime.policy import PolicyNet
from system.cost import unit_tables
from system.errors import QsplitInputError, check_finite
from system.optimal import solve
from system.plan import Plan
from system.repair import execute_action
from system.request import Request
from system.trace_obs import trace_observation
from system.variance import planning_view, server_only_latency_s


def _samples(name: str, values: object, n: int, lo: float, hi: float, unit: str,
             lo_open: bool = False) -> np.ndarray:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise QsplitInputError(f"{name}: expected a list of {n} numbers")
    if len(values) != n:
        raise QsplitInputError(f"{name}: expected {n} samples (the bundle's history), got "
                               f"{len(values)}")
    return np.array([check_finite(f"{name}[{i}]", v, lo=lo, hi=hi, lo_open=lo_open, unit=unit)
                     for i, v in enumerate(values)], dtype=np.float64)


class TraceDispatcher:
    """A trace bundle's policy, its features and the repair (see the module docstring)."""

    def __init__(self, bundle: Bundle) -> None:
        if bundle.history is None:
            raise BundleError(f"bundle {bundle.path}: not a trace policy (no "
                              "observation.history): use runtime.dispatcher.Dispatcher")
        self.bundle = bundle
        self.profile = bundle.profile
        self.history = bundle.history
        self.net = PolicyNet(bundle)

    @classmethod
    def load(cls, path: str | Path, public_key: str | Path | bool | None = None
             ) -> TraceDispatcher:
        """Verify and load a trace bundle."""
        return cls(load_bundle(path, public_key))

    def planning_request(self, request: Request, up_samples_bps: object,
                         down_samples_bps: object, share_samples: object
                         ) -> tuple[Request, np.ndarray, np.ndarray, np.ndarray]:
        """The request as the policy's planner sees it, and the checked samples."""
        if not isinstance(request, Request):
            raise QsplitInputError("request: expected a system.request.Request")
        k, m = self.history.history_k, self.history.share_steps
        up = _samples("up_samples_bps", up_samples_bps, k, 0.0, np.inf, "bit/s")
        down = _samples("down_samples_bps", down_samples_bps, k, 0.0, np.inf, "bit/s")
        share = _samples("share_samples", share_samples, m, 0.0, 1.0, "", lo_open=True)
        return planning_view(request, up, down, share), up, down, share

    def decide(self, request: Request, *, up_samples_bps: object, down_samples_bps: object,
               share_samples: object, deadline_s: float) -> Plan:
        """The policy's plan for ``request`` given the device's recent past."""
        req, up, down, share = self.planning_request(request, up_samples_bps,
                                                     down_samples_bps, share_samples)
        dl = check_finite("deadline_s", deadline_s, lo=0.0, lo_open=True, unit="s")
        rel = dl / server_only_latency_s(self.profile, req)
        codec = self.bundle.codec
        ce = codec.encode(solve(self.profile, req, codec.bits).plan)[None] \
            if self.history.ce_plan else None
        obs = trace_observation(self.bundle.encoder, [req], up[None], down[None], share[None],
                                np.array([rel]), ce, codec.n_bits)
        p, w, a = self.net.decode(self.net.forward_batch(obs)[0])
        action = np.array([p, a, *w, *([0] * (self.profile.n_units - len(w)))])
        return execute_action(unit_tables(self.profile, req, self.bundle.codec.bits),
                              req.eps_pp, action).plan
