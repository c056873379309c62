"""Head tensors and cut tensors to frames and back, at a plan's bit widths.

Why: the bytes on the wire must be the model's bits. A weight tensor (rank >= 2) of a unit at
b < 32 bits travels as b-bit codes (per output channel, symmetric: ``profiling.quantize``'s
grid) with one float32 range per output channel as side values; biases, batch-norm
parameters and buffers travel as float32, as integer kernels keep them. The cut tensor
travels as b_a-bit codes with its per-tensor (lo, step) in the header, or float32 at 32 bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from execution import packing
from execution.frames import Frame, FrameError, Kind, encode
from profiling.quantize import activation_codes, weight_codes, weight_from_codes

RAW = packing.RAW_BITS


def tensor_frame(t: torch.Tensor, bits: int) -> bytes:
    """One head tensor as a frame: codes at ``bits`` for a weight of rank >= 2, else float32."""
    t = t.detach()
    shape = tuple(t.shape)
    if bits < RAW and t.dim() >= 2:
        with torch.no_grad():
            k, m = weight_codes(t, bits)
        codes = k.to(torch.int32).numpy()
        return encode(
            Kind.TENSOR, packing.pack(codes, bits), bits=bits, shape=shape, side=m.reshape(-1).numpy()
        )
    return encode(Kind.TENSOR, t.contiguous().numpy().astype("<f4").tobytes(), bits=RAW, shape=shape)


def tensor_from_frame(f: Frame, expect_shape: tuple[int, ...], what: str) -> torch.Tensor:
    """The tensor a TENSOR frame stands for; a one-line error on a shape or kind mismatch."""
    if f.kind != Kind.TENSOR:
        raise FrameError(f"{what}: expected a TENSOR frame, got {f.kind.name}")
    if f.shape != tuple(expect_shape):
        raise FrameError(f"{what}: shape {list(f.shape)} differs from the model's {list(expect_shape)}")
    if f.bits == RAW:
        return torch.from_numpy(np.frombuffer(f.payload, dtype="<f4").astype(np.float32).reshape(f.shape))
    if len(expect_shape) < 2 or f.side.size != expect_shape[0]:
        raise FrameError(f"{what}: {f.side.size} channel ranges for {expect_shape[0]} output channels")
    codes = packing.unpack(f.payload, math.prod(f.shape), f.bits).astype(np.float32).reshape(f.shape)
    m = torch.from_numpy(f.side.copy()).view(-1, *([1] * (len(f.shape) - 1)))
    return weight_from_codes(torch.from_numpy(codes), m, f.bits)


def act_frame(x: torch.Tensor, bits: int, kind: Kind = Kind.ACT) -> bytes:
    """The tensor at the cut (batch 1) as a frame at ``bits`` (32 = float32)."""
    shape = tuple(x.shape)
    if bits >= RAW:
        return encode(kind, x.detach().contiguous().numpy().astype("<f4").tobytes(), bits=RAW, shape=shape)
    with torch.no_grad():
        k, lo, step = activation_codes(x, bits)
    return encode(
        kind,
        packing.pack(k.to(torch.int32).numpy(), bits),
        bits=bits,
        shape=shape,
        f0=float(lo.reshape(-1)[0]),
        f1=float(step.reshape(-1)[0]),
    )


def act_from_frame(
    f: Frame, expect_shape: tuple[int, ...], expect_bits: int, what: str = "cut tensor"
) -> torch.Tensor:
    """The tensor an ACT frame stands for, refusing a shape or width the plan did not set."""
    if f.shape != tuple(expect_shape):
        raise FrameError(f"{what}: shape {list(f.shape)} differs from the plan's {list(expect_shape)}")
    if f.bits != expect_bits:
        raise FrameError(f"{what}: {f.bits} bits, the plan sends {expect_bits}")
    if f.bits == RAW:
        return torch.from_numpy(np.frombuffer(f.payload, dtype="<f4").astype(np.float32).reshape(f.shape))
    if not (math.isfinite(f.f0) and math.isfinite(f.f1)):
        raise FrameError(f"{what}: lo/step are not finite")
    codes = packing.unpack(f.payload, math.prod(f.shape), f.bits).astype(np.float32).reshape(f.shape)
    lo = torch.tensor(f.f0, dtype=torch.float32)
    step = torch.tensor(f.f1, dtype=torch.float32)
    return torch.from_numpy(codes) * step + lo


def head_frames(tensors: list[tuple[int, str, torch.Tensor]], weight_bits: tuple[int, ...]) -> list[bytes]:
    """Frames of a head: each tensor at its unit's width (float32 where it is not quantized)."""
    return [tensor_frame(t, weight_bits[i]) for i, _, t in tensors]
