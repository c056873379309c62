"""The exported actor as numpy: the MLP, the action mask as a table, the argmax per head.

The MLP runs in float32 like the trained policy, biases folded into the matrices. Rounding:
numpy's float32 products are not torch's, nor is a batch product (gemm) summed in the order
of a single one (gemv); both differ by ~1e-7 of the logits, which can only flip a head whose
two best logits are that close (:func:`near_tie` and :func:`argmax_near_tie` find those
rows for the batch form).
"""

from __future__ import annotations

import bisect
import struct

import numpy as np

from runtime.bundle import Bundle, BundleError
from system.accuracy import FEAS_TOL_PP, drop_limit_pp
from system.cost import UnitTables

#: Cap on the precomputed mask table, in entries, per bundle.
MASK_TABLE_MAX = 4_000_000


#: A plan in option-index form: (cut, weight-bit indices of units 1..cut, act-bit index).
#: A plain tuple, always unpacked: it is made once per request.
Action = tuple[int, list[int], int]


class MaskTable:
    """The env's action mask as a step function of the budget.

    ``ActionCodec.action_mask`` allows an option iff a drop it implies is feasible; that
    drop depends on the profile only. ``thresholds`` are those drops (sorted, distinct); the
    mask of a budget is row ``bisect_right(thresholds, drop_limit_pp(eps_pp))`` of ``rows``,
    which add -inf to the masked logits (MaskablePPO's -1e8: the argmax among the rest).
    ``cut_drop``, ``act_drop`` and ``weight_drop`` are each option's threshold, so a chosen
    action can be checked without building the row.
    """

    def __init__(self, bundle: Bundle, d_w: np.ndarray, d_a: np.ndarray, n_logits: int) -> None:
        self.thresholds: list[float] = []
        self.rows = np.zeros((1, n_logits), np.float32)
        if bundle.masking == "none":
            return
        L, K = d_w.shape
        k32 = bundle.codec.bits.index(32)
        prefix = np.concatenate([[0.0], np.cumsum(d_w.min(axis=1))])
        t_cut = prefix + d_a.min(axis=1)
        t_cut[0] = -np.inf
        t_act = d_a[1:L].min(axis=0) if L > 1 else np.full(K, -np.inf)
        t_w = d_w.copy()
        t_w[:, k32] = -np.inf
        t_act[k32] = -np.inf
        thr = np.concatenate([t_cut, t_act, t_w.ravel()])
        u = np.unique(thr[np.isfinite(thr)])
        if (len(u) + 1) * len(thr) > MASK_TABLE_MAX:
            raise BundleError(f"bundle {bundle.path}: action mask table too large "
                              f"({len(u) + 1} x {len(thr)})")
        self.cut_drop: list[float] = t_cut.tolist()
        self.act_drop: list[float] = t_act.tolist()
        self.weight_drop: list[list[float]] = t_w.tolist()
        allowed = thr[None, :] <= np.concatenate([[-np.inf], u])[:, None]
        allowed[:, np.isneginf(thr)] = True
        self.rows = np.where(allowed, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)
        self.thresholds = u.tolist()
        # the env's own function at a few budgets (cheap, catches drift); it reads the drops only
        tables = UnitTables(bits=bundle.codec.bits, c_w=np.zeros_like(d_w), d_w=d_w,
                            fixed=np.zeros_like(d_a), d_a=d_a)
        for e in [0.0, *u[:: max(1, len(u) // 8)].tolist(), 100.0]:
            eps = max(0.0, e - FEAS_TOL_PP)
            if not np.array_equal(bundle.codec.action_mask(tables, eps),
                                  np.isfinite(self.rows[self.row(drop_limit_pp(eps))])):
                raise BundleError(f"bundle {bundle.path}: action mask differs from "
                                  "system.codec.ActionCodec.action_mask")

    def row(self, limit_pp: float) -> int:
        """The row of ``rows`` for a budget whose :func:`drop_limit_pp` is ``limit_pp``."""
        return bisect.bisect_right(self.thresholds, limit_pp) if self.thresholds else 0

    def allows(self, action: Action, limit_pp: float) -> bool:
        """Whether the mask allows every option ``action`` uses (``limit_pp`` as in :meth:`row`;
        only where there are thresholds)."""
        p, w, a = action
        return self.cut_drop[p] <= limit_pp and self.act_drop[a] <= limit_pp \
            and (p == 0 or max(map(list.__getitem__, self.weight_drop, w)) <= limit_pp)


class PolicyNet:
    """The actor MLP with folded biases and the decoding of its heads."""

    def __init__(self, bundle: Bundle) -> None:
        self.n_units = bundle.codec.n_units
        self.n_bits = bundle.codec.n_bits
        self.k32 = bundle.codec.bits.index(32)
        n_in = bundle.encoder.n_features + (bundle.history.width(
            bundle.codec.n_units, bundle.codec.n_bits) if bundle.history else 0)
        self._pack = struct.Struct(f"<{n_in + 1}f").pack
        # x gets a trailing 1.0 and each hidden layer an extra output row whose
        # pre-activation is 20.0, so act(20.0) is exactly 1.0 for tanh (and relu, identity
        # use 1.0): one dot and one activation per layer, no separate bias add.
        self.hidden = [(_augment(h.weight, h.bias, h.activation), h.activation)
                       for h in bundle.hidden]
        self.out = np.ascontiguousarray(np.hstack([bundle.action.weight,
                                                   bundle.action.bias[:, None]]), np.float32)
        # bound methods and in-place activations, looked up once: forward runs per request
        self._steps = [(W.dot, _IN_PLACE[act]) for W, act in self.hidden]
        self._out_dot = self.out.dot

    @property
    def n_logits(self) -> int:
        """Logits of all heads: L+1 cuts, then K per head for act bits and each unit."""
        return self.out.shape[0]

    def forward(self, features: list[float]) -> np.ndarray:
        """Logits of every head for one observation (float32, gemv)."""
        x = np.frombuffer(self._pack(*features, 1.0), np.float32)
        for dot, act in self._steps:
            x = dot(x)
            if act is not None:
                act(x, x)
        return self._out_dot(x)

    def forward_batch(self, obs: np.ndarray) -> np.ndarray:
        """Logits of N observations (float32, gemm)."""
        X = np.hstack([obs, np.ones((len(obs), 1), np.float32)])
        for W, act in self.hidden:
            X = X @ W.T
            if act == "tanh":
                np.tanh(X, out=X)
            elif act == "relu":
                np.maximum(X, 0.0, out=X)
        return X @ self.out.T

    def decode(self, logits: np.ndarray) -> Action:
        """Argmax of each head the cut uses; the act index is 32 bits' where none crosses."""
        L, K = self.n_units, self.n_bits
        p = int(logits[:L + 1].argmax())
        if p == 0:
            return 0, [], self.k32
        heads = logits[L + 1:L + 1 + (p + 1) * K].reshape(p + 1, K).argmax(1).tolist()
        return p, heads[1:], (heads[0] if p < L else self.k32)


def near_tie(logits: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    """Whether the best two entries along the last axis are within ``rel`` of each other."""
    if logits.shape[-1] < 2:
        return np.zeros(logits.shape[:-1], dtype=bool)
    two = np.partition(logits, -2, axis=-1)[..., -2:]
    top = two[..., 1]
    with np.errstate(invalid="ignore"):
        return (top - two[..., 0]) <= rel * (1.0 + np.abs(top))


def argmax_near_tie(x: np.ndarray, rel: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """The argmax along a short last axis (the first index of the best, as ``np.argmax``)
    and whether a second entry comes within ``rel`` of the best (:func:`near_tie`'s margin,
    counted: an entry at least ``top - rel * (1 + |top|)``); a row holding NaN counts as a
    near tie, left to the single form.

    Elementwise across the axis's slices, each copied contiguous: numpy reduces a short last
    axis one output at a time (a batch of 1,024 x 13 heads of 7: 0.61 ms for ``np.argmax``
    and :func:`near_tie`, 0.19 ms so, timed here).
    """
    slices = np.moveaxis(x, -1, 0).copy()           # each option's entries contiguous
    top = np.maximum.reduce(slices, axis=0)
    best = np.zeros(top.shape, dtype=np.int64)
    close = np.zeros(top.shape, dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        floor = top - rel * (1.0 + np.abs(top))
        for k in range(len(slices) - 1, -1, -1):      # the last assignment is the first best
            np.putmask(best, slices[k] == top, k)
            close += slices[k] >= floor
        return best, (close >= 2) | np.isnan(top)


def _relu(x: np.ndarray, out: np.ndarray) -> None:
    np.maximum(x, _ZERO32, out=out)


#: A float32 zero as an array: half the ufunc's cost of converting the scalar 0.0 per call.
_ZERO32 = np.zeros((), np.float32)


#: Each activation applied in place (None: identity).
_IN_PLACE = {"tanh": np.tanh, "relu": _relu, "identity": None}


def _augment(weight: np.ndarray, bias: np.ndarray, activation: str) -> np.ndarray:
    """[[W, b], [0, c]] in float32, with act(c) == 1.0 exactly (tanh(20.0) rounds to 1.0)."""
    n_out, n_in = weight.shape
    out = np.zeros((n_out + 1, n_in + 1), np.float32)
    out[:n_out, :n_in] = weight
    out[:n_out, n_in] = bias
    out[n_out, n_in] = 20.0 if activation == "tanh" else 1.0
    return out
