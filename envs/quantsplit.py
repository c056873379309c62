"""QuantSplit-v0: the joint quantization-partition decision as a one-step Gymnasium env.

The simulator is ``system`` (numpy only); this module is only its Gymnasium face.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.pool import RequestPool
from system.accuracy import within_limit
from system.bits import DEFAULT_BITS, check_bit_set
from system.codec import ActionCodec, ObservationEncoder
from system.cost import UnitTables, check_finite_figures, evaluate_arrays, unit_tables
from system.errors import QsplitInputError, check_finite, check_keys
from system.optimal import solve
from system.plan import plans_to_arrays
from system.profiles import ModelProfile, load_profile
from system.repair import execute_action
from system.request import Request
from system.scenario import Scenario, load_scenario, sample_requests

MODES = ("repair", "penalty")
REWARD_SCALES = ("log", "linear")
REFERENCES = ("optimal", "server_only")
#: The keys ``reset(options=...)`` accepts.
RESET_OPTIONS = ("request",)


class QuantSplitEnv(gym.Env):
    r"""Plan one edge inference: where to cut a DNN, and the bits of each device-side unit.

    ## Description

    An edge server holds a DNN of L units (a model profile). Each episode is one request
    (DESIGN.md §1): a device with its compute, kernel speedups and powers, the server's free
    share, the channel (uplink, downlink, RTT), an accuracy budget ``eps_pp``, an energy
    weight ``beta_s_per_j`` and the head ``reuse``. The agent answers with a plan: the cut p
    (the device runs units 1..p), the weight bits of each device-side unit and the bits of
    the activation sent at the cut. The plan must keep the predicted top-1 drop within the
    budget and should minimise ``cost = latency_s + beta * energy_j``. The exact optimum is
    known (:func:`system.optimal.solve`), so the reward and regret are relative to it.

    ## Action Space

    ``MultiDiscrete([L+1, K] + [K] * L)`` with K = len(bits) (default 7: 2, 3, 4, 6, 8, 16,
    32 bits): the cut p in 0..L, the index of the activation bits, and the index of the
    weight bits of units 1..L. Weight bits past the cut are ignored, and the activation bits
    are ignored at p = 0 (the raw input is sent) and p = L (only the result is).
    (:class:`system.codec.ActionCodec`.) ``action_masks()`` gives MaskablePPO the options
    that can be part of a feasible plan. ``step`` takes exactly one action of L+2 whole
    numbers in range: a batch, a fractional entry or a boolean is refused, never coerced.

    ## Observation Space

    ``Box(-5, 5, (F,), float32)``, F = 21 by default: normalised features of the request
    (:class:`system.codec.ObservationEncoder`, fixed analytic normalisation
    ``(T(x) - center) / scale`` clipped to +-5, T = log10 or identity): device FLOP/s, its
    int4/int8/fp16 speedups, its four powers, the server's free FLOP/s and share, uplink and
    downlink rates, RTT, the budget, beta, reuse, and the prices of the cost terms (device
    and server cost per FLOP, uplink and downlink cost per bit, round-trip cost).

    ## Rewards

    With ``cost`` the cost of the executed plan (after repair) and ``ref`` the reference:

        reward = -ln(cost / ref)        reward_scale="log" (default)
        reward = -(cost / ref - 1)      reward_scale="linear"

    ``reward_reference="optimal"`` (default): ref = the exact optimum's cost for this
    request, so with the linear scale reward = -regret, and either way reward <= 0, 0
    exactly for an optimal plan. ``reward_reference="server_only"``: ref = the cost of the
    server-only plan (cut 0, no optimizer call), so the reward is the saving over
    server-only (a share with the linear scale). The log scale equals the linear one to
    first order near the optimum (ln(1 + r) ~ r) but keeps a random plan that costs 50
    times the optimum at -3.9 rather than -49, which keeps PPO's value targets tame.
    In ``mode="penalty"`` an infeasible plan is not repaired; its reward is ``-penalty``.

    ## Starting State

    ``reset`` draws one request from the scenario (or from ``pool``) with the env's
    ``np_random``; ``reset(options={"request": Request})`` sets one explicitly (any other
    option key is refused).

    ## Episode End

    Every episode is one step: ``terminated=True`` after the first action, never truncated.

    ## Arguments

    ``gymnasium.make("QuantSplit-v0", model="resnet18", scenario="default", mode="repair",
    reward_reference="optimal", reward_scale="log", penalty=1.0, compute_regret=False,
    bits=(2, 3, 4, 6, 8, 16, 32), pool=None, encoder=None, render_mode=None)``

    * ``model``: a profile name (``system.profiles.load_profile``), a JSON path, or a
      :class:`~system.profiles.ModelProfile`.
    * ``scenario``: a name of ``configs/scenarios/<name>.yaml``, a YAML path, a dict or a
      :class:`~system.scenario.Scenario`.
    * ``mode``: ``"repair"`` (infeasible plans are repaired by :mod:`system.repair`;
      ``info["repaired"]``) or ``"penalty"``.
    * ``reward_reference``: ``"optimal"`` or ``"server_only"``; ``reward_scale``: ``"log"``
      or ``"linear"``; ``penalty`` >= 0 (see Rewards).
    * ``compute_regret`` (a bool): put ``info["regret"]`` = cost / optimum - 1 (solves the request
      exactly if the reward did not already; always there with the optimal reference).
    * ``pool``: an :class:`envs.pool.RequestPool` to draw requests from, with their optima
      precomputed (training speed); it must match the model, bits and encoder.
    * ``encoder``: an :class:`~system.codec.ObservationEncoder` or its JSON form (default
      features).

    :meth:`resolved_kwargs` gives these arguments as JSON, resolved (the scenario as data, the
    encoder's features, the bits), with the profile's hash: what rebuilds the same env.

    ``info`` after a step: latency_s, energy_j, cost, drop_pp, eps_pp, payload_reduction,
    plan (a :class:`~system.plan.Plan`), repaired, violation (penalty mode: infeasible plan
    executed), opt_cost and regret when known.

    Seeding is through ``reset(seed=...)`` only.

    ## Version History

    * v0: first version (one request per episode, repair and penalty modes, optimal and
      server-only reward references, request pools, action masks).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, model: str | Path | ModelProfile = "resnet18",
                 scenario: str | Path | dict | Scenario = "default", mode: str = "repair",
                 reward_reference: str = "optimal", reward_scale: str = "log",
                 penalty: float = 1.0,
                 compute_regret: bool = False, bits: tuple[int, ...] | list[int] = DEFAULT_BITS,
                 pool: RequestPool | None = None,
                 encoder: ObservationEncoder | dict | None = None,
                 render_mode: str | None = None) -> None:
        super().__init__()
        self.profile = model if isinstance(model, ModelProfile) else load_profile(model)
        self._model_arg = self.profile.name if isinstance(model, ModelProfile) else str(model)
        self.scenario = load_scenario(scenario)
        if mode not in MODES:
            raise QsplitInputError(f"mode: {mode!r} is not one of {list(MODES)}")
        if reward_reference not in REFERENCES:
            raise QsplitInputError(
                f"reward_reference: {reward_reference!r} is not one of {list(REFERENCES)}")
        if reward_scale not in REWARD_SCALES:
            raise QsplitInputError(
                f"reward_scale: {reward_scale!r} is not one of {list(REWARD_SCALES)}")
        self.mode = mode
        self.reward_reference = reward_reference
        self.reward_scale = reward_scale
        self.penalty = check_finite("penalty", penalty, lo=0.0)
        if not isinstance(compute_regret, (bool, np.bool_)):
            raise QsplitInputError(f"compute_regret: expected true or false, got {compute_regret!r}")
        self.compute_regret = bool(compute_regret)
        self.render_mode = render_mode
        self.codec = ActionCodec(self.profile.n_units, check_bit_set("bits", list(bits)))
        if encoder is not None and not isinstance(encoder, (ObservationEncoder, dict)):
            raise QsplitInputError("encoder: expected a system.codec.ObservationEncoder, its JSON "
                                   f"form (a dict) or None, got {encoder!r}")
        self.encoder = ObservationEncoder.from_json(encoder) if isinstance(encoder, dict) \
            else encoder or ObservationEncoder()
        if pool is not None and not isinstance(pool, RequestPool):
            raise QsplitInputError(f"pool: expected an envs.pool.RequestPool or None, got {pool!r}")
        if pool is not None and (pool.obs.shape[1] != self.encoder.n_features
                                 or pool.opt_action.shape[1] != self.profile.n_units + 2):
            raise QsplitInputError("pool: built for another model or encoder than this env's")
        self.pool = pool
        self.observation_space = spaces.Box(-self.encoder.clip, self.encoder.clip,
                                            (self.encoder.n_features,), np.float32)
        self.action_space = spaces.MultiDiscrete(self.codec.nvec)
        self._k32 = self.codec.bits.index(32)
        self._req: Request | None = None
        self._obs: np.ndarray | None = None
        self._tables: UnitTables | None = None
        self._opt_cost: float | None = None
        self._last: dict[str, Any] = {}

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw the episode's request (see Starting State)."""
        super().reset(seed=seed)
        self._tables = None
        self._opt_cost = None
        if options is not None:
            if not isinstance(options, dict):
                raise QsplitInputError(f"options: expected a dict or None, got {options!r}")
            check_keys("options", options, (), RESET_OPTIONS)
        if options and options.get("request") is not None:
            req = options["request"]
            if not isinstance(req, Request):
                raise QsplitInputError("options['request']: expected a system.request.Request")
            self._req, self._obs = req, self.encoder.encode(req)
        elif self.pool is not None:
            i = int(self.np_random.integers(len(self.pool)))
            self._req, self._obs = self.pool.requests[i], self.pool.obs[i]
            self._opt_cost = float(self.pool.opt_cost[i])
        else:
            self._req = sample_requests(self.scenario, self.np_random, 1)[0]
            self._obs = self.encoder.encode(self._req)
        return self._obs.copy(), {"eps_pp": self._req.eps_pp}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Execute the plan the action encodes (repaired if needed); one step ends the episode."""
        if self._req is None or self._obs is None:
            raise RuntimeError("QuantSplitEnv: call reset() before step() (one step per episode)")
        req, T = self._req, self.tables()
        action = self._check_action(action)
        self.codec.decode_arrays(action)                    # validates the ranges
        res = execute_action(T, req.eps_pp, action, repair=self.mode == "repair")
        violation = not within_limit(res.drop_pp, req.eps_pp, T.compounding)
        cuts, wb, ab = plans_to_arrays([res.plan], self.profile.n_units)
        fig = evaluate_arrays(self.profile, req, cuts, wb, ab)
        cost = float(fig.cost[0])
        if not math.isfinite(cost):
            check_finite_figures(fig, "request")             # refuses, naming what overflowed
        need_opt = self.reward_reference == "optimal" or self.compute_regret
        opt = self.optimal_cost() if need_opt else None
        ref = opt if self.reward_reference == "optimal" else float(T.fixed[0, self._k32])
        ratio = cost / ref
        if violation:
            reward = -self.penalty
        else:
            reward = -math.log(ratio) if self.reward_scale == "log" else -(ratio - 1.0)
        info: dict[str, Any] = {
            "latency_s": float(fig.latency_s[0]), "energy_j": float(fig.energy_j[0]),
            "cost": cost, "drop_pp": float(fig.drop_pp[0]), "eps_pp": req.eps_pp,
            "payload_reduction": float(fig.payload_reduction[0]),
            "plan": res.plan, "repaired": res.repaired, "violation": bool(violation),
        }
        if opt is not None:
            info["opt_cost"] = opt
            info["regret"] = cost / opt - 1.0
        self._last = {"request": req, **info, "reward": reward}
        obs = self._obs.copy()
        self._req = None
        return obs, float(reward), True, False, info

    def render(self) -> str | None:
        """``ansi``: the last request's plan and figures as text; other modes render nothing.

        (SB3's ``make_vec_env`` asks every env for ``rgb_array``; it is accepted and ignored.)
        """
        if self.render_mode != "ansi":
            return None
        if not self._last:
            return "QuantSplit-v0: no step yet"
        d = self._last
        p = d["plan"]
        return (f"cut {p.cut}/{self.profile.n_units} weight bits {list(p.weight_bits)} "
                f"act bits {p.act_bits} | latency {d['latency_s'] * 1e3:.2f} ms energy "
                f"{d['energy_j']:.3f} J drop {d['drop_pp']:.4f}/{d['eps_pp']:.4f} pp "
                f"reward {d['reward']:.4f}{' (repaired)' if d['repaired'] else ''}")

    # ------------------------------------------------------------------ helpers

    def _check_action(self, action: object) -> np.ndarray:
        """One action as int64 (L+2,), or a one-line refusal.

        Refused rather than coerced: a batch (only its first row would run), fractional
        entries (they would be truncated) and booleans (they would count as 0 and 1).
        """
        n = self.profile.n_units + 2
        if isinstance(action, (list, tuple)) and any(isinstance(x, (bool, np.bool_)) for x in action):
            raise QsplitInputError(f"action: expected {n} whole numbers, got booleans in {action!r}")
        try:
            a = np.asarray(action)
        except (TypeError, ValueError):
            raise QsplitInputError(f"action: expected {n} whole numbers, got {action!r}") from None
        if a.shape != (n,):
            raise QsplitInputError(f"action: expected one action of shape ({n},), got shape "
                                   f"{a.shape} (step takes one action, not a batch)")
        if a.dtype.kind == "b":
            raise QsplitInputError(f"action: expected {n} whole numbers, got booleans in {action!r}")
        if a.dtype.kind not in "iuf":
            raise QsplitInputError(f"action: expected {n} whole numbers, got dtype {a.dtype}")
        if a.dtype.kind == "f":
            frac = ~np.isfinite(a) | (a != np.round(a))
            if np.any(frac):
                i = int(np.argmax(frac))
                raise QsplitInputError(f"action[{i}]: {float(a[i]):g} is not a whole number")
            out = (a < 0) | (a >= self.codec.nvec)
            if np.any(out):
                i = int(np.argmax(out))
                raise QsplitInputError(f"action[{i}]: {a[i]:g} is outside the allowed range "
                                       f"[0, {self.codec.nvec[i] - 1}]")
        return a.astype(np.int64)

    @property
    def request(self) -> Request | None:
        """The current episode's request (None between a step and the next reset)."""
        return self._req

    def tables(self) -> UnitTables:
        """Per-unit cost and drop tables of the current request (computed once per episode)."""
        if self._req is None:
            raise RuntimeError("QuantSplitEnv: no request; call reset()")
        if self._tables is None:
            self._tables = unit_tables(self.profile, self._req, self.codec.bits)
        return self._tables

    def optimal_cost(self) -> float:
        """The exact optimum's cost for the current request (pool value, else solved)."""
        if self._opt_cost is None:
            assert self._req is not None
            self._opt_cost = solve(self.profile, self._req, self.codec.bits,
                                   tables=self.tables()).cost
        return self._opt_cost

    def resolved_kwargs(self) -> dict[str, Any]:
        """The arguments that rebuild this env, as JSON, with ``profile_sha256`` beside them.

        ``model`` is the name or path it was given (a profile object by its name); the
        hash lets a reader refuse a profile that changed since. Pool, regret and rendering
        are left out: they change neither the observation, the action nor the reward.
        """
        return {"model": self._model_arg, "profile_sha256": self.profile.sha256(),
                "bits": list(self.codec.bits), "mode": self.mode,
                "reward_reference": self.reward_reference, "reward_scale": self.reward_scale,
                "penalty": self.penalty, "scenario": self.scenario.to_dict(),
                "encoder": self.encoder.to_json()}

    def action_masks(self) -> np.ndarray:
        """Options that can be in a feasible plan, flat over the MultiDiscrete dimensions."""
        if self._req is None:
            return np.ones(int(self.codec.nvec.sum()), dtype=bool)
        return self.codec.action_mask(self.tables(), self._req.eps_pp)
