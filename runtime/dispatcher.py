"""The runtime dispatcher: an exported policy deciding plans on the edge with numpy alone.

Per request: the observation (:mod:`runtime.features`, bit-identical to the env's), the
actor MLP (:mod:`runtime.policy`), argmax per head among the options the env's action mask
allows (MaskablePPO bundles), the canonical plan, then the guard. The batch form
(:mod:`runtime.batch`) vectorises every step and gives the same plans as the single form
(tested on 10,000 requests); against torch the tests find no difference on 10,000 requests.

The guard recomputes the plan's drop from the profile's accuracy model
(:func:`system.cost.drop_sum_pp`, the repair's own sum) and, when it exceeds the budget,
does exactly what ``QuantSplit-v0``'s step does: :func:`system.repair.repair_indices`. So
every plan returned is within budget. Options:

* ``fallback="out_of_range"`` (default): a request with a feature outside the policy's
  training support (:mod:`runtime.support`; a bundle without one: a clipped feature) goes
  to the exact optimizer (:func:`system.optimal.solve`, a few hundred microseconds), where
  the policy's plan means little; ``"infeasible"`` sends an infeasible policy plan there
  instead of repairing it; ``"none"``: neither. Any other infeasible plan is repaired as
  the env does.
* ``refine=True``: a search with the cost model around the guarded plan (a Lagrangian
  sweep over the cuts, then a local search over neighbouring bit widths and cuts,
  :mod:`runtime.refine`); never worse, never infeasible, a few hundred microseconds.
* ``trivial_guard=True`` (default): the plan returned is the cheaper of the above and the
  best fixed plan within the budget (:mod:`runtime.trivial`: every cut at fp32, 16 and 8
  bits), so no decision costs more than the best trivial plan.

``fallback="none", trivial_guard=False`` is exactly SB3's ``predict(deterministic=True)``
followed by the env's repair. ``Decision.path`` says what decided: ``policy``,
``repaired``, ``fallback``, ``refined`` or ``trivial``.

:meth:`Dispatcher.decide_batch` answers each item on its own: a bad item gets a
:class:`BatchItemError` in its place (naming ``request[i]``), the others their plans; a
batch of valid requests is a list of plans, as one-at-a-time decisions give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from runtime import batch as rb
from runtime import features as rf
from runtime.bundle import Bundle, BundleError, load_bundle
from runtime.policy import Action, MaskTable, PolicyNet
from runtime.refine import refine as refine_plan
from runtime.support import SupportCheck
from runtime.trivial import TrivialPlans
from system.accuracy import drop_limit_pp
from system.cost import drop_sum_pp, drop_tables, plan_reports, unit_tables
from system.errors import QsplitInputError
from system.optimal import solve
from system.plan import NO_ACT_BITS, Plan
from system.repair import repair_indices
from system.request import Request

PATHS = ("policy", "repaired", "fallback", "refined", "trivial")
FALLBACKS = ("none", "infeasible", "out_of_range")
DEFAULT_MODEL = "resnet18"
PLAN_CACHE_MAX = 65536

#: A request as the caller gave it: a Request, or its flat tuple (from a mapping or arrays).
Source = Request | tuple[float, ...]


@dataclass(frozen=True)
class Decision:
    """A plan and how it was reached."""

    plan: Plan
    path: str                 # policy | repaired | fallback | refined | trivial
    drop_pp: float            # the guard's drop of ``plan`` (system.cost.drop_sum_pp)
    policy_plan: Plan         # what the network said, before the guard
    out_of_range: bool        # a feature lies outside the policy's training support


class BatchItemError(QsplitInputError):
    """The answer to a bad item of a batch: what was wrong with ``request[index]``."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class Guarded(NamedTuple):
    """The guard's outcome in index form: the action, the path that decided it, its drop."""

    action: Action
    path: str
    drop_pp: float


def bundles_root() -> Path:
    """Where the committed default bundles live (package data ``runtime/bundles``)."""
    return Path(str(resources.files("runtime").joinpath("bundles")))


def default_bundle_path(model: str = DEFAULT_MODEL) -> Path:
    """The committed default bundle of a shipped model."""
    root = bundles_root()
    known = sorted(d.name for d in root.iterdir() if (d / "contract.json").is_file()) \
        if root.is_dir() else []
    if model not in known:
        raise BundleError(f"model: no committed bundle for {str(model)[:80]!r} (a shipped model's "
                          f"name, not a path); known: {known}")
    return root / model


def _as_request(source: Source) -> Request:
    return source if isinstance(source, Request) else rf.to_request(source)


def _budget_pp(source: Source) -> float:
    return source.eps_pp if isinstance(source, Request) else source[rf.I_EPS]


class Dispatcher:
    """Decides plans from an exported policy bundle (see the module docstring)."""

    def __init__(self, bundle: Bundle, *, fallback: str = "out_of_range", refine: bool = False,
                 cut_radius: int = 1, trivial_guard: bool = True) -> None:
        if not isinstance(fallback, str) or fallback not in FALLBACKS:
            raise QsplitInputError(f"fallback: {str(fallback)[:40]!r} is not one of {list(FALLBACKS)}")
        for name, flag in (("refine", refine), ("trivial_guard", trivial_guard)):
            if not isinstance(flag, bool):
                raise QsplitInputError(f"{name}: expected true or false, got {str(flag)[:40]!r}")
        if isinstance(cut_radius, bool) or not isinstance(cut_radius, int) \
                or not 0 <= cut_radius <= bundle.profile.n_units:
            raise QsplitInputError(f"cut_radius: {str(cut_radius)[:40]} is not a whole number of "
                                   f"units in [0, {bundle.profile.n_units}]")
        if bundle.history is not None:
            raise QsplitInputError(f"bundle {bundle.path}: a trace policy (it needs the device's "
                                   "recent samples): use runtime.trace.TraceDispatcher")
        self.bundle = bundle
        self.profile = bundle.profile
        self.encoder = bundle.encoder
        self.codec = bundle.codec
        self.bits = bundle.codec.bits
        self.fallback = fallback
        self.refine = refine
        self.cut_radius = cut_radius
        self._check_support = fallback == "out_of_range"
        self.support = SupportCheck(bundle.support, bundle.encoder)
        self.L, self.K = self.profile.n_units, len(self.bits)
        self.net = PolicyNet(bundle)
        self._forward, self._decode = self.net.forward, self.net.decode   # bound once: per request
        self._features_of_tuple = rf.feature_function(self.encoder)
        self._features_of_request = rf.feature_function(self.encoder, source="request")
        self._weight_drops, self._act_drops = drop_tables(self.profile, self.bits)
        self._weight_drop_rows: list[list[float]] = self._weight_drops.tolist()
        self._act_drop_rows: list[list[float]] = self._act_drops.tolist()
        self.mask = MaskTable(bundle, self._weight_drops, self._act_drops, self.net.n_logits)
        self.trivial = TrivialPlans(self.profile, self.bits, self._weight_drop_rows,
                                    self._act_drop_rows) if trivial_guard else None
        self._plans: dict[tuple[int, ...], Plan] = {}          # plans are few: made once
        self._row_plans: dict[tuple[int, ...], Plan] = {}      # by batch row: cut, act, all w
        self._plain_labels: dict[str, bool] = {}                # see runtime.batch

    @classmethod
    def load(cls, path: str | Path | None = None, *, model: str = DEFAULT_MODEL,
             fallback: str = "out_of_range", refine: bool = False, cut_radius: int = 1,
             trivial_guard: bool = True, public_key: str | Path | None = None) -> Dispatcher:
        """Verify and load a bundle folder (default: the committed bundle of ``model``);
        ``public_key`` (or ``$QSPLIT_BUNDLE_PUBKEY``): require its signature."""
        p = Path(path) if path is not None else default_bundle_path(model)
        return cls(load_bundle(p, public_key), fallback=fallback, refine=refine,
                   cut_radius=cut_radius, trivial_guard=trivial_guard)

    # ------------------------------------------------------------------ single request

    def _intake(self, request: Request | Mapping[str, object], where: str = "request"
                ) -> tuple[Source, list[float]]:
        """The request as the guard takes it, and its features."""
        if isinstance(request, Request):
            return request, self._features_of_request(request)
        t = rf.from_mapping(request, where)
        return t, self._features_of_tuple(t)

    def _policy(self, features: list[float], limit_pp: float) -> Action:
        """The network's action: the argmax of each head among the options the mask allows.

        ``limit_pp`` is the budget's :func:`~system.accuracy.drop_limit_pp`. If every option
        picked unmasked is allowed it is that argmax already (first index on ties too);
        otherwise the mask's row is added and the heads decoded again.
        """
        logits = self._forward(features)
        action = self._decode(logits)
        mask = self.mask
        if mask.thresholds and not mask.allows(action, limit_pp):
            logits += mask.rows[mask.row(limit_pp)]
            action = self._decode(logits)
        return action

    def _out_of_range(self, features: list[float]) -> bool:
        """A feature lies outside the policy's training support (:mod:`runtime.support`)."""
        return self.support.outside(features)

    def _floor(self, source: Source, action: Action, limit_pp: float) -> Action | None:
        """The best fixed plan where it is cheaper than ``action`` (:mod:`runtime.trivial`),
        costed on the processors a Request names (as the repair's unit tables are)."""
        if self.trivial is None:
            return None
        if isinstance(source, tuple):
            return self.trivial.floor(source, action, limit_pp)
        return self.trivial.floor(source, action, limit_pp, source.device, source.server)

    def _drop(self, action: Action) -> float:
        """The drop of an action, summed as the repair sums it."""
        p, w, a = action
        return drop_sum_pp(map(list.__getitem__, self._weight_drop_rows, w),
                           self._act_drop_rows[p][a])

    def _plan(self, action: Action) -> Plan:
        p, w, a = action
        key = (p, a, *w)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= PLAN_CACHE_MAX:
                self._plans.clear()
            bits = self.bits
            plan = self._plans[key] = Plan(p, tuple([bits[k] for k in w]),
                                           bits[a] if 0 < p < self.L else NO_ACT_BITS)
        return plan

    @staticmethod
    def path_code(path: str) -> int:
        """The index of a path in :data:`PATHS` (the codes :meth:`decide_arrays` returns)."""
        return PATHS.index(path)

    def _index(self, plan: Plan) -> Action:
        idx = {b: i for i, b in enumerate(self.bits)}
        return plan.cut, [idx[b] for b in plan.weight_bits], idx[plan.act_bits]

    def _guard(self, source: Source, action: Action, out_of_range: bool) -> Guarded:
        """Guard, fallback and refinement of the policy's action (see the module docstring)."""
        eps = _budget_pp(source)
        drop = self._drop(action)
        infeasible = drop > drop_limit_pp(eps, self.profile.compounding)
        to_optimizer = (infeasible and self.fallback == "infeasible") or \
            (out_of_range and self.fallback == "out_of_range")
        if not to_optimizer and not infeasible and not self.refine:
            return Guarded(action, "policy", drop)
        with np.errstate(all="ignore"):      # extreme requests: inf costs are handled
            req = _as_request(source)
            tables = unit_tables(self.profile, req, self.bits)
            path = "policy"
            if to_optimizer:
                action = self._index(solve(self.profile, req, self.bits, tables=tables).plan)
                path = "fallback"
            elif infeasible:
                p, w, a = action
                res = repair_indices(tables, eps, p, np.asarray(w, dtype=np.int64), a)
                action, path = (res.cut, list(res.w_idx), res.a_idx), "repaired"
            if self.refine:
                r = refine_plan(tables, eps, *action, cut_radius=self.cut_radius)
                if r.steps:
                    action, path = (r.cut, list(r.w_idx), r.a_idx), "refined"
        return Guarded(action, path, self._drop(action))

    def decide(self, request: Request | Mapping[str, object]) -> Plan:
        """The plan for one request (a Request, or a mapping of its SI fields, validated)."""
        if type(request) is Request:
            source: Source = request
            eps = request.eps_pp
            features = self._features_of_request(request)
        else:
            source = rf.from_mapping(request)
            eps = source[rf.I_EPS]
            features = self._features_of_tuple(source)
        limit = drop_limit_pp(eps, self.profile.compounding)
        action = self._policy(features, limit)
        oor = self._check_support and self.support.outside(features)
        if oor or self.refine or self._drop(action) > limit:
            action = self._guard(source, action, oor).action
        if self.trivial is not None:
            floor = self._floor(source, action, limit)
            if floor is not None:
                action = floor
        return self._plan(action)

    def decide_detailed(self, request: Request | Mapping[str, object]) -> Decision:
        """The plan with the path that decided it, its drop and the network's own plan."""
        source, features = self._intake(request)
        limit = drop_limit_pp(_budget_pp(source), self.profile.compounding)
        action = self._policy(features, limit)
        out_of_range = self._out_of_range(features)
        g = self._guard(source, action, out_of_range)
        floor = self._floor(source, g.action, limit)
        if floor is not None:
            g = Guarded(floor, "trivial", self._drop(floor))
        return Decision(plan=self._plan(g.action), path=g.path, drop_pp=g.drop_pp,
                        policy_plan=self._plan(action), out_of_range=out_of_range)

    def report(self, request: Request | Mapping[str, object]) -> dict:
        """The decision as the command line prints it: plan, figures and path."""
        req = request if isinstance(request, Request) else rf.to_request(rf.from_mapping(request))
        d = self.decide_detailed(req)
        plans = [d.plan] if d.policy_plan == d.plan else [d.plan, d.policy_plan]
        reports = plan_reports(self.profile, req, plans)
        out = {"model": self.profile.name, "path": d.path, **reports[0],
               "out_of_range": d.out_of_range}
        if len(reports) > 1:
            out["policy_plan"] = {k: reports[1][k] for k in ("cut", "weight_bits", "act_bits",
                                                             "cost", "drop_pp", "feasible")}
        return out

    # ------------------------------------------------------------------ batches

    def decide_batch(self, requests: Sequence[Request | Mapping[str, object]]
                     ) -> list[Plan | BatchItemError]:
        """Plans for many requests, every step vectorised (:mod:`runtime.batch`).

        Each item is answered on its own: a plan, or for an item that is not a valid request
        a :class:`BatchItemError` naming ``request[i]`` (never raised). All valid: all plans,
        the ones one-at-a-time decisions give.
        """
        out: list[Plan | BatchItemError | None] = [None] * len(requests)
        sources: list[Source] = []
        where: list[int] = []
        if set(map(type, requests)) == {Request}:              # validated already
            sources, where = list(requests), list(range(len(requests)))
        else:
            for i, r in enumerate(requests):
                try:
                    sources.append(r if isinstance(r, Request) else rf.from_mapping(r, f"request[{i}]"))
                    where.append(i)
                except QsplitInputError as exc:
                    out[i] = BatchItemError(i, str(exc))
        if sources:
            cuts, w_idx, act_idx, _ = rb.decide_matrix(self, rb.flat_rows(sources), sources)
            # a batch holds few distinct plans: build (or look up) each once
            distinct, inverse = rb.unique_rows(
                np.concatenate([cuts[:, None], act_idx[:, None], w_idx], axis=1))
            known = self._row_plans
            if len(known) >= PLAN_CACHE_MAX:
                known.clear()
            plans = []
            for row in map(tuple, distinct.tolist()):
                plan = known.get(row)
                if plan is None:
                    plan = known[row] = self._plan((row[0], list(row[2:2 + row[0]]), row[1]))
                plans.append(plan)
            if len(where) == len(out):
                return list(map(plans.__getitem__, inverse.tolist()))
            for j, k in zip(where, inverse.tolist(), strict=True):
                out[j] = plans[k]
        return out  # type: ignore[return-value]

    def decide_requests(self, requests: Sequence[Request]) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray, np.ndarray]:
        """:meth:`decide_arrays`' form for validated Requests, whose ``device`` and ``server``
        labels pick the processors' unit times (arrays carry no labels)."""
        cuts, w_idx, act_idx, paths = rb.decide_matrix(self, rb.flat_rows(requests), requests)
        bits = np.asarray(self.bits)
        return cuts, bits[w_idx], bits[act_idx], paths

    def decide_rows(self, rows: np.ndarray, labels: Sequence[tuple[str, str]]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`decide_requests` for requests already validated into flat SI rows
        (:data:`system.fields.FLAT_NAMES`, e.g. :func:`system.json_batch.json_rows`) with
        their (device, server) labels: no Request is built but for the rows decided one at
        a time (the optimizer's, the refined)."""
        cuts, w_idx, act_idx, paths = rb.decide_matrix(self, rows, labels=labels)
        bits = np.asarray(self.bits)
        return cuts, bits[w_idx], bits[act_idx], paths

    def decide_arrays(self, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray, np.ndarray]:
        """Plans for requests given as :func:`system.request.request_arrays`-style arrays.

        Returns (cuts (N,), weight bits (N, L) with 32 past the cut, act bits (N,), path
        codes (N,) indexing :data:`PATHS`) - the form :mod:`system.cost` evaluates.
        """
        cuts, w_idx, act_idx, paths = rb.decide_matrix(self, rf.matrix_from_arrays(arrays))
        bits = np.asarray(self.bits)
        return cuts, bits[w_idx], bits[act_idx], paths


__all__ = ["FALLBACKS", "PATHS", "BatchItemError", "Decision", "Dispatcher", "default_bundle_path"]
