"""Atomic file writes: an artifact is either wholly there or not there at all."""

from __future__ import annotations

import ctypes
import errno
import io
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from system.errors import QsplitInputError


def _default_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: 0o666 less the process umask.

    mkstemp creates 0o600 files; artifacts that are shared (policies, bundles, plots) must be
    readable by others like any other file the user writes.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_FILE_MODE = _default_mode()
#: A folder's mode under the same umask (mkdtemp makes 0o700).
_DIR_MODE = _FILE_MODE | ((_FILE_MODE & 0o444) >> 2)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text form of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A deterministic ``.npz`` (fixed zip timestamps, sorted names): same arrays, same bytes.

    Loadable with ``np.load(..., allow_pickle=False)``; object arrays are refused (they would
    need a pickle).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            arr = np.ascontiguousarray(arrays[name])
            if arr.dtype == object:
                raise QsplitInputError(f"array {name!r} has dtype object (refused: pickle)")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            body = io.BytesIO()
            np.lib.format.write_array(body, arr, allow_pickle=False)
            zf.writestr(info, body.getvalue())
    return buf.getvalue()


# ------------------------------------------------------------------------------ folders

#: Versioned folders live beside ``out`` as ``.<name>.v<suffix>``; ``out`` is a symlink to one.
_VERSION_TAG = ".v"


def staging_folder(out: str | Path) -> Path:
    """A new empty hidden folder beside ``out`` to fill and then hand to :func:`publish_folder`.

    Beside, so that publishing is a rename on one filesystem. Refuses (one line) a parent that
    is not a folder, e.g. a path under a file.
    """
    out = Path(out).absolute()
    _check_parent(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(tmp, _DIR_MODE)
    return tmp


def _check_parent(out: Path) -> None:
    for parent in [out.parent, *out.parent.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise QsplitInputError(f"{out}: {parent} is not a folder (cannot write under a file)")
            break
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QsplitInputError(f"{out}: cannot create its folder {out.parent} "
                               f"({exc.strerror or exc})") from None


def _is_version_of(out: Path, target: Path) -> bool:
    """``target`` is one of the versioned folders :func:`publish_folder` makes for ``out``."""
    return target.parent == out.parent and target.name.startswith(f".{out.name}{_VERSION_TAG}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_folder(tmp_dir: str | Path, out: str | Path, *,
                   replace: Callable[[Path], bool], what: str = "folder") -> Path:
    """Put the finished folder ``tmp_dir`` at ``out`` in one atomic step; returns ``out``.

    ``tmp_dir`` becomes a versioned sibling ``.<name>.v<suffix>`` and ``out`` a symlink to it,
    switched by one ``os.replace`` of a new symlink: an interrupt at any point leaves ``out``
    the old folder or the new one, never neither nor a mix. An existing ``out`` is replaced
    only if ``replace(out)`` accepts it (e.g. "is a bundle"); anything else (a file, a folder
    of the user's files, a link elsewhere) is refused in one line naming ``what`` (e.g.
    "bundle") and left as it is. The old version is removed only after the switch, and only
    if it is one this function made or the folder ``replace`` accepted. On any failure
    ``tmp_dir`` is removed and ``out`` is untouched.
    """
    tmp_dir, out = Path(tmp_dir).absolute(), Path(out).absolute()
    try:
        if tmp_dir.parent != out.parent:
            raise ValueError(f"publish_folder: {tmp_dir} is not beside {out} "
                             "(make it with staging_folder)")
        _check_parent(out)
        old_target: Path | None = None
        legacy = False
        if out.is_symlink() or out.exists():
            if not (out.is_dir() and replace(out)):
                raise QsplitInputError(
                    f"{out}: exists and is not a {what} (refusing to replace it; choose "
                    "another path or remove it yourself)")
            if out.is_symlink():
                target = Path(os.path.join(out.parent, os.readlink(out)))
                old_target = target if _is_version_of(out, target) else None
            else:
                legacy = True
        suffix = tmp_dir.name[len(out.name) + 2:].removesuffix(".tmp") or "0"
        version = out.parent / f".{out.name}{_VERSION_TAG}{suffix}"
        os.replace(tmp_dir, version)
        tmp_dir = version
        _fsync_dir(out.parent)
        link = out.parent / f".{out.name}{_VERSION_TAG}{suffix}.link"
        os.symlink(version.name, link)
        try:
            if legacy:
                _switch_legacy(link, out)
            else:
                os.replace(link, out)
        except BaseException:
            link.unlink(missing_ok=True)
            raise
        _fsync_dir(out.parent)
    except BaseException:
        if tmp_dir.exists() and not (out.is_symlink() and out.resolve() == tmp_dir.resolve()):
            shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if old_target is not None and old_target != tmp_dir:
        shutil.rmtree(old_target, ignore_errors=True)
    return out


def _switch_legacy(link: Path, out: Path) -> None:
    """Turn a plain folder ``out`` into the symlink ``link``; the old folder is then removed.

    One exchange where the OS has it; elsewhere two renames, undone on any exception.
    """
    if _exchange(link, out):
        shutil.rmtree(link, ignore_errors=True)       # ``link`` now names the old folder
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, aside / out.name)
    try:
        os.replace(link, out)
    except BaseException:
        os.replace(aside / out.name, out)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)
