"""Ed25519 signatures of bundles: who made a bundle, not only whether it is intact.

Checksums (``SHA256SUMS``) catch corruption but not tampering: whoever can change a file can
recompute them. A signed bundle also holds ``SHA256SUMS.sig``, the Ed25519 signature (hex)
of the exact bytes of ``SHA256SUMS``; since that file pins every other file's hash, the
signature covers the whole bundle. When a public key is configured (``public_key=`` or the
environment variable :data:`PUBKEY_ENV`, a PEM file's path), :func:`check_signature` refuses
a bundle whose signature is missing or does not verify; with no key configured signatures
are not looked at. Keys and signatures come from the ``cryptography`` package (the ``sign``
extra); the runtime imports it only when a key is in play.

    python -m runtime keygen --private bundle_key.pem --public bundle_key.pub
    python -m runtime sign --bundle runtime/bundles/resnet18 --key bundle_key.pem
    QSPLIT_BUNDLE_PUBKEY=bundle_key.pub python -m runtime verify --bundle runtime/bundles/resnet18
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from system.atomic import atomic_write_bytes
from system.errors import QsplitInputError

SIG_FILE = "SHA256SUMS.sig"
PUBKEY_ENV = "QSPLIT_BUNDLE_PUBKEY"
_SIG_LEN = 64


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise QsplitInputError("bundle signatures need the sign extra "
                               "(pip install -e '.[sign]')") from None
    return serialization, ed25519


def configured_key(public_key: str | Path | None) -> Path | None:
    """The public key's path: the argument, else :data:`PUBKEY_ENV`, else None (no check)."""
    if public_key is not None:
        return Path(public_key)
    env = os.environ.get(PUBKEY_ENV, "")
    return Path(env) if env else None


def keygen(private_path: str | Path, public_path: str | Path) -> None:
    """Write a new Ed25519 key pair as PEM files (the private one readable by its owner only).

    Refuses to overwrite an existing file.
    """
    serialization, ed25519 = _crypto()
    for p in (private_path, public_path):
        if Path(p).exists() or Path(p).is_symlink():
            raise QsplitInputError(f"{p}: exists (refusing to overwrite a key file)")
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(Path(private_path), priv)
    os.chmod(private_path, 0o600)
    atomic_write_bytes(Path(public_path), pub)


def _read_key(path: Path, kind: str) -> Any:
    serialization, ed25519 = _crypto()
    try:
        data = path.read_bytes()[:1 << 16]
        key = serialization.load_pem_private_key(data, password=None) if kind == "private" \
            else serialization.load_pem_public_key(data)
    except (OSError, ValueError, TypeError) as exc:
        raise QsplitInputError(f"{kind} key {path}: not a readable PEM key "
                               f"({type(exc).__name__})") from None
    want = ed25519.Ed25519PrivateKey if kind == "private" else ed25519.Ed25519PublicKey
    if not isinstance(key, want):
        raise QsplitInputError(f"{kind} key {path}: not an Ed25519 key")
    return key


def sign_bundle(bundle: str | Path, private_key: str | Path, sums_file: str) -> Path:
    """Write ``SHA256SUMS.sig`` in ``bundle``: the signature of its ``sums_file`` bytes."""
    key = _read_key(Path(private_key), "private")
    sums = Path(bundle) / sums_file
    sig = key.sign(sums.read_bytes())
    out = Path(bundle) / SIG_FILE
    atomic_write_bytes(out, (sig.hex() + "\n").encode("ascii"))
    return out


def check_signature(bundle: Path, sums_bytes: bytes, public_key: str | Path | None,
                    where: str) -> bool:
    """Verify the bundle's signature when a key is configured; True if one was verified.

    Raises :class:`QsplitInputError` (one line) when a key is configured and the signature
    is missing, malformed or wrong.
    """
    key_path = configured_key(public_key)
    if key_path is None:
        return False
    key = _read_key(key_path, "public")
    sig_path = bundle / SIG_FILE
    if not sig_path.is_file():
        raise QsplitInputError(f"{where}: not signed (no {SIG_FILE}) but a public key is "
                               f"configured ({key_path}); sign it with python -m runtime sign")
    try:
        sig = bytes.fromhex(sig_path.read_bytes()[:4 * _SIG_LEN].decode("ascii").strip())
    except (OSError, ValueError) as exc:
        raise QsplitInputError(f"{where}: {SIG_FILE} is malformed ({type(exc).__name__})") from None
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(sig, sums_bytes)
    except (InvalidSignature, ValueError):
        raise QsplitInputError(f"{where}: signature does not verify with the key {key_path} "
                               "(the bundle was changed or signed by another key)") from None
    return True
