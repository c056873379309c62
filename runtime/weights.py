"""A bundle's ``weights.npz`` read without trusting it: every header is checked before a byte
of array data is allocated.

``np.load`` allocates what a ``.npy`` header declares, so a header that claims 10^12 floats
ends in ``MemoryError`` before anything can be checked. Here each zip member's header is
parsed on its own (:func:`numpy.lib.format.read_magic` and ``read_array_header_*``), its
dtype, order and shape checked, its size matched against the member's length, and the total
capped; only then are the arrays the caller names read (``allow_pickle=False``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib import format as npy

#: Most float32 entries a bundle's arrays may hold together (64 MiB): an actor MLP is far smaller.
MAX_ENTRIES = 1 << 24
#: Most arrays in one weights file.
MAX_ARRAYS = 256
_F32 = np.dtype("<f4")


class Header(NamedTuple):
    """What a member's ``.npy`` header declares."""

    shape: tuple[int, ...]
    dtype: np.dtype


class WeightsError(ValueError):
    """A weights file whose structure is refused (the message says why, in one line)."""


def read_headers(path: Path) -> dict[str, Header]:
    """The declared shape and dtype of every array, checked, nothing allocated.

    Refused: a member not named ``<name>.npy``, more than :data:`MAX_ARRAYS` arrays, a dtype
    other than little-endian float32, Fortran order, a shape that is not 1-D or 2-D, a
    member whose length differs from its header's, and more than :data:`MAX_ENTRIES`
    entries in all.
    """
    out: dict[str, Header] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ARRAYS:
                raise WeightsError(f"{len(infos)} arrays (at most {MAX_ARRAYS})")
            for info in infos:
                name = info.filename
                if not name.endswith(".npy") or "/" in name or name[:-4] in out:
                    raise WeightsError(f"member {name[:60]!r} is not a distinct <name>.npy")
                with zf.open(info) as fh:
                    version = npy.read_magic(fh)
                    if version == (1, 0):
                        shape, fortran, dtype = npy.read_array_header_1_0(fh)
                    elif version in ((2, 0), (3, 0)):
                        shape, fortran, dtype = npy.read_array_header_2_0(fh)
                    else:
                        raise WeightsError(f"array {name[:-4]!r}: .npy version {version}")
                    offset = fh.tell()
                where = f"array {name[:-4]!r}"
                if dtype != _F32:
                    raise WeightsError(f"{where}: dtype {dtype}, expected float32")
                if fortran or len(shape) not in (1, 2):
                    raise WeightsError(f"{where}: shape {shape} (expected a C-order vector or matrix)")
                size = 1
                for n in shape:
                    size *= int(n)
                total += size
                if total > MAX_ENTRIES:
                    raise WeightsError(f"{where}: declares {size} entries; the arrays would "
                                       f"exceed {MAX_ENTRIES} in all")
                if info.file_size != offset + 4 * size:
                    raise WeightsError(f"{where}: member holds {info.file_size - offset} bytes "
                                       f"of data, its header declares {4 * size}")
                out[name[:-4]] = Header(tuple(int(n) for n in shape), dtype)
    except WeightsError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, SyntaxError, TypeError) as exc:
        raise WeightsError(f"unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None
    return out


def check_shape(headers: dict[str, Header], name: object, shape: tuple[int, ...],
                where: str) -> str:
    """Check a declared array against the shape the contract implies (nothing read yet)."""
    if not isinstance(name, str) or name not in headers:
        raise WeightsError(f"{where}: no array {str(name)[:60]!r}")
    if headers[name].shape != shape:
        raise WeightsError(f"{where}: array {name!r} has shape {headers[name].shape}, "
                           f"expected {shape}")
    return name


def read_arrays(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Read the named arrays (whose headers :func:`read_headers` accepted); all finite."""
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for name in names:
                with zf.open(f"{name}.npy") as fh:
                    out[name] = npy.read_array(fh, allow_pickle=False)
                if not np.all(np.isfinite(out[name])):
                    raise WeightsError(f"array {name!r} has non-finite values")
            return out
    except WeightsError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None
