"""A pool of requests with their encoded observations and exact optima.

Computing the optimum costs about a millisecond per request (benchmarks/bench_optimizer.py),
more than a PPO step, so training draws episodes from a pool built once (with the optimal
cost for the reward and the optimal action for imitation), and evaluation uses a held-out
pool with another seed. numpy only; a pool saves to and loads from ``.npz`` (no pickle),
keyed by what built it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from system.bits import DEFAULT_BITS
from system.codec import ActionCodec, ObservationEncoder
from system.cost import unit_tables
from system.errors import QsplitInputError
from system.fields import LABELS
from system.optimal import solve
from system.profiles import ModelProfile
from system.request import Request, request_arrays, requests_from_arrays
from system.scenario import Scenario, sample_requests


@dataclass(frozen=True, eq=False)
class RequestPool:
    """N requests, their observations (N, F), optimal costs (N,) and optimal actions (N, L+2)."""

    requests: tuple[Request, ...]
    obs: np.ndarray
    opt_cost: np.ndarray
    opt_action: np.ndarray
    key: str = ""

    def __len__(self) -> int:
        return len(self.requests)

    @classmethod
    def build(cls, profile: ModelProfile, scenario: Scenario, n: int, seed: int,
              encoder: ObservationEncoder | None = None,
              bits: tuple[int, ...] = DEFAULT_BITS,
              cache_dir: str | Path | None = None) -> RequestPool:
        """Draw n requests with ``np.random.default_rng(seed)`` and solve each exactly.

        With ``cache_dir`` the pool is saved as ``<cache_dir>/pool-<key>.npz`` and reused
        when the same profile, scenario, n, seed, encoder and bits ask again.
        """
        encoder = encoder or ObservationEncoder()
        codec = ActionCodec(profile.n_units, bits)
        key = hashlib.sha256(json.dumps(
            [profile.sha256(), scenario.to_dict(), int(n), int(seed), encoder.to_json(),
             list(codec.bits)], sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"pool-{key}.npz" if cache_dir is not None else None
        if path is not None and path.is_file():
            return cls.load(path, key)
        reqs = sample_requests(scenario, np.random.default_rng(seed), n)
        sols = [solve(profile, r, codec.bits, tables=unit_tables(profile, r, codec.bits))
                for r in reqs]
        pool = cls(requests=tuple(reqs), obs=encoder.encode_batch(reqs),
                   opt_cost=np.array([s.cost for s in sols]),
                   opt_action=np.stack([codec.encode(s.plan) for s in sols]), key=key)
        if path is not None:
            pool.save(path)
        return pool

    def save(self, path: str | Path) -> None:
        """Write the pool as .npz (atomically)."""
        from system.atomic import atomic_write_bytes, npz_bytes

        atomic_write_bytes(Path(path), npz_bytes({
            "obs": self.obs, "opt_cost": self.opt_cost, "opt_action": self.opt_action,
            **{k: np.array([getattr(r, k) for r in self.requests]) for k in LABELS},
            **request_arrays(self.requests)}))

    @classmethod
    def load(cls, path: str | Path, key: str = "") -> RequestPool:
        """Read a pool written by :meth:`save` (no pickles are loaded)."""
        try:
            with np.load(Path(path), allow_pickle=False) as f:
                z = {k: f[k] for k in f.files}     # NpzFile re-reads a member per access
        except (OSError, ValueError) as exc:
            raise QsplitInputError(f"pool: cannot read {path}: {exc}") from None
        try:
            return cls(requests=requests_from_arrays(z, z), obs=z["obs"],
                       opt_cost=z["opt_cost"], opt_action=z["opt_action"], key=key)
        except KeyError as exc:
            raise QsplitInputError(f"pool {path}: missing array {exc.args[0]!r}") from None


def _build_chunk(args: tuple) -> RequestPool:
    profile, scenario, n, seed, encoder, bits, cache_dir = args
    return RequestPool.build(profile, scenario, n, seed, encoder, bits, cache_dir)


def build_pool(profile: ModelProfile, scenario: Scenario, n: int, seed: int,
               encoder: ObservationEncoder | None = None, bits: tuple[int, ...] = DEFAULT_BITS,
               cache_dir: str | Path | None = None, workers: int = 1,
               chunk: int = 2500) -> RequestPool:
    """A pool of n requests solved in chunks of ``chunk``, on ``workers`` processes.

    Chunk j draws from ``default_rng(SeedSequence([seed, j]))``, so the pool depends on
    (n, seed, chunk) and not on the number of workers.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise QsplitInputError(f"pool size: expected an integer >= 1, got {n!r}")
    sizes = [min(chunk, n - i) for i in range(0, n, chunk)]
    seeds = [int(np.random.SeedSequence([int(seed), j]).generate_state(1)[0])
             for j in range(len(sizes))]
    jobs = [(profile, scenario, s, sd, encoder, bits, cache_dir)
            for s, sd in zip(sizes, seeds, strict=True)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(min(workers, len(jobs))) as p:
            parts = p.map(_build_chunk, jobs)
    else:
        parts = [_build_chunk(j) for j in jobs]
    return RequestPool(requests=tuple(r for p in parts for r in p.requests),
                       obs=np.concatenate([p.obs for p in parts]),
                       opt_cost=np.concatenate([p.opt_cost for p in parts]),
                       opt_action=np.concatenate([p.opt_action for p in parts]),
                       key="+".join(p.key for p in parts)[:64])
