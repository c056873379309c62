"""A trained policy read from a stable-baselines3 ``model.zip`` without unpickling anything.

SB3's own loader (``PPO.load``) deserialises the base64 cloudpickle entries of the zip's
``data`` member (spaces, schedules, the policy class): a crafted file runs code when it is
loaded. A run folder someone hands over is input, not code, so export and evaluation read
only what needs no pickle:

* ``policy.pth``: the policy's state dict, read with ``torch.load(weights_only=True)`` (plain
  tensors; anything else is refused by torch's restricted reader);
* ``data``: JSON. Its readable entries give the policy class (by module: SB3's
  ``ActorCriticPolicy`` or sb3-contrib's maskable one), ``policy_kwargs`` (``net_arch``,
  the activation by its class name) and ``num_timesteps``. Every ``:serialized:`` entry is
  left undecoded.

The observation and action spaces come from the run's ``env_kwargs.json`` (the encoder and
the codec), and the weights must fit the architecture exactly. Only resuming training
(``train.py -i``) uses SB3's full loader, :func:`load_trusted_model`: a file given there is
trusted code.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from system.codec import ObservationEncoder
from system.errors import QsplitInputError, shown
from system.loaders import decode_text, parse_json

#: The activation functions a config may name (``nn.<name>``) and a model.zip may record.
ACTIVATIONS = ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU")
#: Policy classes by the module a model.zip records, with the algorithm that trains them.
POLICY_MODULES = {"stable_baselines3.common.policies": "PPO",
                  "sb3_contrib.common.maskable.policies": "MaskablePPO"}
#: policy_kwargs entries that shape the actor, and those that only matter to training.
_SHAPING = ("net_arch", "activation_fn", "share_features_extractor", "features_extractor_class")
_TRAINING_ONLY = ("ortho_init", "log_std_init", "optimizer_class", "optimizer_kwargs",
                  "normalize_images", "features_extractor_kwargs")
#: Largest zip members read (the declared, decompressed size): the data JSON, the weights.
_MAX_DATA_BYTES = 64 << 20
_MAX_WEIGHTS_BYTES = 1 << 30


def activation_classes() -> dict[str, type]:
    """``nn.<name>`` -> the torch class, for the names of :data:`ACTIVATIONS`."""
    from torch import nn

    return {f"nn.{n}": getattr(nn, n) for n in ACTIVATIONS}


@dataclass
class RunModel:
    """A trained actor-critic rebuilt from a model.zip's weights; predicts as SB3's model does."""

    policy: Any
    algo: str                       # "PPO" or "MaskablePPO": the algorithm that trained it
    num_timesteps: int
    path: Path

    @property
    def observation_space(self) -> Any:
        """The policy's observation space (the encoder's Box)."""
        return self.policy.observation_space

    @property
    def action_space(self) -> Any:
        """The policy's action space (the codec's MultiDiscrete)."""
        return self.policy.action_space

    def predict(self, observation: np.ndarray, deterministic: bool = True,
                action_masks: np.ndarray | None = None) -> tuple[np.ndarray, None]:
        """SB3's ``predict``: the policy's own method, with masks for a maskable policy."""
        kw = {} if action_masks is None else {"action_masks": action_masks}
        return self.policy.predict(observation, deterministic=deterministic, **kw)


def read_policy(zpath: str | Path, encoder: ObservationEncoder, nvec: Sequence[int],
                where: str | None = None) -> RunModel:
    """The policy in an SB3 model.zip for an env with this observation encoder and action nvec.

    Nothing in the file is unpickled (see the module docstring); a file that is not such a
    model, or whose weights do not fit, is refused in one line that starts with ``where``.
    """
    zpath = Path(zpath)
    where = where or str(zpath)
    if not zpath.is_file():
        raise QsplitInputError(f"{where}: no such file")
    try:
        with zipfile.ZipFile(zpath) as zf:
            data = _json_member(zf, where)
            weights = _member(zf, "policy.pth", _MAX_WEIGHTS_BYTES, where)
    except QsplitInputError:
        raise
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zlib.error,
            zipfile.BadZipFile) as exc:     # truncated, encrypted, unknown compression, bad CRC
        raise QsplitInputError(f"{where}: not an SB3 model.zip ({_first_line(exc)})") from None
    algo = _algo(data, where)
    kwargs = _policy_kwargs(data.get("policy_kwargs"), where)
    _check_recorded_spaces(data, encoder.n_features, nvec, where)
    state = _state_dict(weights, where)
    policy = _build(algo, encoder, nvec, kwargs)
    _load_exactly(policy, state, kwargs, where)
    steps = data.get("num_timesteps", 0)
    ok = isinstance(steps, int) and not isinstance(steps, bool) and 0 <= steps < 2**63
    return RunModel(policy=policy, algo=algo, path=zpath, num_timesteps=steps if ok else 0)


def load_trusted_model(path: str | Path, algo_cls: type, **kwargs: Any) -> Any:
    """SB3's full loader: unpickles the file, so it runs whatever code the file holds.

    Only for files the user vouches for (``train.py -i``, publishing one's own run).
    """
    try:
        return algo_cls.load(path, device="cpu", **kwargs)
    except (OSError, ValueError, KeyError, TypeError, AssertionError, RuntimeError,
            zipfile.BadZipFile) as exc:
        raise QsplitInputError(f"{path}: cannot load the model ({_first_line(exc)})") from None


# ------------------------------------------------------------------------------ pieces

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _member(zf: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise QsplitInputError(f"{where}: not an SB3 model.zip (no {name!r} in it)") from None
    if info.file_size > limit:
        raise QsplitInputError(f"{where}: {name} declares {info.file_size} bytes; at most "
                               f"{limit} are read")
    return zf.read(info)


def _json_member(zf: zipfile.ZipFile, where: str) -> dict[str, Any]:
    raw = _member(zf, "data", _MAX_DATA_BYTES, where)
    data = parse_json(decode_text(raw, f"{where}: data"), f"{where}: data")
    if not isinstance(data, dict):
        raise QsplitInputError(f"{where}: its 'data' is not a JSON object")
    return data


def _algo(data: dict[str, Any], where: str) -> str:
    cls = data.get("policy_class")
    module = cls.get("__module__") if isinstance(cls, dict) else None
    if not isinstance(module, str) or module not in POLICY_MODULES:
        raise QsplitInputError(
            f"{where}: policy class from module {shown(module)} is not one of "
            f"{sorted(POLICY_MODULES)} (an MlpPolicy of PPO or MaskablePPO)")
    return POLICY_MODULES[module]


def _policy_kwargs(raw: object, where: str) -> dict[str, Any]:
    """The readable policy_kwargs: net_arch, the activation by class name, feature sharing."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise QsplitInputError(f"{where}: policy_kwargs is not a JSON object")
    given = {k: v for k, v in raw.items() if k not in (":type:", ":serialized:")}
    unknown = sorted(set(given) - set(_SHAPING) - set(_TRAINING_ONLY))
    if unknown:
        raise QsplitInputError(f"{where}: policy_kwargs {unknown} are not supported; known: "
                               f"{sorted(_SHAPING + _TRAINING_ONLY)}")
    out: dict[str, Any] = {}
    if "net_arch" in given:
        out["net_arch"] = check_net_arch(given["net_arch"], f"{where}: policy_kwargs.net_arch")
    if "activation_fn" in given:
        recorded = {f"<class '{c.__module__}.{c.__qualname__}'>": c
                    for c in activation_classes().values()}
        fn = given["activation_fn"]
        if not isinstance(fn, str) or fn not in recorded:
            raise QsplitInputError(
                f"{where}: policy_kwargs.activation_fn {shown(fn)} is not one of "
                f"nn.{', nn.'.join(ACTIVATIONS)}")
        out["activation_fn"] = recorded[fn]
    fe = given.get("features_extractor_class")
    if fe is not None and fe != "<class 'stable_baselines3.common.torch_layers.FlattenExtractor'>":
        raise QsplitInputError(f"{where}: features extractor {shown(fe)} is not "
                               "FlattenExtractor (the encoder's vector is fed as is)")
    if "share_features_extractor" in given:
        if not isinstance(given["share_features_extractor"], bool):
            raise QsplitInputError(f"{where}: policy_kwargs.share_features_extractor is not "
                                   "true or false")
        out["share_features_extractor"] = given["share_features_extractor"]
    return out


#: Hidden layers of a policy network: at most this many, each this wide at most.
MAX_LAYERS = 8
MAX_WIDTH = 4096


def check_net_arch(value: object, where: str) -> list[int] | dict[str, list[int]]:
    """A net_arch as SB3 takes it: a list of layer widths, or ``{pi: [...], vf: [...]}``."""
    def widths(v: object, name: str) -> list[int]:
        ok = isinstance(v, (list, tuple)) and len(v) <= MAX_LAYERS and all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_WIDTH for w in v)
        if not ok:
            raise QsplitInputError(
                f"{name}: expected a list of at most {MAX_LAYERS} layer widths, each an "
                f"integer in [1, {MAX_WIDTH}], got {shown(v)}")
        return [int(w) for w in v]

    if isinstance(value, dict):
        unknown = sorted(map(str, set(value) - {"pi", "vf"}))
        if unknown:
            raise QsplitInputError(f"{where}: unknown key(s) {unknown}; allowed keys are "
                                   "['pi', 'vf']")
        return {k: widths(v, f"{where}.{k}") for k, v in value.items()}
    return widths(value, where)


def _check_recorded_spaces(data: dict[str, Any], n_features: int, nvec: Sequence[int],
                           where: str) -> None:
    """Compare the spaces' readable records (shape, nvec) with the run's env, when present."""
    obs, act = data.get("observation_space"), data.get("action_space")
    want = [int(n) for n in nvec]
    if isinstance(obs, dict) and isinstance(obs.get("_shape"), list) \
            and obs["_shape"] != [n_features]:
        raise QsplitInputError(f"{where}: trained on observations of shape {obs['_shape'][:4]}, "
                               f"the run's encoder gives [{n_features}] (another encoder?)")
    if isinstance(act, dict) and isinstance(act.get("nvec"), str):
        got = [int(x) for x in re.findall(r"-?\d+", act["nvec"][:10_000])]
        if got != want:
            raise QsplitInputError(f"{where}: trained for actions MultiDiscrete({got[:16]}), the "
                                   f"run's env has MultiDiscrete({want}) (another profile or bits?)")


def _state_dict(raw: bytes, where: str) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:      # torch's restricted reader on arbitrary bytes: any failure
        raise QsplitInputError(f"{where}: policy.pth is not a state dict of plain tensors "
                               f"({_first_line(exc)})") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise QsplitInputError(f"{where}: policy.pth is not a state dict of plain tensors")
    return state


def _build(algo: str, encoder: ObservationEncoder, nvec: Sequence[int],
           kwargs: dict[str, Any]) -> Any:
    """The policy module as SB3 builds it, on the env's spaces (global RNG left untouched)."""
    import torch
    from gymnasium import spaces

    obs = spaces.Box(-encoder.clip, encoder.clip, (encoder.n_features,), np.float32)
    act = spaces.MultiDiscrete(np.asarray(nvec, dtype=np.int64))
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
    from stable_baselines3.common.policies import ActorCriticPolicy

    cls = MaskableActorCriticPolicy if algo == "MaskablePPO" else ActorCriticPolicy
    with torch.random.fork_rng(devices=[]):
        return cls(obs, act, lambda _: 0.0, ortho_init=False, **kwargs)


def _load_exactly(policy: Any, state: dict[str, Any], kwargs: dict[str, Any], where: str) -> None:
    expected = policy.state_dict()
    arch = f"net_arch {kwargs.get('net_arch', 'default')}"
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise QsplitInputError(f"{where}: weights do not fit the recorded architecture ({arch}): "
                               f"missing {missing[:3]}, unexpected {extra[:3]}")
    for k, t in expected.items():
        if tuple(state[k].shape) != tuple(t.shape) or state[k].dtype != t.dtype:
            raise QsplitInputError(
                f"{where}: weights {k!r} have shape {list(state[k].shape)} ({state[k].dtype}); "
                f"the recorded architecture ({arch}) on the run's spaces needs {list(t.shape)}")
    policy.load_state_dict(state, strict=True)
    policy.set_training_mode(False)
