"""The wire format: length-prefixed frames with a fixed, known header and a CRC32.

Why: every read on the wire must be bounded before anything is allocated, and a corrupted or
truncated frame must be told apart from a slow peer. A frame is

    header (HEADER_BYTES = 64, little-endian)
        magic  b"QSPF"        4
        version               u8   (VERSION)
        kind                  u8   (Kind)
        bits                  u8   (0 = JSON text, 2..16 = packed codes, 32 = raw float32)
        ndim                  u8   (<= MAX_DIMS)
        shape                 6 x u32 (unused dims 0)
        f0, f1                2 x f64 (codes: lo and step of a per-tensor grid; results:
                                       server receive time and tail time in s)
        n_side                u32  (float32 side values: per-channel weight ranges)
        payload_len           u64
        crc32                 u32  (of the header before it, the side values and the payload)
    side   n_side x float32
    payload payload_len bytes

The payload of a code frame is exactly ceil(prod(shape) bits / 8) bytes, of a float32 frame
4 prod(shape): both are checked against the header before the payload is read.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from execution.packing import PACKED_BITS, RAW_BITS, packed_nbytes
from system.errors import QsplitInputError

MAGIC = b"QSPF"
VERSION = 1
MAX_DIMS = 6
_TAIL = struct.Struct("<QI")
_HEAD = struct.Struct("<4sBBBB6IddI")
HEADER_BYTES = _HEAD.size + _TAIL.size
#: Largest payload a reader accepts (a ResNet-18 head at fp32 is ~45 MB).
MAX_PAYLOAD = 256 * 1024 * 1024
MAX_SIDE = 1 << 20
JSON_BITS = 0


class FrameError(QsplitInputError):
    """A frame that is malformed, truncated, too large or corrupted (one line)."""


class Kind(enum.IntEnum):
    """What a frame carries."""

    HELLO = 1  # device -> server: JSON {model, request, plan?}
    PLAN = 2  # server -> device: JSON {plan, n_tensors, ...}
    TENSOR = 3  # server -> device: one head tensor (codes or float32)
    ACT = 4  # device -> server: the tensor at the cut
    RESULT = 5  # server -> device: the logits (float32), f0/f1 = receive time, tail time
    BYE = 6  # device -> server: no more inputs
    ERROR = 7  # either way: JSON {error: one line}


@dataclass
class Frame:
    """A decoded frame."""

    kind: Kind
    bits: int
    shape: tuple[int, ...]
    payload: bytes
    f0: float = 0.0
    f1: float = 0.0
    side: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def wire_bytes(self) -> int:
        return HEADER_BYTES + 4 * int(self.side.size) + len(self.payload)

    def json(self) -> dict:
        """The payload of a JSON frame as a dict."""
        try:
            obj = json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"frame {self.kind.name}: payload is not JSON ({type(exc).__name__})") from None
        if not isinstance(obj, dict):
            raise FrameError(f"frame {self.kind.name}: payload is not a JSON object")
        return obj


def expected_payload(bits: int, shape: tuple[int, ...]) -> int | None:
    """Payload size a header implies (None for JSON frames, whose size is free but bounded)."""
    if bits == JSON_BITS:
        return None
    return packed_nbytes(math.prod(shape), bits)


def encode(
    kind: Kind,
    payload: bytes,
    *,
    bits: int = JSON_BITS,
    shape: tuple[int, ...] = (),
    f0: float = 0.0,
    f1: float = 0.0,
    side: np.ndarray | None = None,
) -> bytes:
    """One frame as bytes (header, side values, payload)."""
    if len(shape) > MAX_DIMS:
        raise FrameError(f"shape: {len(shape)} dimensions, at most {MAX_DIMS}")
    side_b = b"" if side is None else np.ascontiguousarray(side, dtype="<f4").tobytes()
    dims = [*shape, *([0] * (MAX_DIMS - len(shape)))]
    head = _HEAD.pack(
        MAGIC, VERSION, int(kind), bits, len(shape), *dims, float(f0), float(f1), len(side_b) // 4
    )
    crc = zlib.crc32(payload, zlib.crc32(side_b, zlib.crc32(head + struct.pack("<Q", len(payload)))))
    return head + _TAIL.pack(len(payload), crc) + side_b + payload


def json_frame(kind: Kind, obj: dict) -> bytes:
    return encode(kind, json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def parse_header(
    head: bytes, max_payload: int = MAX_PAYLOAD
) -> tuple[Kind, int, tuple[int, ...], float, float, int, int, int]:
    """Check a header; returns (kind, bits, shape, f0, f1, n_side, payload_len, crc)."""
    if len(head) != HEADER_BYTES:
        raise FrameError(f"header: {len(head)} bytes, expected {HEADER_BYTES}")
    magic, ver, kind, bits, ndim, *rest = _HEAD.unpack(head[: _HEAD.size])
    dims, f0, f1, n_side = rest[:MAX_DIMS], rest[MAX_DIMS], rest[MAX_DIMS + 1], rest[MAX_DIMS + 2]
    n, crc = _TAIL.unpack(head[_HEAD.size :])
    if magic != MAGIC:
        raise FrameError(f"header: magic {magic!r} is not {MAGIC!r} (not a qsplit frame)")
    if ver != VERSION:
        raise FrameError(f"header: version {ver} is not {VERSION}")
    if kind not in Kind._value2member_map_:
        raise FrameError(f"header: kind {kind} is not one of {[int(k) for k in Kind]}")
    if bits not in (JSON_BITS, *PACKED_BITS, RAW_BITS):
        raise FrameError(f"header: bits {bits} is not one of {[JSON_BITS, *PACKED_BITS, RAW_BITS]}")
    if ndim > MAX_DIMS:
        raise FrameError(f"header: ndim {ndim} is over {MAX_DIMS}")
    shape = tuple(int(d) for d in dims[:ndim])
    if n > max_payload:
        raise FrameError(f"header: payload_len {n} bytes is over the limit of {max_payload} bytes")
    if n_side > MAX_SIDE:
        raise FrameError(f"header: n_side {n_side} is over the limit of {MAX_SIDE} values")
    want = expected_payload(bits, shape)
    if want is not None and want != n:
        raise FrameError(
            f"header: payload_len {n} bytes does not match shape {list(shape)} at {bits} bits ({want} bytes)"
        )
    return Kind(kind), bits, shape, f0, f1, n_side, n, crc


def decode(data: bytes, max_payload: int = MAX_PAYLOAD) -> Frame:
    """A whole frame from bytes (refuses truncation, trailing bytes and a bad CRC)."""
    if len(data) < HEADER_BYTES:
        raise FrameError(f"frame truncated: {len(data)} bytes, header alone is {HEADER_BYTES}")
    kind, bits, shape, f0, f1, n_side, n, crc = parse_header(data[:HEADER_BYTES], max_payload)
    total = HEADER_BYTES + 4 * n_side + n
    if len(data) != total:
        raise FrameError(f"frame {kind.name} truncated or padded: {len(data)} bytes, header says {total}")
    return _finish(
        data[:HEADER_BYTES],
        kind,
        bits,
        shape,
        f0,
        f1,
        data[HEADER_BYTES : HEADER_BYTES + 4 * n_side],
        data[HEADER_BYTES + 4 * n_side :],
        crc,
    )


def _finish(
    head: bytes,
    kind: Kind,
    bits: int,
    shape: tuple[int, ...],
    f0: float,
    f1: float,
    side_b: bytes,
    payload: bytes,
    crc: int,
) -> Frame:
    got = zlib.crc32(
        payload, zlib.crc32(side_b, zlib.crc32(head[: _HEAD.size] + head[_HEAD.size : _HEAD.size + 8]))
    )
    if got != crc:
        raise FrameError(f"frame {kind.name}: CRC32 mismatch (header says {crc:08x}, data gives {got:08x})")
    side = np.frombuffer(side_b, dtype="<f4").astype(np.float32)
    return Frame(kind, bits, shape, bytes(payload), f0, f1, side)


async def read_frame(reader: asyncio.StreamReader, timeout_s: float, max_payload: int = MAX_PAYLOAD) -> Frame:
    """Read one frame; every read bounded in size and time.

    A peer that closes mid-frame gives a FrameError naming how many bytes were missing; one
    that sends nothing for ``timeout_s`` a TimeoutError naming the wait.
    """
    head = await _read_exactly(reader, HEADER_BYTES, timeout_s, "header")
    kind, bits, shape, f0, f1, n_side, n, crc = parse_header(head, max_payload)
    side_b = await _read_exactly(reader, 4 * n_side, timeout_s, f"{kind.name} side values")
    payload = await _read_exactly(reader, n, timeout_s, f"{kind.name} payload")
    return _finish(head, kind, bits, shape, f0, f1, side_b, payload, crc)


async def _read_exactly(reader: asyncio.StreamReader, n: int, timeout_s: float, what: str) -> bytes:
    if n == 0:
        return b""
    try:
        return await asyncio.wait_for(reader.readexactly(n), timeout_s)
    except asyncio.IncompleteReadError as exc:
        if what == "header" and not exc.partial:
            raise ConnectionResetError("peer closed the connection") from None
        raise FrameError(f"{what} truncated: peer closed after {len(exc.partial)} of {n} bytes") from None
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what}: nothing received for {timeout_s:g} s (read timeout)") from None
