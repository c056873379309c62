"""The quantizers a plan applies when it is run for real (calibration and validation).

Why these grids: the planner's accuracy law charges a b-bit tensor the noise power
q(b) = (2^b - 1)^-2 of a uniform quantizer with 2^b levels; these quantizers have exactly
2^b levels, so their noise power follows q(b) when nothing clips.

* weights, per output channel, symmetric: 2^b levels spanning [-m_c, +m_c] with
  m_c = max |w_c| and step 2 m_c / (2^b - 1) (a mid-rise grid: symmetric about 0, 0 itself
  is not a level). Only weight tensors of rank >= 2 (conv, linear) are quantized; biases stay
  in float, as integer kernels keep them at 32 bits.
* the activation tensor at the cut, per tensor, affine: 2^b levels spanning [lo, hi], the
  minimum and maximum of that request's tensor (step (hi - lo) / (2^b - 1)); lo and hi travel
  with the tensor (64 bits, negligible next to out_elems * b).
* 32 bits means unquantized; 16 bits is quantized with the same grids.

Rounding is to nearest, or stochastic (round up with probability equal to the fractional
part) when a ``torch.Generator`` is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _round(u: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Round to nearest (gen None) or stochastically (floor(u + U[0,1)))."""
    if gen is None:
        return torch.round(u)
    return torch.floor(u + torch.rand(u.shape, generator=gen, dtype=u.dtype))


def weight_codes(
    w: torch.Tensor, bits: int, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes k in [0, 2^b - 1] and per-channel ranges m of :func:`quantize_weight`.

    The value of code k is ``weight_from_codes(k, m, bits)``; m has w's rank (size 1 past dim 0).
    """
    levels = 2.0**bits - 1.0
    m = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-12)
    m = m.view(-1, *([1] * (w.dim() - 1)))
    step = 2.0 * m / levels
    return _round((w + m) / step, gen).clamp(0.0, levels), m


def weight_from_codes(k: torch.Tensor, m: torch.Tensor, bits: int) -> torch.Tensor:
    """The weights that codes ``k`` with per-channel ranges ``m`` stand for (float32 grid)."""
    step = 2.0 * m / (2.0**bits - 1.0)
    return k * step - m


def quantize_weight(w: torch.Tensor, bits: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Per-output-channel symmetric quantization (2^b levels over [-max|w_c|, +max|w_c|])."""
    if bits >= 32:
        return w
    k, m = weight_codes(w, bits, gen)
    return weight_from_codes(k, m, bits)


def quantize_activation(
    x: torch.Tensor, bits: int, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Per-tensor affine quantization over [min, max] of each request's tensor (dim 0 = batch)."""
    if bits >= 32:
        return x
    k, lo, step = activation_codes(x, bits, gen)
    return k * step + lo


def activation_codes(
    x: torch.Tensor, bits: int, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes k in [0, 2^b - 1] and the per-request (lo, step) of :func:`quantize_activation`;
    the value of code k is ``k * step + lo`` (lo and step have x's rank, size 1 past dim 0)."""
    levels = 2.0**bits - 1.0
    flat = x.flatten(1)
    lo = flat.amin(dim=1).view(-1, *([1] * (x.dim() - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (x.dim() - 1)))
    step = ((hi - lo) / levels).clamp_min(1e-12)
    return _round((x - lo) / step, gen).clamp(0.0, levels), lo, step


def quantizable_weights(unit: nn.Module) -> list[nn.Parameter]:
    """The weight tensors a plan quantizes: parameters of rank >= 2 (conv and linear)."""
    return [p for p in unit.parameters() if p.dim() >= 2]


@contextmanager
def quantized_unit(unit: nn.Module, bits: int, gen: torch.Generator | None = None) -> Iterator[nn.Module]:
    """Temporarily replace the unit's weights by their quantized values, then restore them."""
    params = quantizable_weights(unit) if bits < 32 else []
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                p.copy_(quantize_weight(p, bits, gen))
        yield unit
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
