"""The dispatcher's batch form: every step of a decision vectorised over the requests.

:func:`decide_matrix` takes N requests as a matrix of flat rows (:data:`runtime.features.FIELDS`)
and does, with a few numpy calls per step, what :meth:`runtime.Dispatcher.decide` does
per request: the observation, the forward pass, the mask and the argmax per head, the drop,
the support check, the repair (:func:`system.repair.repair_batch` on
:func:`system.cost.unit_tables_batch`) and the floor of fixed plans
(:meth:`runtime.trivial.TrivialPlans.floor_batch`). The answers equal the single form's by
construction: the repair and the tables are the same operations elementwise, and where a
batch product rounds differently from the single one (the forward pass, the fixed plans'
costs) the rows whose answer that could change are decided by the single-request code.

Per row, through the single-request code: the exact optimizer's rows (out of the training
support with ``fallback="out_of_range"``, or over budget with ``"infeasible"``), every row
with ``refine=True``, and requests naming processors whose unit times are not the
MAC-proportional model (their tables and prices depend on the names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from runtime import features as rf
from runtime.policy import near_tie
from runtime.trivial import mac_proportional
from system.accuracy import drop_limit_pp
from system.bits import kernel_kappa
from system.cost import drop_sums_pp, unit_tables_batch
from system.repair import repair_batch
from system.request import Request

if TYPE_CHECKING:
    from runtime.dispatcher import Dispatcher, Source

def _plain(d: Dispatcher, label: str) -> bool:
    """:func:`runtime.trivial.mac_proportional`, kept per label."""
    got = d._plain_labels.get(label)
    if got is None:
        got = d._plain_labels[label] = mac_proportional(d.profile, label)
    return got


def _named(d: Dispatcher, sources: Sequence[Source]) -> np.ndarray:
    """(N,) bool: the request names a processor whose unit times are not the plain model."""
    pairs: dict[tuple[str, str], bool] = {("", ""): False}
    out = []
    for s in sources:
        if isinstance(s, Request):
            key = (s.device, s.server)
            flag = pairs.get(key)
            if flag is None:
                flag = pairs[key] = not (_plain(d, s.device) and _plain(d, s.server))
            out.append(flag)
        else:
            out.append(False)
    return np.array(out, dtype=bool)


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D array and each row's index among them (rows compared as
    bytes: far quicker than ``np.unique(axis=0)`` on many rows)."""
    x = np.ascontiguousarray(x)
    v = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(v, return_index=True, return_inverse=True)
    return x[first], inverse.reshape(-1)


def _policy(d: Dispatcher, obs: np.ndarray, limit: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cuts, weight indices (N, L) and act indices of the network's actions (masked argmax)."""
    N, L, K = len(obs), d.L, d.K
    logits = d.net.forward_batch(obs)
    mask_rows = np.searchsorted(d.mask.thresholds, limit, side="right") \
        if d.mask.thresholds else np.zeros(N, np.int64)
    logits += d.mask.rows[mask_rows]
    cuts = logits[:, :L + 1].argmax(1)
    inner = (cuts > 0) & (cuts < L)
    heads = logits[:, L + 1:].reshape(N, L + 1, K)
    act_idx = np.where(inner, heads[:, 0].argmax(1), d.net.k32)
    w_idx = heads[:, 1:].argmax(2)
    # a gemm rounds unlike a gemv: rows with a near tie are decided by the single form
    tie = near_tie(logits[:, :L + 1])
    used = np.concatenate([inner[:, None], np.arange(L)[None, :] < cuts[:, None]], axis=1)
    tie |= np.any(used & near_tie(heads), axis=1)
    for i in np.flatnonzero(tie).tolist():
        row_logits = d.net.forward(obs[i].tolist())
        row_logits += d.mask.rows[mask_rows[i]]
        p, w, a = d.net.decode(row_logits)
        cuts[i], act_idx[i], w_idx[i, :p] = p, a, w
    return cuts, w_idx, act_idx


def decide_matrix(d: Dispatcher, M: np.ndarray, sources: Sequence[Source] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index form of N decisions: cuts, weight indices (the 32-bit index past the cut), act
    indices, path codes. ``sources`` (each a Request or its flat tuple) default to the rows."""
    N, L, k32 = len(M), d.L, d.net.k32
    arr = rf.columns(M)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        obs = d.encoder.encode_arrays(arr)
    limit = drop_limit_pp(arr["eps_pp"], d.profile.compounding)
    cuts, w_idx, act_idx = _policy(d, obs, limit)
    on = np.arange(L)[None, :] < cuts[:, None]
    w_idx = np.where(on, w_idx, k32)
    drop = drop_sums_pp(np.where(on, d._weight_drops[np.arange(L)[None, :], w_idx], 0.0),
                        d._act_drops[cuts, act_idx])
    infeasible = drop > limit
    out_of_range = d.support.outside_batch(obs)
    named = _named(d, sources) if sources is not None else np.zeros(N, dtype=bool)
    # rows the single-request guard decides: the optimizer's, refined, or on named processors
    single = (infeasible & (d.fallback == "infeasible")) | named
    if d.fallback == "out_of_range":
        single |= out_of_range
    if d.refine:
        single[:] = True
    paths = np.full(N, d.path_code("policy"), dtype=np.int64)

    def source(i: int) -> Source:
        return sources[i] if sources is not None else tuple(M[i].tolist())

    def put(i: int, action: tuple[int, list[int], int]) -> None:
        p, w, a = action
        cuts[i], act_idx[i], w_idx[i] = p, a, k32
        w_idx[i, :p] = w

    for i in np.flatnonzero(single).tolist():
        p = int(cuts[i])
        g = d._guard(source(i), (p, w_idx[i, :p].tolist(), int(act_idx[i])), bool(out_of_range[i]))
        put(i, g.action)
        paths[i] = d.path_code(g.path)
    rep = np.flatnonzero(infeasible & ~single)
    kinds, inverse = unique_rows(arr["dev_kappa"])
    kap = np.asarray([kernel_kappa(np.asarray(d.bits), k) for k in kinds]).reshape(
        len(kinds), d.K)[inverse]
    if rep.size:
        c_w, fixed = unit_tables_batch(d.profile, {k: v[rep] for k, v in arr.items()}, d.bits,
                                       kap=kap[rep])
        rc, rw, ra, _ = repair_batch(c_w, fixed, d._weight_drops, d._act_drops, arr["eps_pp"][rep],
                                     cuts[rep], w_idx[rep], act_idx[rep], d.bits,
                                     d.profile.compounding)
        cuts[rep], w_idx[rep], act_idx[rep] = rc, rw, ra
        paths[rep] = d.path_code("repaired")
    if d.trivial is not None:
        plain = np.flatnonzero(~named)
        undecided = np.zeros(len(plain), dtype=bool)
        if plain.size:
            prices = d.trivial.prices_batch({k: v[plain] for k, v in arr.items()}, kap[plain])
            pick, undecided = d.trivial.floor_batch(prices, cuts[plain], w_idx[plain],
                                                    act_idx[plain], limit[plain])
            for j in np.flatnonzero(pick >= 0).tolist():
                put(int(plain[j]), d.trivial.actions[int(pick[j])])
                paths[plain[j]] = d.path_code("trivial")
        redo = np.concatenate([plain[undecided], np.flatnonzero(named)])
        limits = limit.tolist()
        for i in redo.tolist():
            p = int(cuts[i])
            floor = d._floor(source(i), (p, w_idx[i, :p].tolist(), int(act_idx[i])), limits[i])
            if floor is not None:
                put(i, floor)
                paths[i] = d.path_code("trivial")
    return cuts, w_idx, act_idx, paths
