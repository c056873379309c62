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
    ("resnet18", "{}"): "d61d2de02efe28c7f11368ab478f1433ed9752574b7041161d2932c2741d86a6",
    ("resnet18", '{"fallback": "infeasible"}'):
        "5c86106f357202222eba5c815f62ab818b917ef74fed716a2a6055c4ad402ad9",
    ("resnet18", '{"refine": true}'):
        "b4005c3bce44a837cdf9ab95121696a7a872c6c01d4ae3eb7741e186a2a9d30a",
    ("resnet18", '{"fallback": "none", "trivial_guard": false}'):
        "a34edc48f59330b7aa43a5587d2047af41b87badf15f5454ca9c44c41aed1c17",
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
