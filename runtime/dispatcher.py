"""The runtime dispatcher: an exported policy deciding plans on the edge with numpy alone.

Per request: the observation (:mod:`runtime.features`, bit-identical to the env's), the
actor MLP in float32 like the trained policy (biases folded into the matrices), argmax per
head among the options the env's action mask allows (MaskablePPO bundles), the canonical
plan, then the guard. Rounding: numpy's float32 products are not torch's, nor is a batch
product (gemm) summed in the order of a single one (gemv); both differ by ~1e-7 of the
logits, which can only flip a head whose two best logits are that close. The batch form
re-decides every row with such a near tie through the single-request code, so the two forms
always agree; against torch the tests find no difference on 10,000 requests.

The guard recomputes the plan's drop from the profile's accuracy model and, when it exceeds
the budget, does exactly what ``QuantSplit-v0``'s step does: :func:`system.repair.plan_cost_drop`
decides whether to repair and :func:`system.repair.repair_indices` repairs (the same code).
So every plan returned is within budget, and equal to SB3's ``predict(deterministic=True)``
followed by the env's repair. Options:

* ``fallback="infeasible"``: an infeasible policy plan goes to the exact optimizer
  (:func:`system.optimal.solve`) instead of the repair; ``"out_of_range"`` also sends a
  request whose features fall outside the encoder's range (clipped: the policy never saw
  such a request) to it. ``"none"`` (default) is the env's behaviour.
* ``refine=True``: a search with the cost model around the guarded plan (a Lagrangian
  sweep over the cuts, then a local search over neighbouring bit widths and cuts,
  :mod:`runtime.refine`); never worse, never infeasible, a few hundred microseconds.

``Decision.path`` says what decided: ``policy``, ``repaired``, ``fallback`` or ``refined``.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from runtime import features as rf
from runtime.bundle import Bundle, BundleError, load_bundle
from runtime.refine import refine as refine_plan
from system.accuracy import FEAS_TOL_PP
from system.cost import plan_report, unit_tables
from system.errors import QsplitInputError
from system.optimal import solve
from system.plan import NO_ACT_BITS, Plan
from system.repair import plan_cost_drop, repair_indices
from system.request import Request

PATHS = ("policy", "repaired", "fallback", "refined")
FALLBACKS = ("none", "infeasible", "out_of_range")
DEFAULT_MODEL = "resnet18"
#: Cap on the precomputed mask table, in entries, per bundle.
_MASK_TABLE_MAX = 4_000_000


@dataclass(frozen=True)
class Decision:
    """A plan and how it was reached."""

    plan: Plan
    path: str                 # policy | repaired | fallback | refined
    drop_pp: float            # the guard's drop of ``plan`` (Python sum, as the repair's)
    policy_plan: Plan         # what the network said, before the guard
    out_of_range: bool        # a feature was clipped: the request is outside the trained range


def bundles_root() -> Path:
    """Where the committed default bundles live (package data ``runtime/bundles``)."""
    return Path(str(resources.files("runtime").joinpath("bundles")))


def default_bundle_path(model: str = DEFAULT_MODEL) -> Path:
    """The committed default bundle of a shipped model."""
    root = bundles_root()
    p = root / model
    if not (p / "contract.json").is_file():
        known = sorted(d.name for d in root.iterdir() if (d / "contract.json").is_file()) \
            if root.is_dir() else []
        raise BundleError(f"model: no committed bundle for {model!r}; known: {known}")
    return p


def _dummy_request() -> Request:
    return Request(dev_flops_per_s=1e9, dev_kappa=(0.0, 0.0, 0.0, 1.0), p_comp_w=1.0,
                   p_tx_w=1.0, p_rx_w=1.0, p_idle_w=1.0, srv_flops_per_s=1e12, srv_load=1.0,
                   up_bps=1e6, down_bps=1e6, rtt_s=0.0, eps_pp=1.0)


class Dispatcher:
    """Decides plans from an exported policy bundle (see the module docstring)."""

    def __init__(self, bundle: Bundle, *, fallback: str = "none", refine: bool = False,
                 cut_radius: int = 1) -> None:
        if fallback not in FALLBACKS:
            raise QsplitInputError(f"fallback: {fallback!r} is not one of {list(FALLBACKS)}")
        self.bundle = bundle
        self.profile = bundle.profile
        self.encoder = bundle.encoder
        self.codec = bundle.codec
        self.bits = bundle.codec.bits
        self.fallback = fallback
        self.refine = bool(refine)
        self.cut_radius = int(cut_radius)
        self._plain = fallback == "none" and not self.refine     # the fast path applies
        L, K = self.profile.n_units, len(self.bits)
        self.L, self.K = L, K
        self._k32 = self.bits.index(32)
        self._feat = rf.feature_function(self.encoder)
        self._feat_req = rf.feature_function(self.encoder, source="request")
        self._f32 = struct.Struct(f"<{self.encoder.n_features + 1}f")
        self._clip = float(self.encoder.clip)
        # Biases folded in: x gets a trailing 1.0 and each hidden layer an extra output row
        # whose pre-activation is 20.0, so act(20.0) is exactly 1.0 for tanh (and relu,
        # identity use 1.0): one dot and one activation per layer, no separate bias add.
        self._hidden = [(_augment(h.weight, h.bias, h.activation), h.activation)
                        for h in bundle.hidden]
        self._Wa = np.ascontiguousarray(np.hstack([bundle.action.weight,
                                                   bundle.action.bias[:, None]]), np.float32)
        # drop tables: they depend on the profile and bits only (not on the request)
        T0 = unit_tables(self.profile, _dummy_request(), self.bits)
        self._DW = T0.d_w.tolist()
        self._DA = T0.d_a.tolist()
        self._dw = T0.d_w
        self._da = T0.d_a
        self._init_mask(T0)

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, path: str | Path | None = None, *, model: str = DEFAULT_MODEL,
             **options: object) -> Dispatcher:
        """Verify and load a bundle folder (default: the committed bundle of ``model``)."""
        p = Path(path) if path is not None else default_bundle_path(model)
        return cls(load_bundle(p), **options)  # type: ignore[arg-type]

    def _init_mask(self, T0: object) -> None:
        """Thresholds of the env's action mask, and a row of 0 / -inf per threshold interval.

        ``ActionCodec.action_mask`` allows an option iff a drop it implies is <= eps_pp +
        FEAS_TOL_PP; that drop depends on the profile only, so the mask is a step function
        of the budget. The thresholds are computed by the same expressions; the mask of a
        request is row ``bisect_right(thresholds, eps_pp + FEAS_TOL_PP)`` of a table whose
        rows add -inf to the masked logits (MaskablePPO's -1e8: the argmax among the rest).
        """
        self._thr: list[float] = []
        self._bm = np.zeros((1, self._Wa.shape[0]), np.float32)
        if self.bundle.masking == "none":
            return
        L, K, dw, da = self.L, self.K, self._dw, self._da
        prefix = np.concatenate([[0.0], np.cumsum(dw.min(axis=1))])
        t_cut = prefix + da.min(axis=1)
        t_cut[0] = -np.inf
        t_act = da[1:L].min(axis=0) if L > 1 else np.full(K, -np.inf)
        t_w = dw.copy()
        t_w[:, self._k32] = -np.inf
        t_act[self._k32] = -np.inf
        thr = np.concatenate([t_cut, t_act, t_w.ravel()])
        u = np.unique(thr[np.isfinite(thr)])
        if (len(u) + 1) * len(thr) > _MASK_TABLE_MAX:
            raise BundleError(f"bundle {self.bundle.path}: action mask table too large "
                              f"({len(u) + 1} x {len(thr)})")
        self._TC = t_cut.tolist()                 # thresholds by option, for the fast path
        self._TA = t_act.tolist()
        self._TW = t_w.tolist()
        allowed = thr[None, :] <= np.concatenate([[-np.inf], u])[:, None]
        allowed[:, ~np.isfinite(thr)] = True
        self._bm = np.where(allowed, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)
        self._thr = u.tolist()
        # check against the env's own function at a few budgets (cheap, catches drift)
        for e in [0.0, *u[:: max(1, len(u) // 8)].tolist(), 100.0]:
            eps = max(0.0, e - FEAS_TOL_PP)
            want = self.codec.action_mask(T0, eps)            # type: ignore[arg-type]
            got = np.isfinite(self._bm[self._mask_row(eps)])
            if not np.array_equal(want, got):
                raise BundleError(f"bundle {self.bundle.path}: action mask differs from "
                                  "system.codec.ActionCodec.action_mask")

    def _mask_row(self, eps_pp: float) -> int:
        return bisect.bisect_right(self._thr, eps_pp + FEAS_TOL_PP) if self._thr else 0

    # ------------------------------------------------------------------ single request

    def _flat(self, request: Request | Mapping[str, object], where: str = "request") -> tuple[float, ...]:
        if isinstance(request, Request):
            return rf.from_request(request)
        return rf.from_mapping(request, where)  # type: ignore[arg-type]

    def _policy(self, t: tuple[float, ...]) -> tuple[int, list[int], int, list[float]]:
        """The network's action for one request: (cut, weight-bit indices, act index, features).

        See :meth:`_decode`.
        """
        feats = self._feat(t)
        lg = self._forward(feats)
        if self._thr:
            lg += self._bm[bisect.bisect_right(self._thr, t[rf.I_EPS] + FEAS_TOL_PP)]
        return (*self._decode(lg), feats)

    def _decode(self, lg: np.ndarray) -> tuple[int, list[int], int]:
        """Argmax of each head: the cut, the weight-bit indices of the device units, the act index.

        Act index is the index of 32 bits where no activation crosses (cut 0 or L), as in
        :func:`system.repair.repair_indices`. Only the heads the cut uses are looked at.
        """
        L, K = self.L, self.K
        p = int(lg[:L + 1].argmax())
        if p == 0:
            return 0, [], self._k32
        heads = lg[L + 1:L + 1 + (p + 1) * K].reshape(p + 1, K).argmax(1).tolist()  # act, units
        return p, heads[1:], (heads[0] if p < L else self._k32)

    def _forward(self, feats: list[float]) -> np.ndarray:
        """Logits of every head for one observation (float32, gemv); the batch's tie-breaker."""
        x = np.frombuffer(self._f32.pack(*feats, 1.0), np.float32)
        for W, act in self._hidden:
            x = W.dot(x)
            if act == "tanh":
                np.tanh(x, out=x)
            elif act == "relu":
                np.maximum(x, 0.0, out=x)
        return self._Wa.dot(x)

    def _out_of_range(self, feats: list[float]) -> bool:
        """A feature was clipped: the request lies outside the range the policy was trained on."""
        return self._clip in feats or -self._clip in feats

    def _drop(self, p: int, w: list[int], a: int) -> float:
        """The drop as :func:`system.repair.repair_indices` sums it (same values, same order)."""
        return sum([*map(_row_get, self._DW, w), self._DA[p][a]])

    def _plan(self, p: int, w: Sequence[int], a: int) -> Plan:
        bits = self.bits
        return Plan(p, tuple([bits[k] for k in w]), bits[a] if 0 < p < self.L else NO_ACT_BITS)

    def _guard(self, t: tuple[float, ...], p: int, w: list[int], a: int,
               oor: bool) -> tuple[int, list[int] | tuple[int, ...], int, str, float]:
        """Guard, fallback and refinement of the policy's action (see the module docstring)."""
        eps = t[rf.I_EPS]
        drop = self._drop(p, w, a)
        path = "policy"
        if drop <= eps + FEAS_TOL_PP and not (oor and self.fallback == "out_of_range") \
                and not self.refine:
            return p, w, a, path, drop
        with np.errstate(all="ignore"):      # extreme requests: inf costs are handled
            return self._slow(t, p, w, a, oor, drop)

    def _slow(self, t: tuple[float, ...], p: int, w: list[int], a: int, oor: bool,
              drop: float) -> tuple[int, list[int] | tuple[int, ...], int, str, float]:
        """The guard's slow half: the env's repair, the optimizer, the refinement."""
        eps = t[rf.I_EPS]
        path = "policy"
        T = None
        if drop > eps + FEAS_TOL_PP or (oor and self.fallback == "out_of_range"):
            req = rf.to_request(t)
            T = unit_tables(self.profile, req, self.bits)
            wi = np.asarray(w, dtype=np.int64)
            if drop > eps + FEAS_TOL_PP and plan_cost_drop(T, p, wi, a)[1] <= eps + FEAS_TOL_PP:
                pass  # the env's own test (numpy's sum) calls it feasible: the env keeps it
            elif self.fallback != "none":
                sol = solve(self.profile, req, self.bits, tables=T)
                idx = {b: i for i, b in enumerate(self.bits)}
                p, w = sol.plan.cut, [idx[b] for b in sol.plan.weight_bits]
                a = idx[sol.plan.act_bits]
                drop, path = self._drop(p, w, a), "fallback"
            else:
                res = repair_indices(T, eps, p, wi, a)
                p, w, a, drop = res.cut, list(res.w_idx), res.a_idx, self._drop(
                    res.cut, list(res.w_idx), res.a_idx)
                path = "repaired" if res.repaired else "policy"
        if self.refine:
            if T is None:
                T = unit_tables(self.profile, rf.to_request(t), self.bits)
            r = refine_plan(T, eps, p, w, a, cut_radius=self.cut_radius)
            if r.moves:
                p, w, a, path = r.cut, list(r.w_idx), r.a_idx, "refined"
                drop = self._drop(p, w, a)
        return p, w, a, path, drop

    def decide(self, request: Request | Mapping[str, object]) -> Plan:
        """The plan for one request (a Request, or a mapping of its SI fields, validated)."""
        if type(request) is Request:
            feats = self._feat_req(request)
            eps = request.eps_pp
        else:
            t = self._flat(request)
            feats = self._feat(t)
            eps = t[rf.I_EPS]
        lg = self._forward(feats)
        E = eps + FEAS_TOL_PP
        p, w, a = self._decode(lg)
        # MaskablePPO: the argmax among the allowed options. If every option picked above is
        # allowed it is that argmax already (first index on ties too); else mask and redo.
        if self._thr and not (self._TC[p] <= E and self._TA[a] <= E
                              and (p == 0 or max(map(_row_get, self._TW, w)) <= E)):
            lg += self._bm[bisect.bisect_right(self._thr, E)]
            p, w, a = self._decode(lg)
        if self._plain and self._drop(p, w, a) <= E:
            return self._plan(p, w, a)
        if type(request) is Request:
            t = rf.from_request(request)
        p, w, a, _, _ = self._guard(t, p, w, a, self._out_of_range(feats))
        return self._plan(p, w, a)

    def decide_detailed(self, request: Request | Mapping[str, object]) -> Decision:
        """The plan with the path that decided it, its drop and the network's own plan."""
        t = self._flat(request)
        p0, w0, a0, feats = self._policy(t)
        oor = self._out_of_range(feats)
        p, w, a, path, drop = self._guard(t, p0, w0, a0, oor)
        return Decision(plan=self._plan(p, w, a), path=path, drop_pp=drop,
                        policy_plan=self._plan(p0, w0, a0), out_of_range=oor)

    def report(self, request: Request | Mapping[str, object]) -> dict:
        """The decision as the command line prints it: plan, figures and path."""
        t = self._flat(request)
        d = self.decide_detailed(request)
        req = rf.to_request(t)
        out = {"model": self.profile.name, "path": d.path, **plan_report(self.profile, req, d.plan),
               "out_of_range": d.out_of_range}
        if d.policy_plan != d.plan:
            pr = plan_report(self.profile, req, d.policy_plan)
            out["policy_plan"] = {k: pr[k] for k in ("cut", "weight_bits", "act_bits", "cost",
                                                     "drop_pp", "feasible")}
        return out

    # ------------------------------------------------------------------ batches

    def decide_batch(self, requests: Sequence[Request | Mapping[str, object]]) -> list[Plan]:
        """Plans for many requests: one vectorised forward pass, the guard per row as above."""
        rows = [self._flat(r, f"request[{i}]") for i, r in enumerate(requests)]
        if not rows:
            return []
        cuts, W, A, _ = self._batch(rows)
        out = []
        for i in range(len(rows)):
            p = int(cuts[i])
            out.append(self._plan(p, W[i][:p], int(A[i])))
        return out

    def decide_arrays(self, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray, np.ndarray]:
        """Plans for requests given as :func:`system.codec.request_arrays`-style arrays.

        Returns (cuts (N,), weight bits (N, L) with 32 past the cut, act bits (N,), path
        codes (N,) indexing :data:`PATHS`) - the form :mod:`system.cost` evaluates.
        """
        rows = _rows_from_arrays(arrays)
        cuts, W, A, paths = self._batch(rows)
        bits = np.asarray(self.bits)
        return cuts, bits[W], bits[A], paths

    def _batch(self, rows: list[tuple[float, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                             np.ndarray]:
        """Index form of the batch: cuts, weight indices (k32 past the cut), act indices, paths."""
        N, L, K, k32 = len(rows), self.L, self.K, self._k32
        arr = rf.to_arrays(rows)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            obs = self.encoder.encode_arrays(arr)
        X = np.hstack([obs, np.ones((N, 1), np.float32)])
        for Wl, act in self._hidden:
            X = X @ Wl.T
            if act == "tanh":
                np.tanh(X, out=X)
            elif act == "relu":
                np.maximum(X, 0.0, out=X)
        logits = X @ self._Wa.T
        eps = arr["eps_pp"]
        mrow = np.searchsorted(self._thr, eps + FEAS_TOL_PP, side="right") if self._thr \
            else np.zeros(N, np.int64)
        if self._thr:
            logits += self._bm[mrow]
        cuts = logits[:, :L + 1].argmax(1)
        inner = (cuts > 0) & (cuts < L)
        heads = logits[:, L + 1:].reshape(N, L + 1, K)
        A = np.where(inner, heads[:, 0].argmax(1), k32)
        Wk = heads[:, 1:].argmax(2)
        # near ties: re-decide those rows with the single-request code (see the module doc)
        tie = _near_tie(logits[:, :L + 1])
        used = np.concatenate([inner[:, None], np.arange(L)[None, :] < cuts[:, None]], axis=1)
        tie |= np.any(used & _near_tie(heads), axis=1)
        for i in np.flatnonzero(tie).tolist():
            lg = self._forward(obs[i].tolist())
            lg += self._bm[mrow[i]]
            p = int(lg[:L + 1].argmax())
            hh = lg[L + 1:].reshape(L + 1, K).argmax(1)
            cuts[i], A[i], Wk[i] = p, (hh[0] if 0 < p < L else k32), hh[1:]
        inner = (cuts > 0) & (cuts < L)
        on = np.arange(L)[None, :] < cuts[:, None]
        Wk = np.where(on, Wk, k32)
        drop = np.where(on, self._dw[np.arange(L)[None, :], Wk], 0.0).sum(1) + self._da[cuts, A]
        clip = self._clip
        oor = np.any(np.abs(obs) >= np.float32(clip), axis=1)
        # rows the guard must look at one by one: over budget or within rounding of it
        # (the scalar test is the exact one), out of range with that fallback, or refined
        slow = drop > (eps + FEAS_TOL_PP) - 1e-12 * (eps + 1.0)
        if self.fallback == "out_of_range":
            slow |= oor
        if self.refine:
            slow[:] = True
        paths = np.zeros(N, dtype=np.int64)
        for i in np.flatnonzero(slow).tolist():
            p = int(cuts[i])
            p, w, a, path, _ = self._guard(rows[i], p, Wk[i, :p].tolist(), int(A[i]),
                                           bool(oor[i]))
            cuts[i], A[i] = p, a
            Wk[i] = k32
            Wk[i, :p] = w
            paths[i] = PATHS.index(path)
        return cuts, Wk, A, paths


_row_get = list.__getitem__


def _near_tie(logits: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    """Whether the best two entries along the last axis are within ``rel`` of each other."""
    if logits.shape[-1] < 2:
        return np.zeros(logits.shape[:-1], dtype=bool)
    two = np.partition(logits, -2, axis=-1)[..., -2:]
    top = two[..., 1]
    with np.errstate(invalid="ignore"):
        return (top - two[..., 0]) <= rel * (1.0 + np.abs(top))


def _augment(weight: np.ndarray, bias: np.ndarray, activation: str) -> np.ndarray:
    """[[W, b], [0, c]] in float32, with act(c) == 1.0 exactly (tanh(20.0) rounds to 1.0)."""
    n_out, n_in = weight.shape
    out = np.zeros((n_out + 1, n_in + 1), np.float32)
    out[:n_out, :n_in] = weight
    out[:n_out, n_in] = bias
    out[n_out, n_in] = 20.0 if activation == "tanh" else 1.0
    return out


def _rows_from_arrays(arrays: Mapping[str, np.ndarray]) -> list[tuple[float, ...]]:
    """Validate request arrays field by field (errors name the field and the first bad row)."""
    if not isinstance(arrays, Mapping):
        raise QsplitInputError("requests: expected a mapping of field -> array")
    cols = []
    n = None
    for f in (*rf.SCALAR_FIELDS, "dev_kappa"):
        if f not in arrays:
            if f in ("beta_s_per_j", "reuse"):
                cols.append(None)
                continue
            raise QsplitInputError(f"requests: missing required key {f!r}")
        a = np.asarray(arrays[f])
        if a.dtype.kind not in "fiu":
            raise QsplitInputError(f"requests.{f}: expected numbers, got dtype {a.dtype}")
        a = a.astype(np.float64)
        m = a.shape[0] if a.ndim else -1
        if n is None:
            n = m
        shape = (n, 4) if f == "dev_kappa" else (n,)
        if a.shape != shape:
            raise QsplitInputError(f"requests.{f}: expected shape {shape}, got {a.shape}")
        cols.append(a)
    assert n is not None
    defaults = {"beta_s_per_j": 0.0, "reuse": 1.0}
    full = [c if c is not None else np.full(n, defaults[f]) for f, c in
            zip((*rf.SCALAR_FIELDS, "dev_kappa"), cols, strict=True)]
    M = np.column_stack([*full[:-1], full[-1]]) if n else np.zeros((0, len(rf.FIELDS)))
    ok = np.isfinite(M).all(axis=1)
    for j, f in enumerate(rf.SCALAR_FIELDS):
        lo, hi, lo_open, hi_open = rf.RANGES[f]
        x = M[:, j]
        if lo is not None:
            ok &= (x > lo) if lo_open else (x >= lo)
        if hi is not None:
            ok &= (x < hi) if hi_open else (x <= hi)
    ok &= (M[:, len(rf.SCALAR_FIELDS):] >= 0).all(axis=1) & (M[:, -1] == 1.0)
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        raise rf._explain(f"request[{i}]", M[i].tolist())
    return [tuple(r) for r in M.tolist()]


__all__ = ["FALLBACKS", "PATHS", "Decision", "Dispatcher", "default_bundle_path"]
