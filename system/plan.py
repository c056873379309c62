"""A plan: where to cut, the weight bits of each device-side unit, the activation bits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from system.bits import DEFAULT_BITS
from system.errors import QsplitInputError

#: Activation bits recorded when no activation crosses the link at the cut (p = 0 or p = L).
NO_ACT_BITS = 32


@dataclass(frozen=True)
class Plan:
    """``cut`` units run on the device with ``weight_bits``; ``act_bits`` for the cut tensor.

    Canonical form: ``len(weight_bits) == cut`` and ``act_bits == 32`` when nothing is
    quantized at the cut (cut 0 sends the raw input, cut L sends only the result), so two
    plans that cost the same because they are the same compare equal.
    """

    cut: int
    weight_bits: tuple[int, ...]
    act_bits: int

    def validate(self, n_units: int, bits: tuple[int, ...] = DEFAULT_BITS) -> Plan:
        """Check the plan against a profile of ``n_units`` units and a bit set."""
        if not isinstance(self.cut, (int, np.integer)) or not 0 <= int(self.cut) <= n_units:
            raise QsplitInputError(f"cut: {self.cut!r} is outside the allowed range [0, {n_units}]")
        if len(self.weight_bits) != self.cut:
            raise QsplitInputError(
                f"weight_bits: expected {self.cut} entries (one per device-side unit), "
                f"got {len(self.weight_bits)}")
        for i, b in enumerate(self.weight_bits):
            if b not in bits:
                raise QsplitInputError(f"weight_bits[{i}]: {b!r} is not in the bit set {list(bits)}")
        if self.act_bits not in bits:
            raise QsplitInputError(f"act_bits: {self.act_bits!r} is not in the bit set {list(bits)}")
        return self

    @classmethod
    def canonical(cls, cut: int, weight_bits: np.ndarray | tuple[int, ...], act_bits: int,
                  n_units: int) -> Plan:
        """Build the canonical plan: bits past the cut dropped, unused activation bits = 32."""
        cut = int(cut)
        wb = tuple(int(b) for b in list(weight_bits)[:cut])
        ab = int(act_bits) if 0 < cut < n_units else NO_ACT_BITS
        return cls(cut=cut, weight_bits=wb, act_bits=ab)

    def to_json_dict(self) -> dict:
        """JSON form: cut, weight_bits, act_bits."""
        return {"cut": int(self.cut), "weight_bits": [int(b) for b in self.weight_bits],
                "act_bits": int(self.act_bits)}


class PlanResult(NamedTuple):
    """A decided plan with its cost and drop, also as option indices into the bit set (the
    form the optimizer, the repair and the refinement work in), and how it was reached."""

    plan: Plan
    cost: float
    drop_pp: float
    cut: int
    w_idx: tuple[int, ...]  # (cut,) weight-bit index of each device-side unit
    a_idx: int              # activation-bit index (the index of 32 at cut 0 and cut L)
    steps: int = 0          # changes made: repair bit raises, refinement moves, exact knapsacks
    repaired: bool = False  # an infeasible plan was changed
    fallback: bool = False  # the repair's all-32 plan did not fit either: cut 0 was taken


def plans_to_arrays(plans: list[Plan], n_units: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack plans as (cuts[N], weight_bits[N, L] padded with 32, act_bits[N]) for cost.py."""
    n = len(plans)
    cuts = np.fromiter((p.cut for p in plans), dtype=np.int64, count=n)
    wb = np.full((n, n_units), 32, dtype=np.int64)
    for i, p in enumerate(plans):
        wb[i, : p.cut] = p.weight_bits
    ab = np.fromiter((p.act_bits for p in plans), dtype=np.int64, count=n)
    return cuts, wb, ab
