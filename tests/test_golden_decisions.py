"""The committed bundles decide exactly as they did when they were published.

A change detector: the plans of each committed bundle on 10,000 seeded requests (and of the
guarded, fallback and refined paths on fewer) hash to the figures recorded here. Refactoring
the request schema, the features, the guard or the optimizer must leave them identical;
republishing a policy changes them, and then this table is regenerated with the new bundle.
The options ``{"fallback": "none", "trivial_guard": false}`` are the policy as the env runs
it (no support fallback, no floor of fixed plans).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from runtime.dispatcher import Dispatcher
from system.request import random_request

SEED = 20261129
#: sha256 of the JSON list of [cut, weight_bits, act_bits] per request, by (model, options).
GOLDEN: dict[tuple[str, str], str] = {
    ("resnet18", "{}"): "00ba7cae42118111b00104ec8e6e7372de37ff0d78020922aa3fca6adbaf2079",
    ("resnet18", '{"fallback": "infeasible"}'):
        "fd186339599a873e44a40de82f1dd6776bb98c532f79e3ec876dc38dd2f2d0c4",
    ("resnet18", '{"refine": true}'):
        "5c890fe68409c084a3500621a15ecd47f2e3dd5710da09a0c9b1c422d4e52776",
    ("resnet18", '{"fallback": "none", "trivial_guard": false}'):
        "0a124f8533ed8b364a751ebf6d7081cbe9ff054eafe0397ab058fb343fd39080",
    ("digits_cnn", "{}"): "4d2866055ee9e9b583e4120101138dec854c41a2774cd453100ba2c24340f08d",
    ("digits_cnn", '{"fallback": "infeasible"}'):
        "4fe443c9b26f68ee84b35584b9794d359556b08adbeb2546d6cca415a6bd0a24",
    ("digits_cnn", '{"refine": true}'):
        "7442fe2b4de6162c3a56396b7479e3017b1d8fd8961c0bf2c7c4437728cb998e",
    ("digits_cnn", '{"fallback": "none", "trivial_guard": false}'):
        "caea113d6f5f9865ae4b14121366ed483e2d9c3324169af37f327f84fb17ff21",
}


def _hash(plans: list) -> str:
    s = json.dumps([[p.cut, list(p.weight_bits), p.act_bits] for p in plans])
    return hashlib.sha256(s.encode()).hexdigest()


@pytest.mark.parametrize(("model", "options"), sorted(GOLDEN))
def test_committed_bundle_decisions_unchanged(model: str, options: str) -> None:
    opts = json.loads(options)
    n = 2_000 if opts.get("refine") else 10_000
    rng = np.random.default_rng(SEED)
    requests = [random_request(rng) for _ in range(n)]
    d = Dispatcher.load(model=model, **opts)
    plans = [d.decide(r) for r in requests]
    assert d.decide_batch(requests) == plans
    assert _hash(plans) == GOLDEN[(model, options)]
