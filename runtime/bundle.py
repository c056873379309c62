"""Policy bundles: the folder an exported policy travels in, written and verified with numpy alone.

A bundle is a folder of three (or four) files::

    contract.json   what the weights mean: observation features and their normalisation,
                    action layout and bit set, action masking, the model profile and its
                    hash, env id and version, qsplit version, the network's layer list
    weights.npz     the actor network's float32 arrays (read with ``allow_pickle=False``)
    policy.onnx     optional, the same actor as ONNX (not used by the runtime)
    SHA256SUMS      ``<sha256>  <file>`` for every other file, sorted by name

:func:`load_bundle` refuses, with a :class:`BundleError` naming the bundle and the reason,
a bundle that is not exactly this: a missing or unlisted file, a checksum that does not
match (one changed byte anywhere), another bundle format, a qsplit major.minor or env
version this runtime does not speak, a profile whose hash differs from the recorded one,
arrays of the wrong shape, dtype or with non-finite values. Nothing is unpickled: the
contract is JSON and the arrays are ``.npz`` read with ``allow_pickle=False``.

:func:`write_bundle` writes into a temporary sibling folder and renames it into place, so a
reader never sees half a bundle (a previous bundle at the same path is replaced).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from system.atomic import npz_bytes as _npz_bytes
from system.codec import ActionCodec, ObservationEncoder
from system.errors import QsplitInputError, check_keys
from system.profiles import ModelProfile, profile_from_dict

BUNDLE_FORMAT = "qsplit-policy-bundle/1"


def _installed_version() -> str:
    """The installed package's version (pyproject.toml's, through its metadata).

    Bundles record it and are checked against it, so a tree that is not installed has no
    version to speak: it is refused with the command that installs it.
    """
    try:
        return metadata.version("qsplit")
    except metadata.PackageNotFoundError:
        raise ImportError("qsplit is not installed, so its version is unknown: run "
                          "`pip install -e .` (or `make setup`) in the source tree") from None


#: The qsplit version this runtime is. A bundle loads only if its qsplit major.minor equals
#: this one's.
QSPLIT_VERSION = _installed_version()
#: Env ids (with their versions) whose policies this runtime reproduces.
SUPPORTED_ENVS: dict[str, int] = {"QuantSplit-v0": 0}
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


def write_bundle(out_dir: str | Path, contract: dict, arrays: dict[str, np.ndarray],
                 extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a bundle atomically: a temp folder beside ``out_dir``, then a rename.

    ``contract`` is written as given (build it with :func:`make_contract`); its ``files``
    entry is filled in here. The new bundle is verified by :func:`load_bundle` before it
    replaces anything at ``out_dir``.
    """
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {WEIGHTS_FILE: npz_bytes(arrays), **(extra_files or {})}
    contract = {**contract, "files": sorted([CONTRACT_FILE, *files])}
    files[CONTRACT_FILE] = contract_text(contract).encode("utf-8")
    sums = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in sorted(files))
    files[SUMS_FILE] = sums.encode("ascii")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        load_bundle(tmp)                      # never put an unloadable bundle in place
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def make_contract(*, profile: ModelProfile, encoder: ObservationEncoder, codec: ActionCodec,
                  hidden: list[tuple[str, str, str]], action: tuple[str, str],
                  masking: str = "none", env_id: str = "QuantSplit-v0",
                  env_kwargs: dict | None = None, source: dict | None = None) -> dict:
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
                        "normalization": {"kind": "none"}},
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
        text = sums_path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}: {SUMS_FILE} is unreadable ({exc})") from None
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


def verify_files(path: str | Path) -> dict[str, str]:
    """Check the folder against its SHA256SUMS: no missing, extra or changed file."""
    p = Path(path)
    where = f"bundle {p}"
    if not p.is_dir():
        raise BundleError(f"{where}: not a folder (expected {CONTRACT_FILE}, {WEIGHTS_FILE}, "
                          f"{SUMS_FILE})")
    sums = _read_sums(p, where)
    for need in (CONTRACT_FILE, WEIGHTS_FILE):
        if need not in sums:
            raise BundleError(f"{where}: {SUMS_FILE} does not list {need}")
    present = {e.name for e in p.iterdir()} - {SUMS_FILE}
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
    if env["id"] not in SUPPORTED_ENVS:
        raise BundleError(f"{where}: env id {env['id']!r} is not one of {sorted(SUPPORTED_ENVS)}")
    if env["version"] != SUPPORTED_ENVS[env["id"]]:
        raise BundleError(f"{where}: env {env['id']} version {env['version']!r} differs from "
                          f"this runtime's {SUPPORTED_ENVS[env['id']]}")
    if env.get("invalid_action", "repair") != "repair":
        raise BundleError(f"{where}: env.invalid_action must be 'repair' (the dispatcher "
                          "always repairs exactly as the env does)")


def _array(z: dict[str, np.ndarray], name: object, shape: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(name, str) or name not in z:
        raise BundleError(f"{where}: {WEIGHTS_FILE} has no array {name!r}")
    a = z[name]
    if a.dtype != np.float32:
        raise BundleError(f"{where}: array {name!r} has dtype {a.dtype}, expected float32")
    if a.shape != shape:
        raise BundleError(f"{where}: array {name!r} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise BundleError(f"{where}: array {name!r} has non-finite values")
    return a


def _read_arrays(path: Path, where: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path / WEIGHTS_FILE, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"{where}: {WEIGHTS_FILE} is unreadable ({exc})") from None


def load_bundle(path: str | Path) -> Bundle:
    """Verify and read a bundle (see the module docstring for what is refused)."""
    p = Path(path)
    where = f"bundle {p}"
    verify_files(p)
    try:
        c = json.loads((p / CONTRACT_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: {CONTRACT_FILE} is not valid JSON ({exc})") from None
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
                         ["n_features", "names", "dtype"])
        encoder = ObservationEncoder.from_json(obs["encoder"])
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
        z = _read_arrays(p, where)
        hidden = []
        n_in = encoder.n_features
        for i, ld in enumerate(pol["layers"]):
            lw = f"{where}: policy.layers[{i}]"
            check_keys(lw, ld, ["weight", "bias", "activation"])
            if ld["activation"] not in ACTIVATIONS:
                raise BundleError(f"{lw}.activation: {ld['activation']!r} is not one of "
                                  f"{list(ACTIVATIONS)}")
            w = z.get(ld["weight"]) if isinstance(ld["weight"], str) else None
            if w is not None and w.ndim != 2:
                raise BundleError(f"{lw}: array {ld['weight']!r} is not a matrix ({w.shape})")
            n_out = w.shape[0] if w is not None else 0
            hidden.append(Layer(_array(z, ld["weight"], (n_out, n_in), lw),
                                _array(z, ld["bias"], (n_out,), lw), ld["activation"]))
            n_in = n_out
        an = check_keys(f"{where}: policy.action_net", pol["action_net"], ["weight", "bias"])
        n_out = int(codec.nvec.sum())
        action = Layer(_array(z, an["weight"], (n_out, n_in), f"{where}: action_net"),
                       _array(z, an["bias"], (n_out,), f"{where}: action_net"), "identity")
    except BundleError:
        raise
    except QsplitInputError as exc:
        raise BundleError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) \
            from None
    return Bundle(path=p, contract=c, profile=profile, encoder=encoder, codec=codec,
                  hidden=tuple(hidden), action=action, masking=act["masking"])
