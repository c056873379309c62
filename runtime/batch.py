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
support with ``fallback="out_of_range"``, or over budget with ``"infeasible"``) and every row
with ``refine=True``. Requests naming processors whose unit times are not the
MAC-proportional model (a measured table, a per-unit overhead) are grouped by those names:
their tables and prices are computed per group, with the names.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING

import numpy as np

from runtime import features as rf
from runtime.policy import argmax_near_tie, near_tie
from runtime.trivial import mac_proportional
from system.accuracy import drop_limit_pp
from system.bits import kernel_kappa
from system.cost import drop_sums_pp, unit_tables_batch
from system.repair import repair_batch
from system.request import Request

if TYPE_CHECKING:
    from runtime.dispatcher import Dispatcher, Source

_LABELS_OF = attrgetter("device", "server")


def _plain(d: Dispatcher, label: str) -> bool:
    """:func:`runtime.trivial.mac_proportional`, kept per label."""
    got = d._plain_labels.get(label)
    if got is None:
        got = d._plain_labels[label] = mac_proportional(d.profile, label)
    return got


def _label_groups(d: Dispatcher, labels: Sequence[tuple[str, str]] | None, n: int
                  ) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The distinct (device, server) labels as costs see them (a processor on the plain model
    named "", as in flat rows) and each row's index among them."""
    blank = ("", "")
    if labels is None:
        return [blank], np.zeros(n, dtype=np.int64)
    seen: dict[tuple[str, str], int] = {blank: 0}
    group_of: dict[tuple[str, str], int] = {}
    for key in dict.fromkeys(labels):            # the distinct labels, in first-seen order
        # a processor on the plain model costs as no name does: each side is named only
        # where its times differ (a plain device beside an overhead server joins one group)
        canon = ("" if _plain(d, key[0]) else key[0], "" if _plain(d, key[1]) else key[1])
        group_of[key] = seen.setdefault(canon, len(seen))
    return list(seen), np.fromiter(map(group_of.__getitem__, labels), np.int64, len(labels))


def flat_rows(sources: Sequence[Source]) -> np.ndarray:
    """The flat rows of requests (Requests, whose rows their validation made, or
    already-validated flat tuples), (N, fields)."""
    return np.fromiter(chain.from_iterable(
        s if isinstance(s, tuple) else s.flat_row for s in sources),
        np.float64, len(sources) * len(rf.FIELDS)).reshape(len(sources), -1)


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D array and each row's index among them. Rows of small
    non-negative integers (plans in index form) are packed into one integer each; others
    are compared as bytes. Either is far quicker than ``np.unique(axis=0)`` on many rows."""
    x = np.ascontiguousarray(x)
    if x.dtype.kind in "iu" and x.size and x.min() >= 0:
        radix = x.max(axis=0).astype(np.int64) + 1
        if float(np.prod(radix.astype(np.float64))) < 2.0 ** 62:
            place = np.concatenate([[1], np.cumprod(radix[:0:-1])])[::-1]
            _, first, inverse = np.unique(x.astype(np.int64) @ place, return_index=True,
                                          return_inverse=True)
            return x[first], inverse.reshape(-1)
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
    # a gemm rounds unlike a gemv: rows with a near tie are decided by the single form
    best, head_tie = argmax_near_tie(heads)
    act_idx = np.where(inner, best[:, 0], d.net.k32)
    w_idx = best[:, 1:]
    tie = near_tie(logits[:, :L + 1])
    used = np.concatenate([inner[:, None], np.arange(L)[None, :] < cuts[:, None]], axis=1)
    tie |= np.any(used & head_tie, axis=1)
    for i in np.flatnonzero(tie).tolist():
        row_logits = d.net.forward(obs[i].tolist())
        row_logits += d.mask.rows[mask_rows[i]]
        p, w, a = d.net.decode(row_logits)
        cuts[i], act_idx[i], w_idx[i, :p] = p, a, w
    return cuts, w_idx, act_idx


def decide_matrix(d: Dispatcher, M: np.ndarray, sources: Sequence[Source] | None = None,
                  labels: Sequence[tuple[str, str]] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index form of N decisions: cuts, weight indices (the 32-bit index past the cut), act
    indices, path codes. ``sources`` (each a Request or its flat tuple) default to the rows,
    named by ``labels`` ((device, server) per row; default: a Request's own, else none)."""
    if labels is None and sources is not None:
        labels = [_LABELS_OF(s) if isinstance(s, Request) else ("", "") for s in sources]
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
    groups, group = _label_groups(d, labels, N)
    # rows the single-request guard decides: the optimizer's, or refined
    single = infeasible & (d.fallback == "infeasible")
    if d.fallback == "out_of_range":
        single |= out_of_range
    if d.refine:
        single[:] = True
    paths = np.full(N, d.path_code("policy"), dtype=np.int64)

    def source(i: int) -> Source:
        if sources is not None:
            return sources[i]
        row = tuple(M[i].tolist())
        return row if labels is None else rf.to_request(row, *labels[i])

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
    kap = kernel_kappa(np.asarray(d.bits), arr["dev_kappa"])
    if rep.size:
        # the tables depend on the labels (one call per group); the repair is per row, so
        # one call repairs every group's rows (fewer numpy calls, one scalar tail)
        c_w = np.empty((rep.size, L, d.K))
        fixed = np.empty((rep.size, L + 1, d.K))
        for g, (dev, srv) in enumerate(groups):
            j = np.flatnonzero(group[rep] == g)
            if j.size:
                r = rep[j]
                c_w[j], fixed[j] = unit_tables_batch(
                    d.profile, {k: v[r] for k, v in arr.items()}, d.bits, device=dev,
                    server=srv, kap=kap[r])
        rc, rw, ra, _ = repair_batch(c_w, fixed, d._weight_drops, d._act_drops,
                                     arr["eps_pp"][rep], cuts[rep], w_idx[rep], act_idx[rep],
                                     d.bits, d.profile.compounding)
        cuts[rep], w_idx[rep], act_idx[rep] = rc, rw, ra
        paths[rep] = d.path_code("repaired")
    if d.trivial is not None:
        redo_parts = []
        for g, (dev, srv) in enumerate(groups):
            rows = np.flatnonzero(group == g)
            if not rows.size:
                continue
            every = rows.size == N                      # one group: no rows to gather
            sub = arr if every else {k: v[rows] for k, v in arr.items()}
            prices = d.trivial.prices_batch(sub, kap if every else kap[rows], dev, srv)
            pick, undecided = d.trivial.floor_batch(
                prices, *((cuts, w_idx, act_idx, limit) if every else
                          (cuts[rows], w_idx[rows], act_idx[rows], limit[rows])), dev, srv)
            for j in np.flatnonzero(pick >= 0).tolist():
                put(int(rows[j]), d.trivial.actions[int(pick[j])])
                paths[rows[j]] = d.path_code("trivial")
            redo_parts.append(rows[undecided])
        redo = np.concatenate(redo_parts) if redo_parts else np.zeros(0, np.int64)
        limits = limit.tolist()
        for i in redo.tolist():
            p = int(cuts[i])
            floor = d._floor(source(i), (p, w_idx[i, :p].tolist(), int(act_idx[i])), limits[i])
            if floor is not None:
                put(i, floor)
                paths[i] = d.path_code("trivial")
    return cuts, w_idx, act_idx, paths
