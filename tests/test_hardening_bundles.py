"""Bundles as a hostile user hands them in, and export to paths that hold the user's files.

Export refuses a path that is not a bundle and replaces a bundle only with --force, in one
atomic switch that leaves the old bundle whole on any failure; the loader refuses a tampered
contract, a weights header that declares more than it holds, and (with a key configured) a
missing or wrong signature, each in one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import system.atomic as atomic
from runtime.bundle import (
    CONTRACT_FILE,
    SUMS_FILE,
    WEIGHTS_FILE,
    BundleError,
    is_bundle,
    load_bundle,
    make_contract,
    write_bundle,
)
from runtime.dispatcher import bundles_root
from runtime.signing import PUBKEY_ENV, SIG_FILE, keygen, sign_bundle
from system.codec import ActionCodec, ObservationEncoder
from system.errors import QsplitInputError
from system.profiles import ModelProfile, random_profile

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "agents" / "data" / "policies" / "digits_cnn"


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def _export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agents.export", "--run", str(RUN), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def prof() -> ModelProfile:
    return random_profile(6, np.random.default_rng(3), name="rand6")


def _bundle(path: Path, profile: ModelProfile, seed: int = 0, force: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    enc, codec = ObservationEncoder(), ActionCodec(profile.n_units)
    arrays = {"w0": (rng.standard_normal((16, enc.n_features)) * 0.5).astype(np.float32),
              "b0": np.zeros(16, np.float32)}
    n_out = int(codec.nvec.sum())
    arrays["aw"] = (rng.standard_normal((n_out, 16)) * 0.5).astype(np.float32)
    arrays["ab"] = np.zeros(n_out, np.float32)
    c = make_contract(profile=profile, encoder=enc, codec=codec, hidden=[("w0", "b0", "tanh")],
                      action=("aw", "ab"))
    return write_bundle(path, c, arrays, force=force)


def _reseal(path: Path) -> None:
    """Recompute SHA256SUMS after a change, as a tamperer would."""
    names = sorted(p.name for p in path.iterdir() if p.name not in (SUMS_FILE, SIG_FILE))
    (path / SUMS_FILE).write_text("".join(
        f"{hashlib.sha256((path / n).read_bytes()).hexdigest()}  {n}\n" for n in names))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ export's output path

def test_c01_export_refuses_a_path_that_is_not_a_bundle(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8")
    for out in (f, folder):
        r = _export("--out", str(out), "--force")
        assert r.returncode == 2
        assert _one_line(r.stderr).startswith("error: ") and "not a bundle" in r.stderr
    assert f.read_text() == "mine" and (folder / "a.jpg").read_bytes() == b"\xff\xd8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]


def test_c01_replacing_a_bundle_needs_force(tmp_path: Path, prof: ModelProfile) -> None:
    out = _bundle(tmp_path / "b", prof, seed=1)
    before = (out / SUMS_FILE).read_bytes()
    with pytest.raises(BundleError, match="--force"):
        _bundle(out, prof, seed=2)
    assert (out / SUMS_FILE).read_bytes() == before
    _bundle(out, prof, seed=2, force=True)
    assert (out / SUMS_FILE).read_bytes() != before
    load_bundle(out)


def test_c01_export_command_force_replaces_only_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert _export("--out", str(out)).returncode == 0
    r = _export("--out", str(out))
    assert r.returncode == 2 and "--force" in _one_line(r.stderr)
    assert _export("--out", str(out), "--force").returncode == 0
    assert is_bundle(out)
    load_bundle(out)


def test_c10_export_out_under_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    r = _export("--out", str(f / "bundle"))
    assert r.returncode == 2 and "not a folder" in _one_line(r.stderr)
    assert "Traceback" not in r.stderr and f.read_text() == "x"


# ------------------------------------------------------------------ one atomic switch

def test_c03_interrupted_switch_leaves_the_old_bundle(tmp_path: Path, prof: ModelProfile,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = _bundle(tmp_path / "b", prof, seed=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = os.replace

    def interrupted(src: object, dst: object) -> None:
        if Path(dst) == out.absolute():
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _bundle(out, prof, seed=2, force=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    load_bundle(out)
    visible = sorted(p.name for p in tmp_path.iterdir())
    assert visible == sorted(["b", os.readlink(out)])          # nothing half-made left


def test_c03_plain_bundle_folder_switched_in_one_step(tmp_path: Path, prof: ModelProfile,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle that is a plain folder (as committed) is swapped for the link in one step;
    if that step fails, the folder is untouched."""
    src = _bundle(tmp_path / "src", prof, seed=1)
    plain = _copy(src, tmp_path / "plain")
    before = {p.name: p.read_bytes() for p in plain.iterdir()}

    def failing(a: Path, b: Path) -> bool:
        raise OSError(5, "simulated failure")

    monkeypatch.setattr(atomic, "_exchange", failing)
    with pytest.raises(OSError):
        _bundle(plain, prof, seed=2, force=True)
    assert plain.is_dir() and not plain.is_symlink()
    assert {p.name: p.read_bytes() for p in plain.iterdir()} == before
    monkeypatch.undo()
    _bundle(plain, prof, seed=2, force=True)
    assert plain.is_symlink() and (plain / SUMS_FILE).read_bytes() != before[SUMS_FILE]


def test_c03_publish_folder_refuses_what_the_predicate_rejects(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("k")
    tmp = atomic.staging_folder(out)
    (tmp / "x").write_text("new")
    with pytest.raises(QsplitInputError, match="is not a leaderboard output"):
        atomic.publish_folder(tmp, out, replace=lambda p: False, what="leaderboard output")
    assert (out / "keep").read_text() == "k" and not tmp.exists()


# ------------------------------------------------------------------ tampered contracts

@pytest.mark.parametrize(("path", "value", "field"), [
    (("observation", "encoder", "clip"), "abc", "clip"),
    (("observation", "encoder", "clip"), None, "clip"),
    (("action", "codec", "bits"), 5, "bits"),
    (("action", "codec", "bits"), [2, 5], "bits"),
    (("action", "codec", "n_units"), 10 ** 30, "n_units"),
    (("env", "id"), ["QuantSplit-v0"], "env"),
    (("observation", "encoder", "features", 0, "quantity"), ["x"], "quantity"),
    (("observation", "support"), {"min": [0.0], "max": [1.0]}, "support"),
])
def test_c09_tampered_contract_with_recomputed_sums(tmp_path: Path, prof: ModelProfile,
                                                    path: tuple, value: object, field: str) -> None:
    b = _copy(_bundle(tmp_path / "src", prof), tmp_path / "b")
    c = json.loads((b / CONTRACT_FILE).read_text())
    node = c
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    (b / CONTRACT_FILE).write_text(json.dumps(c))
    _reseal(b)
    with pytest.raises(BundleError) as exc:
        load_bundle(b)
    msg = str(exc.value)
    assert "\n" not in msg and field in msg


def _npy_header(shape: tuple[int, ...]) -> bytes:
    head = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    pad = 64 - (10 + len(head) + 1) % 64
    head += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head


def test_c09_huge_declared_array_is_refused_before_allocating(tmp_path: Path,
                                                              prof: ModelProfile) -> None:
    b = _copy(_bundle(tmp_path / "src", prof), tmp_path / "b")
    buf = io.BytesIO()
    with zipfile.ZipFile(b / WEIGHTS_FILE) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "w0.npy":      # declares 10^12 floats, holds a few bytes
                data = _npy_header((1_000_000, 1_000_000)) + b"\0" * 64
            dst.writestr(info.filename, data)
    (b / WEIGHTS_FILE).write_bytes(buf.getvalue())
    _reseal(b)
    with pytest.raises(BundleError) as exc:
        load_bundle(b)
    assert "w0" in str(exc.value) and "\n" not in str(exc.value)


def test_c09_declared_shape_must_match_the_contract(tmp_path: Path, prof: ModelProfile) -> None:
    b = _copy(_bundle(tmp_path / "src", prof), tmp_path / "b")
    buf = io.BytesIO()
    with zipfile.ZipFile(b / WEIGHTS_FILE) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "b0.npy":
                data = _npy_header((17,)) + b"\0" * 68
            dst.writestr(info.filename, data)
    (b / WEIGHTS_FILE).write_bytes(buf.getvalue())
    _reseal(b)
    with pytest.raises(BundleError, match=r"b0.*shape \(17,\)"):
        load_bundle(b)


# ------------------------------------------------------------------ signatures

@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    pytest.importorskip("cryptography")
    d = tmp_path_factory.mktemp("keys")
    keygen(d / "a.pem", d / "a.pub")
    keygen(d / "b.pem", d / "b.pub")
    return d / "a.pem", d / "a.pub", d / "b.pub"


def test_c09_signature_missing_wrong_or_valid(tmp_path: Path, prof: ModelProfile,
                                              keys: tuple[Path, Path, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    priv, pub, other_pub = keys
    b = _copy(_bundle(tmp_path / "src", prof), tmp_path / "b")
    load_bundle(b)                                              # no key configured: as before
    with pytest.raises(BundleError, match="not signed"):
        load_bundle(b, pub)
    sign_bundle(b, priv, SUMS_FILE)
    assert load_bundle(b, pub).model == prof.name
    with pytest.raises(BundleError, match="does not verify"):
        load_bundle(b, other_pub)
    monkeypatch.setenv(PUBKEY_ENV, str(other_pub))
    with pytest.raises(BundleError, match="does not verify"):
        load_bundle(b)
    monkeypatch.setenv(PUBKEY_ENV, str(pub))
    load_bundle(b)
    # tampered after signing, sums recomputed: the signature no longer matches
    c = json.loads((b / CONTRACT_FILE).read_text())
    c["source"] = {"changed": True}
    (b / CONTRACT_FILE).write_text(json.dumps(c))
    _reseal(b)
    with pytest.raises(BundleError, match="does not verify"):
        load_bundle(b)
    (b / SIG_FILE).write_text("zz\n")
    with pytest.raises(BundleError, match="malformed"):
        load_bundle(b)


def test_c09_sign_and_verify_commands(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    b = _copy(bundles_root() / "digits_cnn", tmp_path / "b")
    env = {k: v for k, v in os.environ.items() if k != PUBKEY_ENV}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=120)

    assert run("keygen", "--private", str(tmp_path / "k.pem"), "--public",
               str(tmp_path / "k.pub")).returncode == 0
    assert oct((tmp_path / "k.pem").stat().st_mode & 0o777) == "0o600"
    r = run("keygen", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "x.pub"))
    assert r.returncode == 2 and "exists" in _one_line(r.stderr)
    r = run("verify", "--bundle", str(b), "--pubkey", str(tmp_path / "k.pub"))
    assert r.returncode == 2 and "not signed" in _one_line(r.stderr)
    assert run("sign", "--bundle", str(b), "--key", str(tmp_path / "k.pem")).returncode == 0
    assert run("verify", "--bundle", str(b), "--pubkey", str(tmp_path / "k.pub")).returncode == 0
    env[PUBKEY_ENV] = str(tmp_path / "k.pub")
    req = json.dumps({"device": "rpi4", "server": "t4", "up_mbps": 10, "down_mbps": 50,
                      "rtt_ms": 20, "eps_pp": 1.0})
    r = subprocess.run([sys.executable, "-m", "runtime", "decide", "--bundle", str(b),
                        "--request", "-"], input=req, capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
