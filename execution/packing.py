"""Bit packing of b-bit unsigned integer codes, vectorised with numpy.

Why: a plan's head is shipped at its weight widths, so a 3-bit weight must take 3 bits on the
wire, not a byte. Codes are laid out little-endian bit by bit (code i occupies bits
[i b, (i + 1) b) of the stream, least significant bit first), so n codes of b bits take
exactly ceil(n b / 8) bytes. 8 and 16 bits are plain little-endian byte views.
"""

from __future__ import annotations

import numpy as np

from system.errors import QsplitInputError

#: Widths that travel as codes; 32 means raw float32.
PACKED_BITS: tuple[int, ...] = (2, 3, 4, 6, 8, 16)
RAW_BITS = 32


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that n values take on the wire at ``bits`` (32 = float32)."""
    if bits == RAW_BITS:
        return 4 * n
    check_bits("bits", bits)
    return (n * bits + 7) // 8


def check_bits(field: str, bits: object) -> int:
    """``bits`` as an int in the packed set, else a one-line error naming ``field``."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in PACKED_BITS:
        raise QsplitInputError(f"{field}: {bits!r} bits is not one of {list(PACKED_BITS)}")
    return int(bits)


def pack(codes: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integer codes < 2^bits (any shape, flattened in C order)."""
    bits = check_bits("bits", bits)
    c = np.ascontiguousarray(codes).reshape(-1)
    if c.size and (c.min() < 0 or int(c.max()) >= (1 << bits)):
        raise QsplitInputError(f"codes: values must lie in [0, {(1 << bits) - 1}] for {bits} bits")
    if bits == 8:
        return c.astype(np.uint8).tobytes()
    if bits == 16:
        return c.astype("<u2").tobytes()
    c8 = c.astype(np.uint8)
    planes = (c8[:, None] >> np.arange(bits, dtype=np.uint8)[None, :]) & 1
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack(data: bytes | memoryview, n: int, bits: int) -> np.ndarray:
    """The n codes packed in ``data`` (exactly ``packed_nbytes(n, bits)`` bytes), as uint16."""
    bits = check_bits("bits", bits)
    want = packed_nbytes(n, bits)
    if len(data) != want:
        raise QsplitInputError(f"payload: {len(data)} bytes, expected {want} for {n} values of {bits} bits")
    buf = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return buf.astype(np.uint16)
    if bits == 16:
        return np.frombuffer(data, dtype="<u2").astype(np.uint16)
    planes = np.unpackbits(buf, count=n * bits, bitorder="little").reshape(n, bits)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (planes.astype(np.uint16) * weights[None, :]).sum(axis=1, dtype=np.uint16)
