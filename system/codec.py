"""What a policy sees and what it says: the observation encoder and the action codec.

Both live in ``system`` (numpy only) so that the runtime dispatcher reproduces a trained
policy's decisions exactly from an exported bundle without gymnasium or torch: the bundle
stores :meth:`ObservationEncoder.to_json` and :meth:`ActionCodec.to_json`.

Observation. Feature i of a request is

    f_i = clip((T_i(x_i + shift_i) - center_i) / scale_i, -clip, clip)    (float32)

where x_i is a named quantity of the request (:data:`QUANTITIES`), T_i is ``log10`` or
``linear`` (identity). The normalisation is fixed and analytic (no running statistics, so no
VecNormalize pickle is needed or trusted); the defaults put each catalog device and each
shipped channel's typical values within about +-1.5. The ``*_cost_per_*`` quantities are the
prices that make up a plan's cost (DESIGN.md §1: cost is linear in them), e.g. the uplink
costs (1 + beta P_tx) / R_up seconds per bit; a policy would otherwise have to learn these
products and quotients from the raw fields.

Action. ``MultiDiscrete([L+1, K] + [K] * L)``: the cut p, the index of the activation bits,
and the index of each unit's weight bits in ``bits`` (sorted ascending, so index K-1 is 32).
:meth:`ActionCodec.decode` returns the canonical :class:`~system.plan.Plan`: bits past the
cut are ignored, and the activation bits are ignored at p = 0 and p = L.
:meth:`ActionCodec.encode` maps a plan back, filling ignored entries with the index of 32
bits, so ``decode(encode(plan)) == plan`` for every canonical plan.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from system.accuracy import within_limit
from system.bits import DEFAULT_BITS, check_bit_set
from system.cost import UnitTables
from system.errors import QsplitInputError, check_finite, check_keys
from system.fields import REQUEST_FIELDS, SCALAR_NAMES, WIDTH_FIELDS, column_names, observed_names
from system.plan import Plan
from system.request import Request, request_arrays

ENCODER_FORMAT = "qsplit-obs-encoder/1"
#: Most units a codec describes (the largest shipped profile has a few dozen).
MAX_UNITS = 10_000
CODEC_FORMAT = "qsplit-action-codec/1"

#: The request's observed fields, as named quantities (a speedup per kernel width below 32).
BASE_QUANTITIES: tuple[str, ...] = tuple(q for f in REQUEST_FIELDS for q in observed_names(f))
#: Quantities derived from the base ones, as Python expressions over their names (the runtime
#: evaluates the same text on floats): the prices that make up a plan's cost (DESIGN.md §1),
#: in seconds of cost per FLOP or per bit. ``div`` is a quotient whose divisor can underflow
#: to 0 (numpy's semantics: inf or nan, no exception).
DERIVED_QUANTITIES: dict[str, str] = {
    "srv_eff_flops_per_s": "srv_flops_per_s * srv_load",
    "dev_cost_per_flop": "(1.0 + beta_s_per_j * p_comp_w) / dev_flops_per_s",
    "srv_cost_per_flop": "div(1.0 + beta_s_per_j * p_idle_w, srv_flops_per_s * srv_load)",
    "up_cost_per_bit": "(1.0 + beta_s_per_j * p_tx_w) / up_bps",
    "down_cost_per_bit": "(1.0 + beta_s_per_j * p_rx_w) / (down_bps * reuse)",
    "rtt_cost_s": "rtt_s * (0.5 * (1.0 + beta_s_per_j * p_tx_w) + (1.0 + beta_s_per_j * p_rx_w)"
                  " / reuse)",
}
#: Every quantity a feature may read, as an expression (a base quantity is its own name).
QUANTITIES: dict[str, str] = {**{q: q for q in BASE_QUANTITIES}, **DERIVED_QUANTITIES}
_COMPILED = {q: compile(e, f"<quantity {q}>", "eval") for q, e in QUANTITIES.items()}


def base_quantity_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`request_arrays` output as one (N,) array per base quantity."""
    out = {f: arrays[f] for f in SCALAR_NAMES}
    for f in WIDTH_FIELDS:
        out.update(zip(column_names(f), arrays[f.name].T, strict=True))
    return {q: out[q] for q in BASE_QUANTITIES}


def quantity_array(name: str, base: dict[str, np.ndarray]) -> np.ndarray:
    """A named quantity of N requests from :func:`base_quantity_arrays` output."""
    return eval(_COMPILED[name], {"__builtins__": {}, "div": np.divide}, base)


TRANSFORMS = ("log10", "linear")


@dataclass(frozen=True)
class Feature:
    """f = (T(x + shift) - center) / scale for the quantity x named ``quantity``."""

    quantity: str
    transform: str = "log10"
    center: float = 0.0
    scale: float = 1.0
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.quantity, str) or self.quantity not in QUANTITIES:
            raise QsplitInputError(
                f"feature.quantity: {self.quantity!r} is not one of {sorted(QUANTITIES)}")
        if not isinstance(self.transform, str) or self.transform not in TRANSFORMS:
            raise QsplitInputError(
                f"feature {self.quantity}.transform: {self.transform!r} is not one of "
                f"{list(TRANSFORMS)}")
        check_finite(f"feature {self.quantity}.center", self.center)
        check_finite(f"feature {self.quantity}.scale", self.scale, lo=0.0, lo_open=True)
        check_finite(f"feature {self.quantity}.shift", self.shift, lo=0.0)


#: The default features (the shipped policies were trained on these; changing them means
#: retraining). Centers and scales: catalog devices 3-400 GFLOP/s, channels 0.01-3000 Mbit/s.
DEFAULT_FEATURES: tuple[Feature, ...] = (
    Feature("dev_flops_per_s", center=10.5, scale=1.0),
    Feature("dev_kappa_4", "linear", center=1.0, scale=3.0),
    Feature("dev_kappa_8", "linear", center=1.5, scale=1.5),
    Feature("dev_kappa_16", "linear", center=1.0, scale=1.0),
    Feature("p_comp_w", center=0.85, scale=0.5),
    Feature("p_tx_w", center=0.0, scale=0.5),
    Feature("p_rx_w", center=0.0, scale=0.5),
    Feature("p_idle_w", center=0.0, scale=0.5),
    Feature("srv_eff_flops_per_s", center=11.5, scale=0.5),
    Feature("srv_load", "linear", center=0.5, scale=0.5),
    Feature("up_bps", center=7.0, scale=1.5),
    Feature("down_bps", center=7.5, scale=1.5),
    Feature("rtt_s", center=-1.5, scale=0.75),
    Feature("eps_pp", center=0.0, scale=1.0),
    Feature("beta_s_per_j", center=-0.8, scale=1.0, shift=0.01),
    Feature("reuse", center=1.0, scale=1.0),
    Feature("dev_cost_per_flop", center=-10.0, scale=1.0),
    Feature("srv_cost_per_flop", center=-11.25, scale=0.5),
    Feature("up_cost_per_bit", center=-7.0, scale=1.5),
    Feature("down_cost_per_bit", center=-8.5, scale=2.0),
    Feature("rtt_cost_s", center=-1.5, scale=1.0),
)


@dataclass(frozen=True)
class ObservationEncoder:
    """Request -> float32 feature vector, with fixed analytic normalisation (see module doc)."""

    features: tuple[Feature, ...] = DEFAULT_FEATURES
    clip: float = 5.0

    def __post_init__(self) -> None:
        if not self.features:
            raise QsplitInputError("features: expected at least one feature")
        check_finite("clip", self.clip, lo=0.0, lo_open=True)

    @property
    def n_features(self) -> int:
        """Length of the observation vector."""
        return len(self.features)

    @property
    def names(self) -> list[str]:
        """The quantity each entry of the observation reads."""
        return [f.quantity for f in self.features]

    def unclipped_arrays(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Features of N requests before the clip, (N, F) float64: where a population lies."""
        base = base_quantity_arrays(arrays)
        cols = []
        for f in self.features:
            x = quantity_array(f.quantity, base) + f.shift
            if f.transform == "log10":
                x = np.log10(x)
            cols.append((x - f.center) / f.scale)
        return np.stack(cols, axis=1)

    def encode_arrays(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Features of N requests given as :func:`request_arrays` output, (N, F) float32."""
        return np.clip(self.unclipped_arrays(arrays), -self.clip, self.clip).astype(np.float32)

    def encode_batch(self, requests: Sequence[Request]) -> np.ndarray:
        """Features of many requests, (N, F) float32."""
        return self.encode_arrays(request_arrays(requests))

    def encode(self, request: Request) -> np.ndarray:
        """Features of one request, (F,) float32."""
        return self.encode_batch([request])[0]

    def to_json(self) -> dict:
        """JSON form; :meth:`from_json` restores an equal encoder."""
        return {"format": ENCODER_FORMAT, "clip": self.clip,
                "features": [{"quantity": f.quantity, "transform": f.transform,
                              "center": f.center, "scale": f.scale, "shift": f.shift}
                             for f in self.features]}

    @classmethod
    def from_json(cls, data: object) -> ObservationEncoder:
        """Restore an encoder, refusing anything malformed."""
        d = check_keys("encoder", data, ["format", "features"], ["clip"])
        if d["format"] != ENCODER_FORMAT:
            raise QsplitInputError(f"encoder.format: expected {ENCODER_FORMAT!r}")
        if not isinstance(d["features"], list):
            raise QsplitInputError("encoder.features: expected a list")
        feats = []
        for i, fd in enumerate(d["features"]):
            check_keys(f"encoder.features[{i}]", fd, ["quantity"],
                       ["transform", "center", "scale", "shift"])
            feats.append(Feature(**fd))
        clip = d.get("clip", 5.0)
        check_finite("encoder.clip", clip, lo=0.0, lo_open=True)
        return cls(features=tuple(feats), clip=float(clip))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ActionCodec:
    """MultiDiscrete action <-> canonical Plan for a profile of ``n_units`` units."""

    n_units: int
    bits: tuple[int, ...] = DEFAULT_BITS
    _bits_arr: np.ndarray = field(init=False, repr=False, compare=False)
    _index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.n_units, bool) or not isinstance(self.n_units, (int, np.integer)) \
                or int(self.n_units) < 1:
            raise QsplitInputError(f"n_units: {self.n_units!r} is outside the allowed range [1, inf)")
        object.__setattr__(self, "n_units", int(self.n_units))
        object.__setattr__(self, "bits", check_bit_set("bits", list(self.bits)))
        object.__setattr__(self, "_bits_arr", np.asarray(self.bits, dtype=np.int64))
        object.__setattr__(self, "_index", {b: i for i, b in enumerate(self.bits)})

    @property
    def n_bits(self) -> int:
        """K, the number of bit widths."""
        return len(self.bits)

    @property
    def nvec(self) -> np.ndarray:
        """Sizes of the MultiDiscrete dimensions: [L+1, K] + [K] * L."""
        K = self.n_bits
        return np.asarray([self.n_units + 1, K] + [K] * self.n_units, dtype=np.int64)

    def decode_arrays(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions (N, L+2) -> canonical (cuts (N,), weight bits (N, L), act bits (N,)).

        Weight bits past the cut are set to 32 and act bits to 32 at p = 0 or p = L, so the
        arrays equal :func:`system.plan.plans_to_arrays` of the decoded plans.
        """
        a = np.asarray(actions, dtype=np.int64).reshape(-1, self.n_units + 2)
        if np.any(a < 0) or np.any(a >= self.nvec[None, :]):
            bad = np.argwhere((a < 0) | (a >= self.nvec[None, :]))[0]
            raise QsplitInputError(
                f"action[{bad[1]}]: {a[bad[0], bad[1]]} is outside the allowed range "
                f"[0, {self.nvec[bad[1]] - 1}]")
        L = self.n_units
        cuts = a[:, 0]
        wb = self._bits_arr[a[:, 2:]]
        wb = np.where(np.arange(L)[None, :] < cuts[:, None], wb, 32)
        inner = (cuts > 0) & (cuts < L)
        ab = np.where(inner, self._bits_arr[a[:, 1]], 32)
        return cuts, wb, ab

    def decode(self, action: np.ndarray | Sequence[int]) -> Plan:
        """One action -> its canonical plan."""
        c, w, a = self.decode_arrays(np.asarray(action))
        return Plan.canonical(int(c[0]), w[0], int(a[0]), self.n_units)

    def encode(self, plan: Plan) -> np.ndarray:
        """A plan -> an action (ignored entries get the index of 32 bits), int64 (L+2,)."""
        plan.validate(self.n_units, self.bits)
        K32 = self._index[32]
        out = np.full(self.n_units + 2, K32, dtype=np.int64)
        out[0] = plan.cut
        out[1] = self._index[plan.act_bits]
        out[2:2 + plan.cut] = [self._index[b] for b in plan.weight_bits]
        return out

    def action_mask(self, T: UnitTables, eps_pp: float) -> np.ndarray:
        """Flat bool mask over the MultiDiscrete options (MaskablePPO's layout).

        An option is masked when no feasible plan can use it, because drops add and are
        >= 0: a weight width whose drop alone exceeds the budget; an activation width whose
        drop exceeds it at every inner cut; a cut whose least possible drop does. 32 bits
        (drop about 1e-16 pp) and cut 0 (drop 0) are never masked.
        """
        L = self.n_units
        prefix = np.concatenate([[0.0], np.cumsum(T.d_w.min(axis=1))])
        g = T.compounding
        cut_ok = within_limit(prefix + T.d_a.min(axis=1), eps_pp, g)
        cut_ok[0] = True
        act_ok = within_limit(T.d_a[1:L].min(axis=0), eps_pp, g) if L > 1 \
            else np.ones(self.n_bits, bool)
        w_ok = within_limit(T.d_w, eps_pp, g)
        w_ok[:, self.bits.index(32)] = True
        act_ok[self.bits.index(32)] = True
        return np.concatenate([cut_ok, act_ok, w_ok.ravel()])

    def to_json(self) -> dict:
        """JSON form; :meth:`from_json` restores an equal codec."""
        return {"format": CODEC_FORMAT, "n_units": self.n_units, "bits": list(self.bits),
                "nvec": self.nvec.tolist(),
                "layout": "[cut in 0..L, act-bits index, weight-bits index of unit 1..L]; "
                          "indices into bits (ascending); entries past the cut ignored; "
                          "act bits ignored at cut 0 and cut L"}

    @classmethod
    def from_json(cls, data: object) -> ActionCodec:
        """Restore a codec, refusing anything malformed or inconsistent."""
        d = check_keys("codec", data, ["format", "n_units", "bits"], ["nvec", "layout"])
        if d["format"] != CODEC_FORMAT:
            raise QsplitInputError(f"codec.format: expected {CODEC_FORMAT!r}")
        n = d["n_units"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_UNITS:
            raise QsplitInputError(f"codec.n_units: {str(n)[:40]} is not an integer in [1, {MAX_UNITS}]")
        codec = cls(n_units=n, bits=check_bit_set("codec.bits", d["bits"]))
        if "nvec" in d and (not isinstance(d["nvec"], list) or d["nvec"] != codec.nvec.tolist()):
            raise QsplitInputError("codec.nvec: does not match n_units and bits")
        return codec


def dumps(obj: ObservationEncoder | ActionCodec) -> str:
    """Canonical JSON text of an encoder or codec (sorted keys), e.g. for hashing a bundle."""
    return json.dumps(obj.to_json(), sort_keys=True, separators=(",", ":"))
