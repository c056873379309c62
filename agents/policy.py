"""One face for every decider: a :class:`Policy` turns requests into plans.

The leaderboard (``evaluate.py``) runs the exact optimizer, the baselines, a trained PPO run
and an exported bundle through this one protocol, so each is measured on the same requests
in the same way. A policy is bound to one model profile and bit set when it is made
(a trained policy only knows the profile it was trained on).

Decider specs, as the command line takes them (:func:`make_policy`):

* ``optimal``, ``server_only``, ``device_only``, ``device_only_int8``, ``partition_only``,
  ``uniform``: the deciders of :data:`system.baselines.DECIDERS`;
* ``ppo``: the shipped default policy for the profile (``agents/data/policies/<model>/``);
* ``ppo:<run folder>``: a training run (rl-zoo layout, the folder holding ``model.zip``);
  ``ppo:<run folder>/best_model.zip`` (any ``.zip`` in it) for another checkpoint; its
  weights are read without unpickling anything (:mod:`agents.weights`);
* ``bundle:<path>``: an exported policy bundle, decided by :class:`runtime.Dispatcher`;
* ``bundle``: the committed default bundle for the profile (``runtime/bundles/<model>``);
* ``<label>=<spec>``: any of the above reported under ``label`` (two PPO runs side by side).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from system.baselines import DECIDERS, Decider
from system.bits import DEFAULT_BITS
from system.errors import QsplitInputError
from system.plan import Plan
from system.profiles import ModelProfile
from system.request import Request

if TYPE_CHECKING:
    from runtime import Dispatcher


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

    ``decide_plans`` decides as the environment executes (observation encoding, action
    decoding and repair exactly as ``env.step`` applies them); the adapter only adds the
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
    dispatcher: Dispatcher = field(repr=False)
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
    if sep and not arg:
        raise QsplitInputError(f"decider: {spec!r} names no path after {kind}:; known: {known_specs()}")
    if not sep and kind in DECIDERS:
        return DeciderPolicy(label, profile, DECIDERS[kind], tuple(bits))
    if kind == "ppo":
        folder, checkpoint = (_run_and_checkpoint(Path(arg)) if sep
                              else default_run_folder(profile))
        return load_ppo_run(folder, profile, bits, name=label, checkpoint=checkpoint)
    if kind == "bundle":
        return load_bundle(Path(arg) if sep else None, profile, bits, name=label)
    raise QsplitInputError(f"decider: unknown {spec!r}; known: {known_specs()}")


def _run_and_checkpoint(path: Path) -> tuple[Path, str]:
    """``run/`` -> (run, model.zip); ``run/best_model.zip`` -> (run, best_model.zip)."""
    return (path.parent, path.name) if path.suffix == ".zip" else (path, "model.zip")


def default_run_folder(profile: ModelProfile) -> tuple[Path, str]:
    """The shipped default policy of ``profile`` (``agents/data/policies/<model>/``, written
    by agents/publish.py in the run-folder form) and its checkpoint."""
    from agents.publish import default_policy_dir

    folder = default_policy_dir(profile.name)
    if not (folder / "model.zip").is_file():
        raise QsplitInputError(
            f"decider ppo: no shipped default policy for model {profile.name!r} "
            f"({folder / 'model.zip'} not found); give a run folder as ppo:<run folder>")
    return folder, "model.zip"


def _same_profile(name: str, what: str, theirs_sha: str, theirs_name: str,
                  ours: ModelProfile) -> None:
    if theirs_sha != ours.sha256():
        raise QsplitInputError(
            f"decider {name}: {what} was trained for model {theirs_name!r} (profile sha256 "
            f"{theirs_sha[:12]}), but the suite evaluates {ours.name!r} (sha256 "
            f"{ours.sha256()[:12]}): another model, or the profile changed since training")


def load_ppo_run(folder: Path, profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS,
                 name: str = "ppo", checkpoint: str = "model.zip") -> PPOPolicy:
    """A PPO (or MaskablePPO) run folder holding ``model.zip`` (or ``checkpoint``) as a policy.

    The decision is the environment's, taken without stepping it: the run's recorded encoder
    (:func:`agents.export.read_env_kwargs`) gives the observations (and the codec
    MaskablePPO's action masks), the model predicts deterministically for the whole batch,
    and :func:`system.repair.execute_action` executes each action as ``env.step`` does
    (repaired if the drop exceeds the budget, or the penalty mode's raw plan). The model is
    read from the zip's tensors and JSON without unpickling (:mod:`agents.weights`): a run
    folder handed over is input, never code.
    """
    folder = Path(folder)
    if not (folder / checkpoint).is_file():
        raise QsplitInputError(
            f"decider {name}: run folder {folder} has no {checkpoint} "
            "(expected <log folder>/<algo>/<env>_<n>/model.zip as train.py writes)")
    import numpy as np
    import torch

    from agents.evaluation import predict_actions
    from agents.export import is_maskable, load_run_model, read_env_kwargs
    from system.codec import ActionCodec, ObservationEncoder
    from system.cost import unit_tables
    from system.repair import execute_action

    kw = read_env_kwargs(folder)
    _same_profile(name, f"run {folder}", str(kw["profile_sha256"]), str(kw["model"]), profile)
    if tuple(kw["bits"]) != tuple(bits):
        raise QsplitInputError(f"decider {name}: run {folder} uses bits {list(kw['bits'])}, "
                               f"the suite {list(bits)}")
    encoder = ObservationEncoder.from_json(kw["encoder"])
    codec = ActionCodec(profile.n_units, tuple(bits))
    repair = kw["mode"] == "repair"
    model = load_run_model(folder, checkpoint, profile)    # unpickles nothing
    maskable = is_maskable(model)
    # one torch thread, as train.py: the nets are small and two threads on a busy 2-core
    # machine spin against each other (a process-wide setting, fine for a leaderboard run)
    torch.set_num_threads(1)

    def decide_plans(requests: Sequence[Request]) -> list[Plan]:
        tables = [unit_tables(profile, r, codec.bits) for r in requests]
        masks = np.stack([codec.action_mask(t, r.eps_pp) for t, r in
                          zip(tables, requests, strict=True)]) if maskable else None
        actions = predict_actions(model, encoder.encode_batch(requests), masks,
                                  batch=len(requests))     # one forward pass
        return [execute_action(t, r.eps_pp, a, repair=repair).plan
                for t, r, a in zip(tables, requests, actions, strict=True)]

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
    _same_profile(name, f"bundle {path}", disp.profile.sha256(), disp.profile.name, profile)
    if tuple(disp.bits) != tuple(bits):
        raise QsplitInputError(f"decider {name}: bundle {path} uses bits {list(disp.bits)}, "
                               f"the suite {list(bits)}")
    return BundlePolicy(name=name, profile=profile, bits=tuple(bits), path=path, dispatcher=disp)
