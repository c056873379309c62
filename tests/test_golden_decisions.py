"""The committed bundles decide exactly as they did when they were published.

A change detector: the plans of each committed bundle on 10,000 seeded requests (and of the
guarded, fallback and refined paths on fewer) hash to the figures recorded here. Refactoring
the request schema, the features, the guard or the optimizer must leave them identical;
republishing a policy changes them, and then this table is regenerated with the new bundle.
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
    ("resnet18", "{}"): "ac2c360d4f1837f3c23baffe8437018f9788e55844e720575d477aa5e0fcabb5",
    ("resnet18", '{"fallback": "infeasible"}'):
        "da48e1fea6703296ec983a3a976ab88785d25bf8f3a93eb0cc00e7cffd02df0b",
    ("resnet18", '{"refine": true}'):
        "26796329e4144080ca767ca2e17cefe57d823b378c790ed43021a71f52f591a3",
    ("digits_cnn", "{}"): "2909bbda5a7b63bfcae725c0f4d6914f382541e81c826fe59f55e6293e035f04",
    ("digits_cnn", '{"fallback": "infeasible"}'):
        "59676c0ba10389196a6b6399caaa5a904cc06f796b9af9c2a929b91308545e0a",
    ("digits_cnn", '{"refine": true}'):
        "4b32f4c4d4c4c43286bc81cdd458897350206fcc084c07d05a5c6200e9991a3d",
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
