"""Export a trained policy as a bundle the numpy-only runtime dispatcher loads.

    python -m agents.export --run RUN_FOLDER --out BUNDLE_FOLDER [--onnx] [--force]

``RUN_FOLDER`` holds the stable-baselines3 ``model.zip`` of a ``QuantSplit-v0`` run (PPO or
sb3-contrib's MaskablePPO) and the env's resolved arguments, ``env_kwargs.json``
(:func:`write_env_kwargs`; ``--model`` overrides the profile's path). The bundle (see
:mod:`runtime.bundle`) holds the actor only: the policy MLP (``mlp_extractor.policy_net``)
and ``action_net`` as float32 arrays, with the observation encoder, action codec, action
masking, the profile and its hash in ``contract.json``. The value network is not exported:
deciding does not need it. Anything the runtime could not reproduce exactly (another
feature extractor, an activation other than tanh / ReLU, observation normalisation outside
the encoder, another action space) is refused here, at export, with a clear error.

``--onnx`` adds ``policy.onnx`` (logits of all heads, from torch.onnx); it needs the
``onnx`` extra and is checked against the numpy forward pass before it is written.

``BUNDLE_FOLDER`` must not exist, or be a bundle and ``--force`` given: anything else there
(a file, a folder of other files, a path under a file) is refused before any work. The
bundle is switched into place in one step (:func:`system.atomic.publish_folder`), so an
interrupted export leaves the previous bundle whole.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.bundle import check_out_path, make_contract, write_bundle
from runtime.support import training_support
from system.atomic import atomic_write_text
from system.bits import DEFAULT_BITS
from system.codec import ActionCodec, ObservationEncoder
from system.errors import QsplitInputError, check_keys, cli_main
from system.loaders import parse_json, read_text
from system.profiles import ModelProfile, load_profile

if TYPE_CHECKING:
    from agents.weights import RunModel
    from envs.quantsplit import QuantSplitEnv

ENV_ID = "QuantSplit-v0"
#: The env's resolved arguments in a run folder (train.py writes it).
ENV_KWARGS_FILE = "env_kwargs.json"
#: What a reader of that file needs: the profile and its hash, the observation, the action.
_READ_KEYS = ("model", "profile_sha256", "bits", "mode", "scenario", "encoder")
#: The env arguments a bundle records: what decides a plan (model, bits, mode) and the
#: population the policy was trained on (scenario).
CONTRACT_ENV_KWARGS = ("bits", "mode", "model", "scenario")


def actor_arrays(policy: Any) -> tuple[list[tuple[str, str, str]], tuple[str, str],
                                       dict[str, np.ndarray]]:
    """The actor of an SB3 ActorCriticPolicy as named float32 arrays.

    Returns (hidden layers as (weight, bias, activation) names, action_net (weight, bias)
    names, arrays). Refuses what the runtime's MLP cannot reproduce exactly.
    """
    import torch.nn as nn
    from stable_baselines3.common.torch_layers import FlattenExtractor

    fe = getattr(policy, "pi_features_extractor", None) or policy.features_extractor
    if not isinstance(fe, FlattenExtractor):
        raise QsplitInputError(f"policy: features extractor {type(fe).__name__} is not "
                               "FlattenExtractor (the runtime feeds the encoder's vector as is)")
    net = policy.mlp_extractor.policy_net
    mods = list(net.children()) if isinstance(net, nn.Sequential) else [net]
    acts = {nn.Tanh: "tanh", nn.ReLU: "relu"}
    hidden: list[tuple[str, str, str]] = []
    arrays: dict[str, np.ndarray] = {}
    for m in mods:
        if isinstance(m, nn.Linear):
            i = len(hidden)
            arrays[f"policy_net.{i}.weight"] = _f32(m.weight)
            arrays[f"policy_net.{i}.bias"] = _f32(m.bias) if m.bias is not None else \
                np.zeros(m.out_features, np.float32)
            hidden.append((f"policy_net.{i}.weight", f"policy_net.{i}.bias", "identity"))
        elif type(m) in acts and hidden and hidden[-1][2] == "identity":
            w, b, _ = hidden[-1]
            hidden[-1] = (w, b, acts[type(m)])
        elif isinstance(m, nn.Identity):
            continue
        else:
            raise QsplitInputError(f"policy: layer {type(m).__name__} in policy_net is not "
                                   "supported (Linear followed by Tanh or ReLU)")
    an = policy.action_net
    if not isinstance(an, nn.Linear):
        raise QsplitInputError(f"policy: action_net {type(an).__name__} is not a Linear layer")
    arrays["action_net.weight"] = _f32(an.weight)
    arrays["action_net.bias"] = _f32(an.bias) if an.bias is not None else \
        np.zeros(an.out_features, np.float32)
    return hidden, ("action_net.weight", "action_net.bias"), arrays


def _f32(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32, copy=True)


def is_maskable(model: Any) -> bool:
    """MaskablePPO (its predict takes the env's action masks)."""
    return type(model).__name__.startswith("Maskable") or \
        type(model.policy).__module__.startswith("sb3_contrib.common.maskable")


def export_model(model: Any, profile: ModelProfile, out_dir: str | Path, *,
                 encoder: ObservationEncoder | None = None,
                 bits: tuple[int, ...] | None = None,
                 env_kwargs: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
                 onnx: bool = False, force: bool = False) -> Path:
    """Write the bundle of a loaded SB3 model trained on ``QuantSplit-v0`` for ``profile``.

    ``env_kwargs`` (JSON values) and ``source`` are recorded in the contract as given; with a
    ``scenario`` among them, so is the training support of each feature
    (:func:`runtime.support.training_support`). An existing ``out_dir`` is replaced only if
    it is a bundle and ``force`` is set.
    """
    from gymnasium import spaces

    check_out_path(out_dir, force=force)
    encoder = encoder or ObservationEncoder()
    codec = ActionCodec(profile.n_units, tuple(bits) if bits else DEFAULT_BITS)
    obs_space, act_space = model.observation_space, model.action_space
    if not isinstance(obs_space, spaces.Box) or obs_space.shape != (encoder.n_features,):
        raise QsplitInputError(f"model: observation space {obs_space} is not a Box of "
                               f"{encoder.n_features} features (another encoder?)")
    if not isinstance(act_space, spaces.MultiDiscrete) or \
            list(act_space.nvec) != codec.nvec.tolist():
        raise QsplitInputError(f"model: action space {act_space} is not MultiDiscrete"
                               f"({codec.nvec.tolist()}) for {profile.name} (another profile?)")
    hidden, action, arrays = actor_arrays(model.policy)
    masking = "feasible_options" if is_maskable(model) else "none"
    src = {"algo": type(model).__name__, "num_timesteps": int(getattr(model, "num_timesteps", 0)),
           **_versions(), **(source or {})}
    contract = make_contract(profile=profile, encoder=encoder, codec=codec, hidden=hidden,
                             action=action, masking=masking, env_id=ENV_ID,
                             env_kwargs=dict(env_kwargs or {}), source=src,
                             support=training_support(encoder, env_kwargs["scenario"])
                             if env_kwargs and "scenario" in env_kwargs else None)
    extra = {}
    if onnx:
        from runtime.bundle import ONNX_FILE
        extra[ONNX_FILE] = onnx_bytes(model.policy, encoder.n_features, arrays, hidden, action)
    return write_bundle(out_dir, contract, arrays, extra, force=force)


def _versions() -> dict[str, str]:
    import stable_baselines3
    import torch

    out = {"stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__,
           "numpy": np.__version__}
    try:
        import sb3_contrib
        out["sb3_contrib"] = sb3_contrib.__version__
    except ImportError:
        pass
    return out


def numpy_logits(arrays: dict[str, np.ndarray], hidden: list[tuple[str, str, str]],
                 action: tuple[str, str], obs: np.ndarray) -> np.ndarray:
    """The actor's logits in float32 numpy (the reference the ONNX export is checked against)."""
    x = np.asarray(obs, np.float32)
    for w, b, act in hidden:
        x = x @ arrays[w].T + arrays[b]
        x = np.tanh(x) if act == "tanh" else (np.maximum(x, 0) if act == "relu" else x)
    return x @ arrays[action[0]].T + arrays[action[1]]


def onnx_bytes(policy: Any, n_features: int, arrays: dict[str, np.ndarray],
               hidden: list[tuple[str, str, str]], action: tuple[str, str]) -> bytes:
    """The actor (observation -> logits of every head) as ONNX, checked with onnxruntime."""
    try:
        import onnxruntime as ort
        import torch
    except ImportError as exc:
        raise QsplitInputError(f"--onnx: needs the onnx extra (pip install -e '.[onnx]'): "
                               f"{exc}") from None

    class Actor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy_net = policy.mlp_extractor.policy_net
            self.action_net = policy.action_net

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.action_net(self.policy_net(obs))

    buf = io.BytesIO()
    actor = Actor().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # the TorchScript exporter
        torch.onnx.export(actor, torch.zeros(1, n_features), buf, input_names=["obs"],
                          output_names=["logits"], dynamic_axes={"obs": {0: "n"},
                                                                 "logits": {0: "n"}},
                          dynamo=False)
    data = buf.getvalue()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(0).uniform(-2, 2, (256, n_features)).astype(np.float32)
    got = sess.run(["logits"], {"obs": obs})[0]
    want = numpy_logits(arrays, hidden, action, obs)
    if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise QsplitInputError("--onnx: the ONNX actor's logits differ from the weights'")
    return data


# ------------------------------------------------------------------------------ run folders

def write_env_kwargs(run: str | Path, env: QuantSplitEnv) -> Path:
    """Record the env a run trains on: :meth:`QuantSplitEnv.resolved_kwargs` as ``env_kwargs.json``."""
    path = Path(run) / ENV_KWARGS_FILE
    atomic_write_text(path, json.dumps(env.resolved_kwargs(), indent=1) + "\n")
    return path


def read_env_kwargs(run: str | Path) -> dict[str, Any]:
    """The env arguments a run recorded (``env_kwargs.json``): what export and evaluation rebuild."""
    from envs.quantsplit import QuantSplitEnv

    run = Path(run)
    path = run / ENV_KWARGS_FILE
    if not path.is_file():
        raise QsplitInputError(
            f"run {run}: no {ENV_KWARGS_FILE} (train.py writes the env's resolved arguments "
            "there; for a run trained elsewhere write it with agents.export.write_env_kwargs)")
    where = f"run {run}: {ENV_KWARGS_FILE}"
    data = parse_json(read_text(path, where), where)
    known = [*inspect.signature(QuantSplitEnv).parameters, "profile_sha256"]
    return check_keys(f"run {run}: {ENV_KWARGS_FILE}", data, _READ_KEYS, known)


def load_run_model(run: Path, checkpoint: str = "model.zip",
                   profile: ModelProfile | None = None) -> RunModel:
    """The policy of a run folder (PPO or MaskablePPO), read without unpickling anything.

    The weights and architecture come from the model.zip's tensors and JSON
    (:func:`agents.weights.read_policy`), the spaces from ``env_kwargs.json`` (``profile``:
    the run's own by default).
    """
    from agents.weights import read_policy

    run = Path(run)
    if not (run / checkpoint).is_file():
        raise QsplitInputError(f"run {run}: no {checkpoint} (expected the SB3 model there)")
    kwargs = read_env_kwargs(run)
    n_units = (profile or load_profile(str(kwargs["model"]))).n_units
    return read_policy(run / checkpoint, ObservationEncoder.from_json(kwargs["encoder"]),
                       ActionCodec(n_units, tuple(kwargs["bits"])).nvec,
                       where=f"run {run}: {checkpoint}")


def export_run(run: str | Path, out_dir: str | Path, *, model_name: str | None = None,
               checkpoint: str = "model.zip", onnx: bool = False, force: bool = False) -> Path:
    """Export the model of a run folder (see the module docstring).

    The profile is the run's (``--model`` overrides); a profile whose hash differs from the
    one the run recorded (it changed since training) is refused. ``out_dir`` is checked
    first: an existing path that is not a bundle is refused, a bundle needs ``force``.
    """
    run = Path(run)
    check_out_path(out_dir, force=force)
    if not (run / checkpoint).is_file():
        raise QsplitInputError(f"run {run}: no {checkpoint} (expected the SB3 model there)")
    kwargs = read_env_kwargs(run)
    profile = load_profile(str(model_name or kwargs["model"]))
    if kwargs["profile_sha256"] != profile.sha256():
        raise QsplitInputError(
            f"run {run}: trained on a profile with hash {str(kwargs['profile_sha256'])[:12]}, but "
            f"{profile.name!r} now hashes to {profile.sha256()[:12]} (the profile changed since "
            "training: retrain, or pass the original profile JSON with --model)")
    if kwargs["mode"] != "repair":
        print(f"note: run {run} was trained in {kwargs['mode']!r} mode; the bundle repairs "
              "infeasible plans as the env's repair mode does", file=sys.stderr)
    model = load_run_model(run, checkpoint, profile)
    zsha = hashlib.sha256((run / checkpoint).read_bytes()).hexdigest()
    source = {"algo": model.algo, "run": run.name, "checkpoint": checkpoint,
              "model_zip_sha256": zsha, "algo_name": "ppo_mask" if is_maskable(model) else "ppo"}
    root = Path(__file__).resolve().parents[1]
    if run.resolve().is_relative_to(root):      # a committed run: tests check parity with it
        source["run_path"] = run.resolve().relative_to(root).as_posix()
    return export_model(model, profile, out_dir,
                        encoder=ObservationEncoder.from_json(kwargs["encoder"]),
                        bits=tuple(kwargs["bits"]),
                        env_kwargs={k: kwargs[k] for k in CONTRACT_ENV_KWARGS},
                        source=source, onnx=onnx, force=force)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m agents.export", description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="run folder holding model.zip")
    ap.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    ap.add_argument("--model", default=None,
                    help="profile name or JSON path (default: the run's recorded model)")
    ap.add_argument("--checkpoint", default="model.zip",
                    help="model file in the run folder (model.zip, or best_model.zip)")
    ap.add_argument("--onnx", action="store_true", help="also write policy.onnx (onnx extra)")
    ap.add_argument("--force", action="store_true",
                    help="replace a bundle already at --out (anything else there is refused)")
    args = ap.parse_args(argv)
    out = export_run(args.run, args.out, model_name=args.model, checkpoint=args.checkpoint,
                     onnx=args.onnx, force=args.force)
    print(json.dumps({"bundle": str(out), "files": sorted(p.name for p in out.iterdir())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
