"""Bit widths, kernel widths and the quantization-noise law q(b) of DESIGN.md §1."""

from __future__ import annotations

import numpy as np

from system.errors import QsplitInputError

#: Default weight and activation bit set; 32 means unquantized.
DEFAULT_BITS: tuple[int, ...] = (2, 3, 4, 6, 8, 16, 32)
#: Kernel widths a device may run natively, narrowest first. Order of ``kappa`` vectors.
KERNEL_WIDTHS: tuple[int, ...] = (4, 8, 16, 32)


def q_noise(bits: np.ndarray | int) -> np.ndarray:
    """Relative quantization-noise power of a b-bit uniform quantizer: (2^b - 1)^-2."""
    b = np.asarray(bits, dtype=np.float64)
    return 1.0 / np.square(np.exp2(b) - 1.0)


def check_bit_set(field: str, bits: object) -> tuple[int, ...]:
    """Validate a bit set: distinct integers in [1, 32] that include 32 (always feasible)."""
    if not isinstance(bits, (list, tuple)) or not bits:
        raise QsplitInputError(f"{field}: expected a non-empty list of bit widths")
    out = []
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= int(b) <= 32:
            raise QsplitInputError(f"{field}: bit width {b!r} is not an integer in [1, 32]")
        out.append(int(b))
    if len(set(out)) != len(out):
        raise QsplitInputError(f"{field}: bit widths must be distinct, got {out}")
    if 32 not in out:
        raise QsplitInputError(f"{field}: must contain 32 (the unquantized option), got {out}")
    return tuple(sorted(out))


def kernel_kappa(bits: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """Speedup of each bit width: it runs on the narrowest native kernel width >= b.

    ``kappa`` is aligned with :data:`KERNEL_WIDTHS`; 0 marks a width with no native kernel.
    A device without int4 runs 2-4 bits as int8; 6 bits run as int8; 16 as fp16 or fp32.
    ``kappa`` (W,) gives ``bits``' shape; many devices' (N, W) give (N, *bits.shape).
    """
    b = np.asarray(bits)
    widths = np.asarray(KERNEL_WIDTHS)
    kap = np.asarray(kappa, dtype=np.float64)
    usable = (widths[None, :] >= b.reshape(-1)[:, None]) & (kap[..., None, :] > 0)
    first = np.argmax(usable, axis=-1)
    if kap.ndim == 1:
        return kap[first].reshape(b.shape)
    out = np.take_along_axis(kap[..., None, :], first[..., None], axis=-1)[..., 0]
    return out.reshape(*kap.shape[:-1], *b.shape)
