"""Run a plan for real on a network given as a chain of units, and measure its top-1 drop.

A plan here is the planner's own ``system.plan.Plan``: the device-side units run with their
weights quantized to ``weight_bits``, the tensor at the cut is quantized to ``act_bits``
(when 0 < cut < L) and the rest runs in float, as on the server.

Measured drop: top-1 accuracy of the float network minus top-1 accuracy of the quantized
network, in percentage points, on a held-out set.

Rounding: **round-to-nearest** by default (``n_seeds = 0``), as ``execution`` runs a plan, so
a measured drop is the drop a deployed plan has: one deterministic evaluation. With ~450
images and ~98% accuracy a drop is decided by a handful of images near the decision boundary
(one image is 0.22 pp), so each held-out image is seen in **three views**
(``digits.eval_views``: shifted -1, 0, +1 pixel horizontally), tripling the top-1 decisions.
Stochastic rounding (``n_seeds > 0``: the mean over that many draws, each rounding up with
probability equal to the fractional part) is kept for studies; it has about twice the noise
power of round-to-nearest, so it measures larger drops than a deployed plan has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from profiling.quantize import quantizable_weights, quantize_activation, quantized_unit
from system.plan import NO_ACT_BITS, Plan


class Chain:
    """A network as a chain of units plus a labelled data set, with float activations cached.

    Caching the float output of every unit means a plan whose first quantized operation is
    at unit i only runs units i..L, which makes one-unit-at-a-time calibration cheap.
    """

    def __init__(self, units: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> None:
        self.units = list(units)
        for u in self.units:
            u.eval()
        self.y = y
        self.acts: list[torch.Tensor] = [x]
        with torch.no_grad():
            for u in self.units:
                self.acts.append(u(self.acts[-1]))
        self.base_vec = self.acts[-1].argmax(1) == y
        self.base_correct = int(self.base_vec.sum())

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def base_accuracy_pct(self) -> float:
        return 100.0 * self.base_correct / len(self.y)

    def has_weights(self, i: int) -> bool:
        return bool(quantizable_weights(self.units[i]))

    def _correct(self, plan: Plan, gen: torch.Generator | None) -> int:
        return int(self._correct_vec(plan, gen).sum())

    def _correct_vec(self, plan: Plan, gen: torch.Generator | None) -> torch.Tensor:
        """Per image: is the quantized network's top-1 right?"""
        L = self.n_units
        quant_w = [i for i in range(plan.cut) if plan.weight_bits[i] < 32 and self.has_weights(i)]
        quant_a = 0 < plan.cut < L and plan.act_bits < 32
        starts = [*quant_w, *([plan.cut] if quant_a else [])]
        if not starts:
            return self.base_vec
        start = min(starts)
        h = self.acts[start]
        with torch.no_grad():
            if quant_a and start == plan.cut:
                h = quantize_activation(h, plan.act_bits, gen)
            for i in range(start, L):
                if i in quant_w:
                    with quantized_unit(self.units[i], plan.weight_bits[i], gen):
                        h = self.units[i](h)
                else:
                    h = self.units[i](h)
                if quant_a and i == plan.cut - 1:
                    h = quantize_activation(h, plan.act_bits, gen)
        return h.argmax(1) == self.y

    def loss_per_image(self, plan: Plan, n_seeds: int, seed: int = 0) -> np.ndarray:
        """Per image, float-correct minus quantized-correct, averaged over rounding seeds.

        Its mean times 100 is the plan's mean drop in pp (the same draws as ``drop_pp``);
        kept per image so that the calibration set can be bootstrapped.
        """
        if n_seeds == 0:   # round-to-nearest: one deterministic evaluation
            return (self.base_vec.double() - self._correct_vec(plan, None).double()).numpy()
        acc = torch.zeros(len(self.y), dtype=torch.float64)
        for s in range(n_seeds):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + s)
            acc += self._correct_vec(plan, gen).double()
        return (self.base_vec.double() - acc / n_seeds).numpy()

    def drop_pp(self, plan: Plan, n_seeds: int, seed: int = 0) -> np.ndarray:
        """Top-1 drop (pp) of the plan for each of ``n_seeds`` stochastic-rounding draws.

        ``n_seeds = 0`` means one round-to-nearest evaluation instead.
        """
        n = len(self.y)
        if n_seeds == 0:
            return np.array([100.0 * (self.base_correct - self._correct(plan, None)) / n])
        out = np.empty(n_seeds)
        for s in range(n_seeds):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + s)
            out[s] = 100.0 * (self.base_correct - self._correct(plan, gen)) / n
        return out


def one_unit_plan(L: int, unit: int, w_bits: int | None = None, a_bits: int | None = None) -> Plan:
    """Plan quantizing only unit ``unit``'s weights (device-only, cut L) or only the tensor
    after it (cut ``unit + 1``, every device-side weight unquantized)."""
    if w_bits is not None:
        return Plan.canonical(L, tuple(w_bits if i == unit else 32 for i in range(L)), NO_ACT_BITS, L)
    if a_bits is None:
        raise ValueError("one_unit_plan needs w_bits or a_bits")
    return Plan.canonical(unit + 1, (32,) * (unit + 1), a_bits, L)


def measure_plans(chain: Chain, plans: Sequence[Plan], n_seeds: int = 0, seed: int = 0) -> np.ndarray:
    """Drop (pp) of each plan: round-to-nearest (n_seeds 0), else the mean over rounding draws."""
    return np.array([chain.drop_pp(p, n_seeds, seed + 7 * k).mean() for k, p in enumerate(plans)])
