"""Many requests from their JSON form at once: a batch's intake, checked column by column.

One item through :func:`system.request.request_from_json_dict` and ``Request``'s own checks
costs about 25 us, most of it the Python of one value at a time. A batch is mostly items of
one shape: the same keys and the same catalog names. :func:`json_rows` groups the items by
(key set, device, server) and checks each group's columns with numpy against the same
table (:data:`system.fields.REQUEST_FIELDS`): the types, each value's range in the units
written, its SI value, the device speed factor, then the SI ranges Request checks. An item
is taken only when every check passes; any other item (not a mapping, a string for a
number, out of range, an unknown catalog name, a key written oddly) is *deferred*, left to
the one-item parser, which decides it and words its error. So the rows taken are the flat
rows (:data:`system.fields.FLAT_NAMES`, SI) those items give one at a time, bit for bit:
the conversions are the same IEEE operations elementwise (``tests/test_json_batch.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from system.bits import KERNEL_WIDTHS
from system.errors import QsplitInputError
from system.fields import REQUEST_FIELDS, SCALAR_NAMES, WIDTH_FIELDS, flat_in_range, inside_array
from system.request import _REQUIRED, REQUEST_JSON_FIELDS, _catalog_si, _si

#: The keys of a per-width entry as a user writes them ("4", "8", ...).
WIDTH_KEYS = tuple(str(w) for w in KERNEL_WIDTHS)
_WIDTH_KEY_SET = frozenset(WIDTH_KEYS)
_ALLOWED = frozenset(REQUEST_JSON_FIELDS)
_REQUIRED_SET = frozenset(_REQUIRED)
_NUMBER = frozenset((float, int))
_SPEED = "dev_speed_factor"
_CATALOG_KEYS = frozenset(f.json_key for f in REQUEST_FIELDS if f.catalog)


class JsonRows(NamedTuple):
    """The items taken as flat SI rows, their positions and labels; the items deferred."""

    rows: np.ndarray                  # (len(taken), len(FLAT_NAMES)) float64
    taken: list[int]                  # positions in the batch, in order
    labels: list[tuple[str, str]]     # (device, server) of each row taken, "" if not named
    deferred: list[int]               # positions to parse one at a time


def json_rows(items: Sequence[object]) -> JsonRows:
    """Check a batch of request JSON values in groups (see the module docstring)."""
    groups: dict[tuple, list[int]] = {}
    names: list[tuple[str | None, str | None]] = []
    deferred: list[int] = []
    complete: dict[frozenset, bool] = {}
    for i, d in enumerate(items):
        names.append((None, None))
        if type(d) is not dict:
            deferred.append(i)
            continue
        dev, srv = d.get("device"), d.get("server")
        if (type(dev) is not str and dev is not None) or (type(srv) is not str and srv is not None):
            deferred.append(i)
            continue
        names[i] = (dev, srv)
        keys = frozenset(d)
        full = complete.get(keys)
        if full is None:
            full = complete[keys] = keys >= _CATALOG_KEYS
        # with every catalog field given, names only label the request (and must be known)
        groups.setdefault((keys,) if full else (keys, dev, srv), []).append(i)
    parts: list[np.ndarray] = []
    taken: list[int] = []
    for key, idx in groups.items():
        got = _group(key[0], [items[i] for i in idx], [names[i] for i in idx])  # type: ignore[misc]
        if got is None:
            deferred.extend(idx)
            continue
        M, ok = got
        good = np.flatnonzero(ok)
        parts.append(M[good])
        taken.extend(idx[j] for j in good.tolist())
        deferred.extend(idx[j] for j in np.flatnonzero(~ok).tolist())
    rows = np.concatenate(parts) if parts else np.zeros((0, len(SCALAR_NAMES) + len(
        WIDTH_FIELDS) * len(KERNEL_WIDTHS)))
    order = np.argsort(np.asarray(taken, dtype=np.int64), kind="stable")
    taken = [taken[j] for j in order.tolist()]
    return JsonRows(rows[order], taken, [(names[i][0] or "", names[i][1] or "") for i in taken],
                    sorted(deferred))


def _numbers(values: list[object]) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and whether each is a JSON number (float or int, not bool) that
    ``float()`` takes; the others are NaN and not ok."""
    types = set(map(type, values))
    if types <= _NUMBER:
        try:
            return np.array(values, dtype=np.float64), np.ones(len(values), dtype=bool)
        except OverflowError:                 # an integer past the largest double
            pass
    ok = np.fromiter((type(v) is float or (type(v) is int and abs(v) < 2 ** 1023)
                      for v in values), dtype=bool, count=len(values))
    x = np.array([v if good else np.nan for v, good in zip(values, ok.tolist(), strict=True)],
                 dtype=np.float64)
    return x, ok


def _widths(tables: list[object], lo: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-width entries keyed by width, as :func:`system.hardware.parse_kappa` reads them
    (absent = 0, each given one finite and > 0, the 32-bit one 1.0) with exact keys only."""
    n = len(tables)
    ok = np.fromiter((type(t) is dict and t.keys() <= _WIDTH_KEY_SET for t in tables),
                     dtype=bool, count=n)
    safe = [t if good else {} for t, good in zip(tables, ok.tolist(), strict=True)]
    out = np.zeros((n, len(WIDTH_KEYS)))
    for j, key in enumerate(WIDTH_KEYS):
        col = [t.get(key) for t in safe]      # type: ignore[attr-defined]
        given = np.fromiter((v is not None for v in col), dtype=bool, count=n)
        x, num = _numbers([0.0 if v is None else v for v in col])
        ok &= num & (~given | inside_array(x, lo, np.inf, True, True))
        out[:, j] = np.where(given, x, 0.0)
    return out, ok


def _group(keys: frozenset, ds: list[dict], names: list[tuple[str | None, str | None]]
           ) -> tuple[np.ndarray, np.ndarray] | None:
    """The flat rows of one group and which pass every check; None defers the whole group
    (its keys or its catalog entries are not what a valid request has). A group gives every
    catalog field, or names one device and server."""
    if not keys <= _ALLOWED or not keys >= _REQUIRED_SET:
        return None
    n = len(ds)
    ok = np.ones(n, dtype=bool)
    known: dict[tuple[str | None, str | None], dict | None] = {}
    for pair in dict.fromkeys(names):
        try:
            known[pair] = _catalog_si(*pair)
        except QsplitInputError:                      # an unknown name
            known[pair] = None
    for j, (dev, srv) in enumerate(names):
        if known[(dev, srv)] is None or ("device" in keys and dev is None) \
                or ("server" in keys and srv is None):
            ok[j] = False
    named = known[names[0]] if len(known) == 1 else {}
    if named is None:
        return None
    cols: dict[str, np.ndarray] = {}
    given = [f.json_key for f in REQUEST_FIELDS if f.json_key in keys]
    rows = map(itemgetter(*given), ds) if len(given) > 1 else ((d[given[0]],) for d in ds)
    columns = dict(zip(given, zip(*rows, strict=True), strict=True))
    for f in REQUEST_FIELDS:
        key = f.json_key
        if key in keys:
            raw = list(columns[key])
            if f.per_width:
                cols[f.name], good = _widths(raw, 0.0)
            else:
                x, good = _numbers(raw)
                good &= inside_array(x, *f.json_range, f.lo_open, f.hi_open)
                with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                    cols[f.name] = f.to_si(x)
                good &= np.isfinite(cols[f.name])
            ok &= good
        elif f.name in named:
            cols[f.name] = np.broadcast_to(np.asarray(named[f.name], dtype=np.float64),
                                           (n, len(KERNEL_WIDTHS)) if f.per_width else (n,))
        elif f.catalog:
            return None                               # missing, and no catalog entry gives it
        else:
            cols[f.name] = np.full(n, _si(f, f.check_json(f.default)))
    if _SPEED in keys:
        s, good = _numbers([d[_SPEED] for d in ds])
        good &= inside_array(s, 0.0, np.inf, True, True)
        with np.errstate(over="ignore", invalid="ignore"):
            flops = cols["dev_flops_per_s"] * s
        ok &= good & np.isfinite(flops) & (flops > 0.0)
        cols["dev_flops_per_s"] = flops
    M = np.column_stack([*(cols[name] for name in SCALAR_NAMES),
                         *(cols[f.name] for f in WIDTH_FIELDS)])
    return M, ok & flat_in_range(M)


__all__ = ["WIDTH_KEYS", "JsonRows", "json_rows"]
