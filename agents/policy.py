"""One face for every decider: a :class:`Policy` turns requests into plans.

The leaderboard (``evaluate.py``) runs the exact optimizer, the baselines, a trained PPO run
and an exported bundle through this one protocol, so each is measured on the same requests
in the same way. A policy is bound to one model profile and bit set when it is made
(a trained policy only knows the profile it was trained on).

Decider specs, as the command line takes them (:func:`make_policy`):

* ``optimal``, ``server_only``, ``device_only``, ``device_only_int8``, ``partition_only``,
  ``uniform``: the deciders of :data:`system.baselines.DECIDERS`;
* ``ppo``: the committed default policy for the profile (see :func:`default_run_folder`);
* ``ppo:<run folder>``: a training run (rl-zoo layout, the folder holding ``model.zip``);
* ``bundle:<path>``: an exported policy bundle, decided by :class:`runtime.Dispatcher`;
* ``bundle``: the committed default bundle for the profile (``runtime/bundles/<model>``);
* ``<label>=<spec>``: any of the above reported under ``label`` (two PPO runs side by side).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from system.baselines import DECIDERS, Decider
from system.bits import DEFAULT_BITS
from system.errors import QsplitInputError
from system.plan import Plan
from system.profiles import ModelProfile
from system.request import Request


@runtime_checkable
class Policy(Protocol):
    """Decides plans for requests of one profile.

    ``batched`` says how a caller should time it: a batched policy decides a whole batch in
    one call (a network forward pass), so its time per decision is the batch time / n; an
    unbatched one is timed request by request.
    """

    name: str
    profile: ModelProfile
    bits: tuple[int, ...]
    batched: bool

    def decide(self, request: Request) -> Plan:
        """The plan for one request."""
        ...

    def decide_batch(self, requests: Sequence[Request]) -> list[Plan]:
        """The plans for many requests, in order."""
        ...


@dataclass
class DeciderPolicy:
    """A function of :data:`system.baselines.DECIDERS` (the exact optimizer or a baseline)."""

    name: str
    profile: ModelProfile
    fn: Decider
    bits: tuple[int, ...] = DEFAULT_BITS
    batched: bool = False

    def decide(self, request: Request) -> Plan:
        """The decider's plan."""
        return self.fn(self.profile, request, self.bits)

    def decide_batch(self, requests: Sequence[Request]) -> list[Plan]:
        """One call per request: these deciders have no batch form."""
        return [self.fn(self.profile, r, self.bits) for r in requests]


@dataclass
class PPOPolicy:
    """A trained run: the env's observation, a deterministic forward pass, the env's repair.

    ``decide_plans`` is the environment's own decision function (observation encoding,
    action decoding and repair exactly as the env applies them); the adapter only adds the
    batching and the model loading.
    """

    name: str
    profile: ModelProfile
    bits: tuple[int, ...]
    run_folder: Path
    decide_plans: Callable[[Sequence[Request]], list[Plan]] = field(repr=False)
    batched: bool = True

    def decide(self, request: Request) -> Plan:
        """The run's plan for one request."""
        return self.decide_plans([request])[0]

    def decide_batch(self, requests: Sequence[Request]) -> list[Plan]:
        """One forward pass for the whole batch, then the repair of each action."""
        return self.decide_plans(requests) if len(requests) else []


@dataclass
class BundlePolicy:
    """An exported bundle decided by the numpy-only runtime dispatcher."""

    name: str
    profile: ModelProfile
    bits: tuple[int, ...]
    path: Path
    dispatcher: object = field(repr=False)
    batched: bool = True

    def decide(self, request: Request) -> Plan:
        """The dispatcher's plan for one request."""
        return self.dispatcher.decide(request)

    def decide_batch(self, requests: Sequence[Request]) -> list[Plan]:
        """The dispatcher's batch form."""
        return list(self.dispatcher.decide_batch(list(requests))) if len(requests) else []


def known_specs() -> list[str]:
    """Decider specs accepted by :func:`make_policy`, for error messages and ``--help``."""
    return [*sorted(DECIDERS), "ppo", "ppo:<run folder>", "bundle", "bundle:<path>",
            "<label>=<spec>"]


def split_label(spec: str) -> tuple[str, str]:
    """``label=spec`` -> (label, spec); a bare spec is labelled by its kind (``ppo:x`` -> ppo)."""
    if "=" in spec:
        label, _, rest = spec.partition("=")
        if not label or not rest:
            raise QsplitInputError(f"decider: {spec!r} is not LABEL=SPEC")
        return label, rest
    return spec.split(":", 1)[0], spec


def make_policy(spec: str, profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS) -> Policy:
    """The policy a decider spec names (see the module docstring)."""
    label, body = split_label(str(spec).strip())
    kind, sep, arg = body.partition(":")
    if not sep and kind in DECIDERS:
        return DeciderPolicy(label, profile, DECIDERS[kind], tuple(bits))
    if kind == "ppo":
        folder = Path(arg) if sep else default_run_folder(profile)
        return load_ppo_run(folder, profile, bits, name=label)
    if kind == "bundle":
        return load_bundle(Path(arg) if sep else None, profile, bits, name=label)
    raise QsplitInputError(f"decider: unknown {spec!r}; known: {known_specs()}")


def default_run_folder(profile: ModelProfile) -> Path:
    """The committed default PPO run for ``profile``."""
    raise QsplitInputError(
        f"decider ppo: no committed default policy for model {profile.name!r}; "
        "give a run folder as ppo:<run folder>")


def _same_profile(name: str, what: str, theirs: ModelProfile, ours: ModelProfile) -> None:
    if theirs.sha256() != ours.sha256():
        raise QsplitInputError(
            f"decider {name}: {what} was trained for model {theirs.name!r}, but the suite "
            f"evaluates {ours.name!r} (profile hashes differ)")


def load_ppo_run(folder: Path, profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS,
                 name: str = "ppo") -> PPOPolicy:
    """A PPO (or MaskablePPO) run folder holding ``model.zip`` as a policy.

    The decision is the environment's own: an env built with the run's recorded arguments
    (``agents.export.read_env_kwargs``) gives the observation (and MaskablePPO's action
    mask), the model predicts deterministically for the whole batch, and ``env.step``
    executes each action (decode, then repair if the drop exceeds the budget, or the
    penalty mode's raw plan if the run used it); ``info["plan"]`` is the plan.
    """
    folder = Path(folder)
    if not (folder / "model.zip").is_file():
        raise QsplitInputError(
            f"decider {name}: run folder {folder} has no model.zip "
            "(expected <log folder>/<algo>/<env>_<n>/model.zip as train.py writes)")
    import numpy as np

    from agents.export import is_maskable, load_run_model, read_env_kwargs
    from envs.quantsplit import QuantSplitEnv
    from system.codec import ObservationEncoder

    kw = read_env_kwargs(folder)
    allowed = ("model", "scenario", "mode", "bits", "encoder", "penalty", "reward_scale")
    args = {k: kw[k] for k in allowed if kw.get(k) is not None}
    if isinstance(args.get("encoder"), dict):
        args["encoder"] = ObservationEncoder.from_json(args["encoder"])
    # the reward's reference is not part of the decision: server-only avoids a solve per step
    env = QuantSplitEnv(**args, reward_reference="server_only", compute_regret=False)
    _same_profile(name, f"run {folder}", env.profile, profile)
    if tuple(env.codec.bits) != tuple(bits):
        raise QsplitInputError(f"decider {name}: run {folder} uses bits {list(env.codec.bits)}, "
                               f"the suite {list(bits)}")
    model = load_run_model(folder)
    maskable = is_maskable(model)

    def decide_plans(requests: Sequence[Request]) -> list[Plan]:
        obs, masks = [], []
        for r in requests:
            o, _ = env.reset(options={"request": r})
            obs.append(o)
            if maskable:
                masks.append(env.action_masks())
        kwargs = {"action_masks": np.stack(masks)} if maskable else {}
        actions, _ = model.predict(np.stack(obs), deterministic=True, **kwargs)
        plans = []
        for r, a in zip(requests, actions, strict=True):
            env.reset(options={"request": r})
            plans.append(env.step(a)[4]["plan"])
        return plans

    return PPOPolicy(name=name, profile=profile, bits=tuple(bits), run_folder=folder,
                     decide_plans=decide_plans)


def load_bundle(path: Path | None, profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS,
                name: str = "bundle") -> BundlePolicy:
    """An exported bundle (default: the committed one for ``profile``) as a policy."""
    from runtime import Dispatcher, default_bundle_path

    path = Path(path) if path is not None else default_bundle_path(profile.name)
    if not path.is_dir():
        raise QsplitInputError(f"decider {name}: bundle folder {path} not found")
    disp = Dispatcher.load(path)
    _same_profile(name, f"bundle {path}", disp.profile, profile)
    if tuple(disp.bits) != tuple(bits):
        raise QsplitInputError(f"decider {name}: bundle {path} uses bits {list(disp.bits)}, "
                               f"the suite {list(bits)}")
    return BundlePolicy(name=name, profile=profile, bits=tuple(bits), path=path, dispatcher=disp)
