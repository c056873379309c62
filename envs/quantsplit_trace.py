"""QuantSplitTrace-v0: the plan decided from the device's past, paid in its future (§8).

Each episode is one request placed in a recorded uplink/downlink route
(:mod:`system.variance`). The observation (:mod:`system.trace_obs`) is what the device can
know: the request as a certainty-equivalent planner sees it and the last k one-second
throughput samples of each direction, its compute share, the deadline. The action is
QuantSplit-v0's (cut, activation bits, weight bits; repaired to the budget by the one
repair, which uses the accuracy model only). The plan is then executed against the route's
traces from the arrival time: the reward is

    -log(realised cost / clairvoyant's realised cost) - miss_penalty * [latency > deadline]

and ``info`` carries the realised latency, the miss, the clairvoyant's and the mean-estimate
optimizer's costs. Requests come from a :class:`envs.trace_pool.TracePool`.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.trace_pool import TracePool
from system.bits import DEFAULT_BITS
from system.codec import ActionCodec, ObservationEncoder
from system.cost import unit_tables
from system.errors import QsplitInputError, check_finite
from system.plan import plans_to_arrays
from system.profiles import ModelProfile, load_profile
from system.repair import execute_action
from system.variance import planning_request, realise

#: Reward subtracted for a missed deadline (documented default: a miss costs as much as
#: a plan e-fold the clairvoyant's cost).
MISS_PENALTY = 1.0


class QuantSplitTraceEnv(gym.Env):
    """See the module docstring. ``pool`` is required: the clairvoyant reference is costly."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, model: str | ModelProfile = "resnet18", pool: TracePool | None = None,
                 miss_penalty: float = MISS_PENALTY, render_mode: str | None = None) -> None:
        if pool is None:
            raise QsplitInputError("pool: QuantSplitTrace-v0 needs a TracePool "
                                   "(envs.trace_pool.build_trace_pool)")
        self.profile = model if isinstance(model, ModelProfile) else load_profile(model)
        self.pool = pool
        self.miss_penalty = check_finite("miss_penalty", miss_penalty, lo=0.0)
        self.codec = ActionCodec(self.profile.n_units, DEFAULT_BITS)
        F = pool.obs.shape[1]
        clip = ObservationEncoder().clip
        self.observation_space = spaces.Box(-clip, clip, (F,), np.float32)
        self.action_space = spaces.MultiDiscrete(self.codec.nvec)
        self._i: int | None = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a request of the pool (``options={"index": i}`` picks one)."""
        super().reset(seed=seed)
        if options and "index" in options:
            i = options["index"]
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) \
                    or not 0 <= int(i) < len(self.pool):
                raise QsplitInputError(f"options['index']: {i!r} is outside [0, {len(self.pool)})")
            self._i = int(i)
        else:
            self._i = int(self.np_random.integers(len(self.pool)))
        return self.pool.obs[self._i].copy(), {"index": self._i}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Execute the plan against the route's future; one step ends the episode."""
        if self._i is None:
            raise RuntimeError("QuantSplitTraceEnv: call reset() before step()")
        i, sit, pool = self._i, self.pool.sit, self.pool
        a = np.asarray(action, dtype=np.int64).reshape(-1)
        if a.shape != (len(self.codec.nvec),) or np.any(a < 0) or np.any(a >= self.codec.nvec):
            raise QsplitInputError(f"action: expected {len(self.codec.nvec)} integers within "
                                   f"{self.codec.nvec.tolist()}, got {np.asarray(action).tolist()}")
        req = planning_request(sit, i)
        res = execute_action(unit_tables(self.profile, req), req.eps_pp, a)
        cuts, wb, ab = plans_to_arrays([res.plan], self.profile.n_units)
        r = realise(self.profile, sit, i, cuts, wb, ab)
        cost, miss = float(r.cost[0]), bool(r.miss[0])
        reward = -math.log(cost / float(pool.clair_cost[i])) - self.miss_penalty * miss
        info = {"latency_s": float(r.latency_s[0]), "cost": cost, "miss": miss,
                "deadline_s": float(sit.deadline_s[i]), "plan": res.plan,
                "repaired": res.repaired, "clairvoyant_cost": float(pool.clair_cost[i]),
                "ce_cost": float(pool.ce_cost[i]),
                "regret": cost / float(pool.clair_cost[i]) - 1.0}
        self._i = None
        return pool.obs[i].copy(), float(reward), True, False, info
