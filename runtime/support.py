"""The training support of a policy: where each observed feature lay while it was trained.

A policy answers every observation, but only those like the ones it was trained on mean
anything; the encoder's clip is far too wide to tell (a device 30 times slower than any it
saw is still inside it). At export, :func:`training_support` draws a large seeded sample of
the run's training scenario and records the min and max of each unclipped feature in the
contract (``observation.support``). At run time :class:`SupportCheck` flags a request with
a feature outside [min - m, max + m] (m a small share of the feature's spread, since a
sample's extremes lie just inside the population's): the dispatcher's ``out_of_range``.

A bundle without a recorded support (exported before it was recorded) falls back to the
encoder's clip: out of range only where a feature is clipped.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

from system.codec import ObservationEncoder
from system.errors import QsplitInputError, check_keys
from system.request import request_arrays
from system.scenario import load_scenario, sample_requests

#: Requests sampled from the training scenario at export, and the generator's seed.
SUPPORT_SAMPLES = 100_000
SUPPORT_SEED = 0
#: Margin beyond the sampled extremes, as a share of each feature's sampled spread.
MARGIN = 0.02
_ABS_MARGIN = 1e-6

Support = tuple[tuple[float, ...], tuple[float, ...]]


def training_support(encoder: ObservationEncoder, scenario: object,
                     n: int = SUPPORT_SAMPLES, seed: int = SUPPORT_SEED) -> dict:
    """The contract's ``observation.support`` for a policy trained on ``scenario`` (a name,
    a path or a scenario dict)."""
    sc = load_scenario(scenario)  # type: ignore[arg-type]
    reqs = sample_requests(sc, np.random.default_rng(seed), n)
    with np.errstate(all="ignore"):
        x = encoder.unclipped_arrays(request_arrays(reqs))
    if not np.all(np.isfinite(x)):
        raise QsplitInputError("scenario: a sampled request has a non-finite feature")
    return {"min": x.min(axis=0).tolist(), "max": x.max(axis=0).tolist(), "samples": n,
            "seed": seed}


def parse_support(obs: dict, n: int) -> Support | None:
    """The ``observation.support`` of a contract, checked; None if it has none."""
    if "support" not in obs:
        return None
    sup = check_keys("observation.support", obs["support"], ["min", "max"],
                     ["samples", "seed", "scenario"])
    out = []
    for key in ("min", "max"):
        v = sup[key]
        if not isinstance(v, list) or len(v) != n or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in v):
            raise QsplitInputError(f"observation.support.{key}: expected {n} finite numbers")
        out.append(tuple(float(x) for x in v))
    if any(lo > hi for lo, hi in zip(*out, strict=True)):
        raise QsplitInputError("observation.support: a min exceeds its max")
    return out[0], out[1]


def _rounds_up_to(bound: float) -> float:
    """The least double whose float32 rounding (to nearest, ties to even) is >= ``bound``, a
    finite float32 value: x >= it exactly when float32(x) >= bound."""
    b32 = np.float32(bound)
    below = float(np.nextafter(b32, np.float32(-np.inf)))
    mid = (below + bound) / 2.0                  # exact: one more bit than a float32
    return mid if np.float32(mid) >= b32 else float(np.nextafter(mid, np.inf))


class SupportCheck:
    """Whether an observation lies outside the training support (or, without one, is clipped).

    Both forms compare the float32 observation the network sees with float32 bounds, so a
    request is flagged the same way alone and in a batch.
    """

    def __init__(self, support: Support | None, encoder: ObservationEncoder) -> None:
        clip = float(encoder.clip)
        n = encoder.n_features
        if support is None:
            lo, hi = np.full(n, -clip), np.full(n, clip)
            self.lo = np.nextafter(lo.astype(np.float32), np.float32(np.inf))
            self.hi = np.nextafter(hi.astype(np.float32), np.float32(-np.inf))
        else:
            smin, smax = np.asarray(support[0]), np.asarray(support[1])
            pad = MARGIN * (smax - smin) + _ABS_MARGIN
            self.lo = np.clip(smin - pad, -clip, clip).astype(np.float32)
            self.hi = np.clip(smax + pad, -clip, clip).astype(np.float32)
        self.recorded = support is not None
        self._lo: list[float] = [_rounds_up_to(float(b)) for b in self.lo]
        self._hi: list[float] = [-_rounds_up_to(-float(b)) for b in self.hi]

    def outside(self, features: Sequence[float]) -> bool:
        """One observation (float64 values before the float32 rounding): compared with the
        float64 bounds whose float32 roundings are the bounds, so no rounding is needed."""
        return not (all(map(operator.le, self._lo, features))
                    and all(map(operator.le, features, self._hi)))

    def outside_batch(self, obs: np.ndarray) -> np.ndarray:
        """(N,) bool for a float32 (N, F) observation."""
        return np.any((obs < self.lo) | (obs > self.hi), axis=1)
