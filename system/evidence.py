"""What a profile's accuracy model rests on: the widths each sensitivity was measured at, and
the fitted correction for compounding (DESIGN.md §1).

Why: the law drop = sens x (2^b - 1)^-2 is a small-noise approximation. Post-training
quantization at 2-3 bits is where it breaks, so a width is offered to the planner only where
the evidence reaches it (:func:`width_floors`), and the additive sum of many quantized
tensors is mapped through a monotone correction g fitted on measured mixed plans
(:class:`Compounding`), because noises that are small alone compound when many units are
quantized together.

A width b is *backed* for a tensor when b = 32 (unquantized), when the tensor has no weights
(nothing to quantize), or when b is at least the narrowest width its sensitivity was measured
at: a wider width adds less noise than a measured one, the regime the law approximates
best. Narrower widths are extrapolation: offered only when a profile asks for it
(``"widths": "extrapolate"``), and then flagged in every plan that uses them. Synthetic
profiles (tests, benchmarks) define their drops by the law itself, so every width is backed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from system.errors import QsplitInputError, check_finite, check_keys, shown

#: How a sensitivity was measured: post-training quantization, after quantization-aware
#: fine-tuning, or not at all (a tensor without weights, or a documented proxy).
QUANT_METHODS = ("ptq", "qat", "none")
#: Which widths a profile offers the planner: those its evidence backs, or every width.
WIDTH_MODES = ("evidence", "extrapolate")
#: Knots of a compounding correction, at most.
MAX_KNOTS = 64


@dataclass(frozen=True)
class TensorEvidence:
    """The widths one unit's weight and output-activation sensitivities were measured at."""

    w_bits: tuple[int, ...] = ()
    w_method: str = "none"
    a_bits: tuple[int, ...] = ()
    a_method: str = "none"

    def to_dict(self) -> dict:
        """The JSON form of a unit's ``evidence``."""
        return {"w_bits": list(self.w_bits), "w_method": self.w_method,
                "a_bits": list(self.a_bits), "a_method": self.a_method}


def _bits_list(where: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise QsplitInputError(f"{where}: expected a list of bit widths (integers in [1, 32])")
    out = []
    for i, b in enumerate(value):
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 32:
            raise QsplitInputError(f"{where}[{i}]: {shown(b)} is not a bit width (an integer in "
                                   "[1, 32] bits)")
        out.append(b)
    if len(set(out)) != len(out):
        raise QsplitInputError(f"{where}: bit widths must be distinct, got {shown(value)}")
    return tuple(sorted(out))


def parse_tensor_evidence(where: str, data: object) -> TensorEvidence:
    """A unit's ``evidence``: each list non-empty exactly when its method is not ``none``."""
    d = check_keys(where, data, ("w_bits", "w_method", "a_bits", "a_method"))
    parts = {}
    for kind in ("w", "a"):
        method = d[f"{kind}_method"]
        if method not in QUANT_METHODS:
            raise QsplitInputError(f"{where}.{kind}_method: {shown(method)} is not one of "
                                   f"{list(QUANT_METHODS)}")
        bits = _bits_list(f"{where}.{kind}_bits", d[f"{kind}_bits"])
        if (method == "none") != (not bits):
            raise QsplitInputError(f"{where}.{kind}_bits: {list(bits)} with method {method!r}; "
                                   "measured widths need a method, and 'none' has no widths")
        parts[kind] = (bits, method)
    return TensorEvidence(parts["w"][0], parts["w"][1], parts["a"][0], parts["a"][1])


@dataclass(frozen=True, eq=False)
class Compounding:
    """drop = g(s): s the additive sum of the law, g piecewise linear through the knots
    (``s_pp``, ``drop_pp``, both strictly increasing from (0, 0)), continued past the last
    knot with the last segment's slope; ``fit`` says how it was fitted."""

    s_pp: np.ndarray
    drop_pp: np.ndarray
    fit: dict

    def __call__(self, s_pp: np.ndarray | float) -> np.ndarray:
        """g(s), elementwise."""
        return _piecewise(np.asarray(s_pp, dtype=np.float64), self.s_pp, self.drop_pp)

    def inverse(self, drop_pp: np.ndarray | float) -> np.ndarray:
        """g^-1(drop): the additive sum a budget allows; g is strictly increasing."""
        return _piecewise(np.asarray(drop_pp, dtype=np.float64), self.drop_pp, self.s_pp)

    def to_dict(self) -> dict:
        """The JSON form of a profile's ``compounding``."""
        return {"s_pp": [float(x) for x in self.s_pp], "drop_pp": [float(x) for x in self.drop_pp],
                "fit": self.fit}


def _piecewise(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Linear interpolation through (xs, ys), extended past the last knot with its slope
    (and before the first, for x < 0, with the first: never reached by a drop)."""
    inside = np.interp(x, xs, ys)
    hi = ys[-1] + (x - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    lo = ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0])
    return np.where(x > xs[-1], hi, np.where(x < xs[0], lo, inside))


def parse_compounding(where: str, data: object) -> Compounding:
    """A profile's ``compounding``, refusing knots that do not make g(0) = 0, increasing."""
    d = check_keys(where, data, ("s_pp", "drop_pp", "fit"))
    cols = {}
    for key in ("s_pp", "drop_pp"):
        v = d[key]
        if not isinstance(v, list) or not 2 <= len(v) <= MAX_KNOTS:
            raise QsplitInputError(f"{where}.{key}: expected a list of 2 to {MAX_KNOTS} numbers "
                                   "in pp")
        cols[key] = np.array([check_finite(f"{where}.{key}[{i}]", x, lo=0.0, hi=1e6, unit="pp")
                              for i, x in enumerate(v)], dtype=np.float64)
    if len(cols["s_pp"]) != len(cols["drop_pp"]):
        raise QsplitInputError(f"{where}: s_pp has {len(cols['s_pp'])} knots and drop_pp "
                               f"{len(cols['drop_pp'])}; expected the same number")
    for key, xs in cols.items():
        if xs[0] != 0.0:
            raise QsplitInputError(f"{where}.{key}[0]: {xs[0]:g}; expected 0 pp (g(0) = 0)")
        bad = np.flatnonzero(np.diff(xs) <= 0)
        if bad.size:
            raise QsplitInputError(f"{where}.{key}[{bad[0] + 1}]: {xs[bad[0] + 1]:g} pp is not "
                                   f"above the knot before it ({xs[bad[0]]:g} pp); knots must "
                                   "strictly increase")
    if not isinstance(d["fit"], dict):
        raise QsplitInputError(f"{where}.fit: expected a JSON object (how g was fitted)")
    return Compounding(cols["s_pp"], cols["drop_pp"], d["fit"])


def parse_width_mode(where: str, value: object) -> str:
    """A profile's ``widths``."""
    if value not in WIDTH_MODES:
        raise QsplitInputError(f"{where}: {shown(value)} is not one of {list(WIDTH_MODES)}")
    return str(value)


def width_floors(evidence: Sequence[TensorEvidence] | None, params: np.ndarray, mode: str,
                 synthetic: bool) -> tuple[np.ndarray, np.ndarray]:
    """The narrowest backed weight and activation width of each unit, (L,) each.

    Without any evidence a tensor is backed at 32 bits only; a unit without weights and
    the last unit's output (never sent) are backed at every width.
    """
    L = len(params)
    if mode == "extrapolate" or synthetic:
        return np.ones(L, np.int64), np.ones(L, np.int64)
    ev = list(evidence) if evidence is not None else [TensorEvidence()] * L
    fw = np.array([min(e.w_bits) if e.w_bits else 32 for e in ev], np.int64)
    fa = np.array([min(e.a_bits) if e.a_bits else 32 for e in ev], np.int64)
    fw[np.asarray(params) == 0] = 1
    fa[-1] = 1
    return fw, fa


def unbacked(bits: np.ndarray | int, floors: np.ndarray | float) -> np.ndarray | bool:
    """Where a width is below its tensor's floor (32 is always backed); broadcasts, and a
    width and a floor given as Python numbers give a bool without numpy."""
    if type(bits) is int and type(floors) is float:
        return bits < floors and bits != 32
    b = np.asarray(bits)
    return (b < floors) & (b != 32)
