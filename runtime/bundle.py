"""Policy bundles: the folder an exported policy travels in, written and verified with numpy alone.

A bundle is a folder of three (or four, or five) files::

    contract.json   what the weights mean: observation features, their normalisation and
                    training support, action layout and bit set, action masking, the model
                    profile and its hash, env id and version, qsplit version, the layer list
    weights.npz     the actor network's float32 arrays (read with ``allow_pickle=False``)
    policy.onnx     optional, the same actor as ONNX (not used by the runtime)
    SHA256SUMS      ``<sha256>  <file>`` for every other file, sorted by name
    SHA256SUMS.sig  optional, its Ed25519 signature (:mod:`runtime.signing`)

:func:`load_bundle` refuses, with a :class:`BundleError` naming the bundle and the reason,
a bundle that is not exactly this: a missing or unlisted file, a checksum that does not
match, a missing or wrong signature when a public key is configured, another bundle format,
a qsplit major.minor or env version this runtime does not speak, a contract field of the
wrong type or range, a profile whose hash differs from the recorded one, arrays whose
declared shape or dtype differs from the contract's (checked in the headers before anything
is allocated, :mod:`runtime.weights`) or with non-finite values. Nothing is unpickled.

:func:`write_bundle` fills a new folder beside the target and switches it into place in one
step (:func:`system.atomic.publish_folder`); it replaces only a bundle, and only when told.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from runtime.history import HistorySpec, parse_history
from runtime.signing import SIG_FILE, check_signature
from runtime.support import parse_support
from runtime.weights import WeightsError, check_shape, read_arrays, read_headers
from system.atomic import npz_bytes as _npz_bytes
from system.atomic import publish_folder, staging_folder
from system.codec import ActionCodec, ObservationEncoder
from system.errors import QsplitInputError, check_keys
from system.loaders import parse_json, read_text
from system.profiles import ModelProfile, profile_from_dict

BUNDLE_FORMAT = "qsplit-policy-bundle/1"


def _installed_version() -> str:
    """The installed package's version (pyproject.toml's, through its metadata): bundles
    record it and are checked against it, so an uninstalled tree is refused with the fix."""
    try:
        return metadata.version("qsplit")
    except metadata.PackageNotFoundError:
        raise ImportError("qsplit is not installed, so its version is unknown: run "
                          "`pip install -e .` (or `make setup`) in the source tree") from None


#: The qsplit version this runtime is. A bundle loads only if its qsplit major.minor equals
#: this one's.
QSPLIT_VERSION = _installed_version()
#: Env ids (with their versions) whose policies this runtime reproduces.
SUPPORTED_ENVS: dict[str, int] = {"QuantSplit-v0": 0, "QuantSplitTrace-v0": 0}
CONTRACT_FILE = "contract.json"
WEIGHTS_FILE = "weights.npz"
ONNX_FILE = "policy.onnx"
SUMS_FILE = "SHA256SUMS"
ACTIVATIONS = ("tanh", "relu", "identity")
NORMALIZATIONS = ("none",)
MASKINGS = ("none", "feasible_options")
_SUM_LINE = re.compile(r"^([0-9a-f]{64})  ([A-Za-z0-9._-]+)$")
_CONTRACT_KEYS = ("format", "qsplit_version", "env", "model", "profile_sha256", "profile",
                  "observation", "action", "policy")
_CONTRACT_OPTIONAL = ("source", "files")


class BundleError(QsplitInputError):
    """A bundle that cannot be trusted or used: the message names the bundle and the reason."""


@dataclass(frozen=True)
class Layer:
    """One dense layer of the actor: ``y = act(W x + b)``, W of shape (out, in), float32."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle: everything the dispatcher needs, nothing else."""

    path: Path
    contract: dict
    profile: ModelProfile
    encoder: ObservationEncoder
    codec: ActionCodec
    hidden: tuple[Layer, ...]      # the policy MLP (mlp_extractor.policy_net)
    action: Layer                  # action_net: logits of every head, concatenated
    masking: str                   # "none" or "feasible_options" (MaskablePPO's env masks)
    #: (min, max) of each unclipped feature over the training population; None: not recorded
    support: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    history: HistorySpec | None = None   # a trace policy's expected samples (runtime.history)

    @property
    def model(self) -> str:
        """The profile name the policy was trained for."""
        return self.profile.name


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def version_compatible(a: str, b: str) -> bool:
    """Same major.minor (pre-1.0 semantic versioning: a minor bump may change the contract)."""
    pa, pb = str(a).split("."), str(b).split(".")
    return len(pa) >= 2 and len(pb) >= 2 and pa[:2] == pb[:2]


# ------------------------------------------------------------------------------ writing

def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The bundle's ``weights.npz``: :func:`system.atomic.npz_bytes`, errors as BundleError."""
    try:
        return _npz_bytes(arrays)
    except QsplitInputError as exc:
        raise BundleError(f"weights: {exc}") from None


def contract_text(contract: dict) -> str:
    """The contract's canonical JSON text (sorted keys, one space indent, final newline)."""
    return json.dumps(contract, indent=1, sort_keys=True, allow_nan=False) + "\n"


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a bundle folder (by its layout, whether intact or not): it holds
    ``SHA256SUMS`` listing the contract and weights and no file it does not list. What may be
    replaced by a new bundle without losing a user's files."""
    p = Path(path)
    try:
        if not p.is_dir():
            return False
        sums = _read_sums(p, "")
        present = {e.name for e in p.iterdir()} - {SUMS_FILE, SIG_FILE}
    except (BundleError, OSError):
        return False
    return {CONTRACT_FILE, WEIGHTS_FILE} <= set(sums) and present <= set(sums)


def check_out_path(out_dir: str | Path, *, force: bool = False) -> Path:
    """Refuse, before any work, an output path a bundle may not go to (one line): a path
    under a file, an existing file or folder that is not a bundle, or a bundle without
    ``force``."""
    out = Path(out_dir).absolute()
    for parent in out.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise BundleError(f"--out {out_dir}: {parent} is not a folder")
            break
    if out.exists() or out.is_symlink():
        if not is_bundle(out):
            raise BundleError(f"--out {out_dir}: exists and is not a bundle (refusing to replace "
                              "it; choose another path)")
        if not force:
            raise BundleError(f"--out {out_dir}: a bundle is already there (pass --force to "
                              "replace it)")
    return out


def write_bundle(out_dir: str | Path, contract: dict, arrays: dict[str, np.ndarray],
                 extra_files: dict[str, bytes] | None = None, *, force: bool = False) -> Path:
    """Write a bundle atomically (:func:`system.atomic.publish_folder`): a new folder beside
    ``out_dir``, verified by :func:`load_bundle`, then switched into place in one step.

    ``contract`` is written as given (build it with :func:`make_contract`); its ``files``
    entry is filled in here. An existing ``out_dir`` is replaced only if it is a bundle and
    ``force`` is set (:func:`check_out_path`); on any failure it is left as it was.
    """
    out = check_out_path(out_dir, force=force)
    files: dict[str, bytes] = {WEIGHTS_FILE: npz_bytes(arrays), **(extra_files or {})}
    contract = {**contract, "files": sorted([CONTRACT_FILE, *files])}
    files[CONTRACT_FILE] = contract_text(contract).encode("utf-8")
    sums = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files))
    files[SUMS_FILE] = sums.encode("ascii")
    tmp = staging_folder(out)
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        load_bundle(tmp, public_key=False)     # never put an unloadable bundle in place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_folder(tmp, out, replace=lambda p: force and is_bundle(p), what="bundle")


def make_contract(*, profile: ModelProfile, encoder: ObservationEncoder, codec: ActionCodec,
                  hidden: list[tuple[str, str, str]], action: tuple[str, str],
                  masking: str = "none", env_id: str = "QuantSplit-v0",
                  env_kwargs: dict | None = None, source: dict | None = None,
                  support: dict | None = None, history: dict | None = None) -> dict:
    """The contract of a bundle whose arrays are named in ``hidden`` and ``action``.

    ``hidden`` lists (weight array, bias array, activation) per layer of the policy MLP;
    ``action`` names the action_net's (weight, bias).
    """
    if env_id not in SUPPORTED_ENVS:
        raise BundleError(f"env id: {env_id!r} is not one of {sorted(SUPPORTED_ENVS)}")
    return {
        "format": BUNDLE_FORMAT,
        "qsplit_version": QSPLIT_VERSION,
        "env": {"id": env_id, "version": SUPPORTED_ENVS[env_id], "invalid_action": "repair",
                "kwargs": env_kwargs or {}},
        "model": profile.name,
        "profile_sha256": profile.sha256(),
        "profile": profile.to_dict(),
        "observation": {"encoder": encoder.to_json(), "n_features": encoder.n_features,
                        "names": encoder.names, "dtype": "float32",
                        "normalization": {"kind": "none"},
                        **({"support": support} if support is not None else {}),
                        **({"history": history} if history is not None else {})},
        "action": {"codec": codec.to_json(), "bits": list(codec.bits),
                   "nvec": codec.nvec.tolist(), "masking": masking,
                   "decode": "argmax of each head's logits (first index on ties), among the "
                             "options the mask allows; then system.codec.ActionCodec.decode; "
                             "then system.repair.repair_indices if the drop exceeds eps_pp"},
        "policy": {"kind": "mlp", "dtype": "float32",
                   "layers": [{"weight": w, "bias": b, "activation": a} for w, b, a in hidden],
                   "action_net": {"weight": action[0], "bias": action[1]}},
        "source": source or {},
    }


# ------------------------------------------------------------------------------ reading

def _read_sums(path: Path, where: str) -> dict[str, str]:
    sums_path = path / SUMS_FILE
    if not sums_path.is_file():
        raise BundleError(f"{where}: missing file {SUMS_FILE}")
    try:
        text = read_text(sums_path, "bundle")
    except QsplitInputError as exc:
        raise BundleError(str(exc)) from None
    sums: dict[str, str] = {}
    lines = text.split("\n")
    if not text.endswith("\n") or lines[-1] != "":
        raise BundleError(f"{where}: {SUMS_FILE} is malformed (no final newline)")
    for i, line in enumerate(lines[:-1], 1):
        m = _SUM_LINE.match(line)
        if not m or m.group(2) == SUMS_FILE or m.group(2) in sums:
            raise BundleError(f"{where}: {SUMS_FILE} line {i} is malformed: {line[:80]!r}")
        sums[m.group(2)] = m.group(1)
    return sums


def verify_files(path: str | Path, public_key: str | Path | bool | None = None) -> dict[str, str]:
    """Check the folder against its SHA256SUMS (no missing, extra or changed file) and, when
    a public key is configured (``public_key``, else ``$QSPLIT_BUNDLE_PUBKEY``; ``False``:
    none), the signature of SHA256SUMS (:mod:`runtime.signing`)."""
    p = Path(path)
    where = f"bundle {p}"
    if not p.is_dir():
        raise BundleError(f"{where}: not a folder (expected {CONTRACT_FILE}, {WEIGHTS_FILE}, "
                          f"{SUMS_FILE})")
    sums = _read_sums(p, where)
    if public_key is not False:
        try:
            check_signature(p, (p / SUMS_FILE).read_bytes(), public_key or None, where)
        except QsplitInputError as exc:
            raise BundleError(str(exc)) from None
    for need in (CONTRACT_FILE, WEIGHTS_FILE):
        if need not in sums:
            raise BundleError(f"{where}: {SUMS_FILE} does not list {need}")
    present = {e.name for e in p.iterdir()} - {SUMS_FILE, SIG_FILE}
    missing = sorted(set(sums) - present)
    if missing:
        raise BundleError(f"{where}: missing file(s) {missing}")
    extra = sorted(present - set(sums))
    if extra:
        raise BundleError(f"{where}: unexpected file(s) {extra} not listed in {SUMS_FILE}")
    for name, digest in sorted(sums.items()):
        f = p / name
        if not f.is_file() or f.is_symlink():
            raise BundleError(f"{where}: {name} is not a regular file")
        if sha256_file(f) != digest:
            raise BundleError(f"{where}: checksum mismatch for {name} (the file was changed or "
                              "corrupted; re-export the bundle)")
    return sums


def _check_versions(c: dict, where: str) -> None:
    if c["format"] != BUNDLE_FORMAT:
        raise BundleError(f"{where}: bundle format {c['format']!r} is not {BUNDLE_FORMAT!r} "
                          "(made by another qsplit version; re-export it with this one)")
    if not isinstance(c["qsplit_version"], str) or not version_compatible(
            c["qsplit_version"], QSPLIT_VERSION):
        raise BundleError(f"{where}: made by qsplit {c['qsplit_version']!r}, this runtime is "
                          f"qsplit {QSPLIT_VERSION} (major.minor must match; re-export it)")
    env = check_keys(f"{where}: env", c["env"], ["id", "version"], ["invalid_action", "kwargs"])
    if not isinstance(env["id"], str) or env["id"] not in SUPPORTED_ENVS:
        raise BundleError(f"{where}: env id {env['id']!r} is not one of {sorted(SUPPORTED_ENVS)}")
    if type(env["version"]) is not int or env["version"] != SUPPORTED_ENVS[env["id"]]:
        raise BundleError(f"{where}: env {env['id']} version {env['version']!r} differs from "
                          f"this runtime's {SUPPORTED_ENVS[env['id']]}")
    if env.get("invalid_action", "repair") != "repair":
        raise BundleError(f"{where}: env.invalid_action must be 'repair' (the dispatcher "
                          "always repairs exactly as the env does)")


def load_bundle(path: str | Path, public_key: str | Path | bool | None = None) -> Bundle:
    """Verify and read a bundle (see the module docstring for what is refused); the
    signature is checked as :func:`verify_files` says."""
    p = Path(path)
    where = f"bundle {p}"
    verify_files(p, public_key)
    try:
        c = parse_json(read_text(p / CONTRACT_FILE, "bundle"), f"{where}: {CONTRACT_FILE}")
    except QsplitInputError as exc:
        raise BundleError(str(exc)) from None
    try:
        check_keys(f"{where}: contract", c, _CONTRACT_KEYS, _CONTRACT_OPTIONAL)
        _check_versions(c, where)
        profile = profile_from_dict(c["profile"], where=f"{where}: profile")
        if profile.sha256() != c["profile_sha256"]:
            raise BundleError(f"{where}: profile hash {profile.sha256()[:12]} differs from the "
                              f"recorded {str(c['profile_sha256'])[:12]}")
        if c["model"] != profile.name:
            raise BundleError(f"{where}: model {c['model']!r} differs from the profile's name "
                              f"{profile.name!r}")
        obs = check_keys(f"{where}: observation", c["observation"], ["encoder", "normalization"],
                         ["n_features", "names", "dtype", "support", "history"])
        hist = parse_history(obs, where)
        encoder = ObservationEncoder.from_json(obs["encoder"])
        support = parse_support(obs, encoder.n_features)
        norm = check_keys(f"{where}: observation.normalization", obs["normalization"], ["kind"])
        if norm["kind"] not in NORMALIZATIONS:
            raise BundleError(f"{where}: observation normalization {norm['kind']!r} is not one "
                              f"of {list(NORMALIZATIONS)}")
        if obs.get("dtype", "float32") != "float32":
            raise BundleError(f"{where}: observation dtype must be float32")
        act = check_keys(f"{where}: action", c["action"], ["codec", "masking"],
                         ["bits", "nvec", "decode"])
        codec = ActionCodec.from_json(act["codec"])
        if codec.n_units != profile.n_units:
            raise BundleError(f"{where}: codec has {codec.n_units} units, the profile "
                              f"{profile.n_units}")
        if act["masking"] not in MASKINGS:
            raise BundleError(f"{where}: action masking {act['masking']!r} is not one of "
                              f"{list(MASKINGS)}")
        pol = check_keys(f"{where}: policy", c["policy"], ["kind", "layers", "action_net"],
                         ["dtype"])
        if pol["kind"] != "mlp" or not isinstance(pol["layers"], list):
            raise BundleError(f"{where}: policy.kind must be 'mlp' with a list of layers")
        try:
            h = read_headers(p / WEIGHTS_FILE)
            names: list[tuple[str, str, str, str]] = []
            n_in = encoder.n_features + (hist.width(profile.n_units, codec.n_bits) if hist else 0)
            for i, ld in enumerate(pol["layers"]):
                lw = f"policy.layers[{i}]"
                check_keys(lw, ld, ["weight", "bias", "activation"])
                if ld["activation"] not in ACTIVATIONS:
                    raise BundleError(f"{where}: {lw}.activation: {str(ld['activation'])[:40]!r} "
                                      f"is not one of {list(ACTIVATIONS)}")
                w = h.get(ld["weight"]) if isinstance(ld["weight"], str) else None
                n_out = w.shape[0] if w is not None else 0
                names.append((check_shape(h, ld["weight"], (n_out, n_in), lw),
                              check_shape(h, ld["bias"], (n_out,), lw), ld["activation"], lw))
                n_in = n_out
            an = check_keys("policy.action_net", pol["action_net"], ["weight", "bias"])
            n_out = int(codec.nvec.sum())
            names.append((check_shape(h, an["weight"], (n_out, n_in), "action_net"),
                          check_shape(h, an["bias"], (n_out,), "action_net"), "identity",
                          "action_net"))
            z = read_arrays(p / WEIGHTS_FILE, sorted({n for t in names for n in t[:2]}))
        except WeightsError as exc:
            raise BundleError(f"{where}: {WEIGHTS_FILE}: {exc}") from None
        layers = [Layer(z[w], z[b], a) for w, b, a, _ in names]
        hidden, action = layers[:-1], layers[-1]
    except BundleError:
        raise
    except QsplitInputError as exc:
        raise BundleError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) \
            from None
    return Bundle(path=p, contract=c, profile=profile, encoder=encoder, codec=codec,
                  hidden=tuple(hidden), action=action, masking=act["masking"], support=support,
                  history=hist)
