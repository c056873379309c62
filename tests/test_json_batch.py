"""The batch intake (system.json_batch) takes exactly what the one-item parser takes, with
the same values bit for bit, and defers everything else to it."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from system.errors import QsplitInputError
from system.fields import FLAT_NAMES, LABELS, SCALAR_NAMES, WIDTH_FIELDS
from system.json_batch import json_rows
from system.request import request_from_json_dict
from system.scenario import load_scenario, sample_requests

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _flat(item: object) -> tuple[tuple[float, ...], tuple[str, str]] | None:
    """The one-item parser's flat row and labels, or None where it refuses the item."""
    try:
        r = request_from_json_dict(item)
    except QsplitInputError:
        return None
    row = tuple(getattr(r, n) for n in SCALAR_NAMES) + tuple(
        x for f in WIDTH_FIELDS for x in getattr(r, f.name))
    return row, (r.device, r.server)


def _check(items: list[object]) -> list[int]:
    """Every item taken equals the one-item parse (bits and labels), and nothing the
    one-item parser refuses is taken; returns the positions taken."""
    got = json_rows(items)
    assert sorted(got.taken + got.deferred) == list(range(len(items)))
    assert got.rows.shape == (len(got.taken), len(FLAT_NAMES))
    for row, i, labels in zip(got.rows.tolist(), got.taken, got.labels, strict=True):
        ref = _flat(items[i])
        assert ref is not None, f"item {i} taken but refused one at a time: {items[i]!r}"
        assert np.array_equal(np.asarray(row), np.asarray(ref[0])), i   # bit for bit
        assert labels == ref[1]
    return got.taken


@pytest.fixture(scope="module")
def goods() -> list[dict]:
    return [r.to_json_dict() for r in
            sample_requests(load_scenario("default"), np.random.default_rng(5), 60)]


def test_explicit_requests_are_all_taken(goods) -> None:
    assert _check(goods) == list(range(len(goods)))


def test_catalog_names_defaults_ints_and_speed_factor(goods) -> None:
    g = goods[0]
    named = {k: g[k] for k in ("device", "server", "up_mbps", "down_mbps", "rtt_ms", "eps_pp")}
    items = [named, {**named, "reuse": 3, "rtt_ms": 7}, {**named, "dev_speed_factor": 0.5},
             {**named, "dev_speed_factor": 2}, {**g, "device": "jetson_nano"},
             {k: v for k, v in g.items() if k not in LABELS}, {**named, "beta_s_per_j": 0}]
    assert _check(items) == list(range(len(items)))


@pytest.mark.parametrize("change", [
    {"up_mbps": -1.0}, {"up_mbps": 0.0}, {"eps_pp": "1"}, {"eps_pp": True}, {"eps_pp": None},
    {"rtt_ms": 10**400}, {"srv_load": 1.5}, {"reuse": 0.5}, {"device": "pixel99"},
    {"device": None}, {"device": 3}, {"server": ["t4"]}, {"bandwidth_mbps": 3.0},
    {"dev_kappa": {"5": 2.0, "32": 1.0}}, {"dev_kappa": {"08": 2.0, "32": 1.0}},
    {"dev_kappa": {"8": 2.0}}, {"dev_kappa": {"8": 0.0, "32": 1.0}}, {"dev_kappa": [1.0]},
    {"dev_kappa": {"8": "2", "32": 1.0}}, {"dev_kappa": {"32": 1.5}}, {"dev_speed_factor": 0.0},
    {"dev_speed_factor": 1e308}, {"dev_speed_factor": "2"}, {"dev_gflops": 1e300},
    {"p_comp_w": math.nan},
])
def test_a_bad_item_is_deferred_and_the_rest_taken(goods, change: dict) -> None:
    # each is refused by the project's parser or, "08", by the service's strict model
    items = [goods[0], {**goods[1], **change}, goods[2]]
    assert _check(items) == [0, 2]


def test_missing_keys_and_non_objects_are_deferred(goods) -> None:
    no_up = {k: v for k, v in goods[0].items() if k != "up_mbps"}
    bare = {k: v for k, v in goods[0].items() if k not in ("device", "p_comp_w")}
    items = [no_up, bare, [goods[0]], "x", None, goods[1]]
    assert _check(items) == [5]


_MUTATION = st.sampled_from([None, True, 0, -1, 1, 3, 2**63, 10**400, 0.0, -0.0, 5e-324, 1e308,
                             1.5, 0.7, 100.0, "1", "", [], {}, {"32": 1.0}, {"8": 2, "32": 1},
                             {"4": 1e-300, "32": 1.0}, "t4", "jetson_nano"])
_KEYS = st.sampled_from(["device", "server", "dev_gflops", "dev_kappa", "p_comp_w", "srv_gflops",
                         "srv_load", "up_mbps", "down_mbps", "rtt_ms", "eps_pp", "reuse",
                         "beta_s_per_j", "dev_speed_factor", "other"])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 59), st.lists(
    st.tuples(_KEYS, _MUTATION | st.just("<drop>")), max_size=3)), min_size=1, max_size=12))
def test_mutated_batches_agree_with_one_at_a_time(goods, edits) -> None:
    items = []
    for k, changes in edits:
        d = copy.deepcopy(goods[k])
        for key, value in changes:
            if value == "<drop>":
                d.pop(key, None)
            else:
                d[key] = copy.deepcopy(value)
        items.append(d)
    taken = _check(items)
    # an item the service's parser takes is taken here too, but for integers near the
    # largest double (left to the one-item parser)
    schema = pytest.importorskip("service.schema")
    for i in set(range(len(items))) - set(taken):
        try:
            schema.parse_request(items[i])
        except QsplitInputError:
            continue
        assert any(type(v) is int and abs(v) >= 2 ** 1023 for v in items[i].values()), items[i]
