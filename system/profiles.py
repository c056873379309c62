"""Model profiles: the ordered units a network may be cut after, with costs and sensitivities.

A profile is the only thing the planner knows about a network. Its JSON form is strict
(unknown keys, missing fields, negative or non-finite numbers and empty profiles are refused
with an error naming the field), because a silently wrong profile gives silently wrong plans.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from system.errors import QsplitInputError, check_finite, check_keys, shown
from system.evidence import (
    Compounding,
    TensorEvidence,
    parse_compounding,
    parse_tensor_evidence,
    parse_width_mode,
    width_floors,
)
from system.hardware import device_names, processor_timing, server_names
from system.loaders import is_file, parse_json, read_text
from system.unit_times import (  # noqa: F401  (re-exported: a profile's parts)
    MAX_UNIT_TIME_S,
    PROCESSOR_NAME,
    TIME_METHODS,
    TimeTable,
    UnitEfficiency,
    _unit_times,
    check_processor_name,
)

PROFILE_FORMAT = "qsplit-profile/1"
SENSITIVITY_SOURCES = ("measured", "hawq_v3", "proxy", "synthetic")
_UNIT_KEYS = ("name", "macs", "params", "out_elems", "sens_w", "sens_a")
_TOP_REQUIRED = ("name", "in_elems", "input_bits", "base_accuracy_pct", "units")
_TOP_OPTIONAL = ("format", "input_shape", "sensitivity_source", "provenance", "unit_times",
                 "compounding", "widths")
@dataclass(frozen=True, eq=False)
class ModelProfile:
    """Per-unit figures of one network (arrays of length L, unit 1 first)."""

    name: str
    unit_names: tuple[str, ...]
    macs: np.ndarray        # multiply-accumulates per unit
    params: np.ndarray      # weights per unit
    out_elems: np.ndarray   # elements of the unit's output tensor (what a cut after it sends)
    sens_w: np.ndarray      # pp of top-1 per unit of q(b) when the unit's weights get b bits
    sens_a: np.ndarray      # pp of top-1 per unit of q(b) when the unit's output gets b bits
    in_elems: int           # elements of the input tensor (what server-only sends)
    input_bits: int         # bits per input element (8 for images)
    base_accuracy_pct: float
    sensitivity_source: str = "measured"
    input_shape: tuple[int, ...] = ()
    provenance: dict = field(default_factory=dict)
    time_tables: Mapping[str, TimeTable] = field(default_factory=dict)
    efficiency: UnitEfficiency | None = None
    evidence: tuple[TensorEvidence, ...] | None = None   # per unit, where recorded
    compounding: Compounding | None = None                # drop = g(additive sum); None: g = id
    widths: str = "evidence"                              # or "extrapolate" (system.evidence)

    @cached_property
    def width_floors(self) -> tuple[np.ndarray, np.ndarray]:
        """Narrowest width each unit's weights and output may take (system.evidence)."""
        return width_floors(self.evidence, self.params, self.widths,
                            self.sensitivity_source == "synthetic")

    @cached_property
    def evidence_floors(self) -> tuple[np.ndarray, np.ndarray]:
        """The same floors as if extrapolation were not asked for: what flags a plan."""
        return width_floors(self.evidence, self.params, "evidence",
                            self.sensitivity_source == "synthetic")

    @property
    def n_units(self) -> int:
        """L, the number of units; cuts run from 0 (server-only) to L (device-only)."""
        return len(self.unit_names)

    def to_dict(self) -> dict:
        """The strict JSON form (see :func:`profile_from_dict`)."""
        units = [
            {"name": n, "macs": _num(m), "params": _num(p), "out_elems": _num(o),
             "sens_w": float(sw), "sens_a": float(sa)}
            for n, m, p, o, sw, sa in zip(self.unit_names, self.macs, self.params,
                                          self.out_elems, self.sens_w, self.sens_a, strict=True)
        ]
        for u, e in zip(units, self.evidence or (), strict=False):
            u["evidence"] = e.to_dict()
        extra: dict = {"compounding": self.compounding.to_dict()} if self.compounding else {}
        if self.widths != "evidence":
            extra["widths"] = self.widths
        return {"format": PROFILE_FORMAT, "name": self.name,
                "input_shape": list(self.input_shape), "in_elems": self.in_elems,
                "input_bits": self.input_bits, "base_accuracy_pct": self.base_accuracy_pct,
                "sensitivity_source": self.sensitivity_source, "provenance": self.provenance,
                "units": units, **extra, **self._unit_times_dict()}

    def _unit_times_dict(self) -> dict:
        if not self.time_tables and self.efficiency is None:
            return {}
        out: dict = {"tables": {k: {"time_s": [float(x) for x in t.time_s],
                                    "provenance": t.provenance}
                                for k, t in sorted(self.time_tables.items())}}
        if self.efficiency is not None:
            out.update(eff=[float(x) for x in self.efficiency.eff], fit=self.efficiency.fit)
        return {"unit_times": out}

    def sha256(self) -> str:
        """Hash of what decides a plan for the catalog's processors; a policy bundle records
        it to refuse a mismatch.

        A time table measured on a processor outside the catalog (this host, for
        ``execution``) changes no decision for a catalog request, nor does ``eff`` while no
        catalog processor carries it: they are left out, so measuring them keeps the bundles
        trained on this profile valid. Tables of catalog processors and a carried ``eff``
        count.
        """
        d = self.to_dict()
        ut = d.pop("unit_times", None)
        if ut is not None:
            catalog = {*device_names(), *server_names()}
            kept: dict = {"tables": {k: v for k, v in ut["tables"].items() if k in catalog}}
            if "eff" in ut and any(processor_timing(n).carry_eff for n in catalog):
                kept["eff"] = ut["eff"]
            if kept["tables"] or "eff" in kept:
                d["unit_times"] = kept
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the JSON form atomically (temp file, then rename)."""
        from system.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


def _num(x: float) -> int | float:
    xf = float(x)
    return int(xf) if xf.is_integer() else xf


def _nonneg(field_name: str, value: object, unit: str = "") -> float:
    return check_finite(field_name, value, lo=0.0, unit=unit)


#: Unit of each per-unit figure, as error messages name it.
_UNIT_FIGURES = {"macs": "MACs", "params": "weights", "out_elems": "elements",
                 "sens_w": "pp per unit of q(b)", "sens_a": "pp per unit of q(b)"}
_COUNTS = ("macs", "params", "out_elems")
#: Upper bounds of the per-unit figures (and ``in_elems``: MAX_ELEMS). Physical, with room:
#: a petaMAC is 500,000 times VGG-16's largest unit, 1e13 weights or elements 50 times all
#: of GPT-3's weights; a sensitivity of 1e12 already costs over 100 pp at 16 bits, so a
#: larger one says nothing more. Within them a drop never overflows, nor a time at ordinary
#: rates (an extreme request still can: system.cost.check_finite_figures refuses that).
MAX_MACS = 1e15
MAX_ELEMS = 1e13
MAX_SENS = 1e12
_UNIT_MAX = {"macs": MAX_MACS, "params": MAX_ELEMS, "out_elems": MAX_ELEMS, "sens_w": MAX_SENS,
             "sens_a": MAX_SENS}


def _unit_figures(uw: str, u: object) -> dict[str, float]:
    """One unit's figures, checked: whole counts, a tensor to send, sensitivities >= 0."""
    if isinstance(u, dict):
        missing = [k for k in ("sens_w", "sens_a") if u.get(k) is None]
        if missing:
            raise QsplitInputError(f"{uw}: sensitivities missing ({', '.join(missing)}: "
                                   "each a number >= 0 in pp per unit of q(b))")
    check_keys(uw, u, _UNIT_KEYS, ("evidence",))
    # out_elems >= 1: a unit's output is the tensor a cut after it sends.
    figs = {k: check_finite(f"{uw}.{k}", u[k], lo=1.0 if k == "out_elems" else 0.0,
                            hi=_UNIT_MAX[k], unit=unit) for k, unit in _UNIT_FIGURES.items()}
    for k in _COUNTS:
        if not figs[k].is_integer():
            raise QsplitInputError(f"{uw}.{k}: expected a whole number of {_UNIT_FIGURES[k]}, "
                                   f"got {shown(u[k])}")
    if figs["params"] == 0 and figs["sens_w"] != 0:
        raise QsplitInputError(f"{uw}.sens_w: {figs['sens_w']:g} on a unit without weights; "
                               "expected 0 pp per unit of q(b)")
    return figs


def profile_from_dict(data: object, where: str = "profile") -> ModelProfile:
    """Build a profile from its JSON form, refusing anything malformed.

    The one validator of the format: loading a shipped or user profile and writing one
    (``profiling``) both go through it.
    """
    d = check_keys(where, data, _TOP_REQUIRED, _TOP_OPTIONAL)
    if "format" in d and d["format"] != PROFILE_FORMAT:
        raise QsplitInputError(f"{where}.format: expected {PROFILE_FORMAT!r}, got {shown(d['format'])}")
    name = d["name"]
    if not isinstance(name, str) or not name:
        raise QsplitInputError(f"{where}.name: expected a non-empty string")
    units = d["units"]
    if not isinstance(units, list) or not units:
        raise QsplitInputError(f"{where}.units: expected a non-empty list of units")
    cols: dict[str, list[float]] = {k: [] for k in _UNIT_KEYS[1:]}
    names: list[str] = []
    evidence: list[TensorEvidence] = []
    for i, u in enumerate(units):
        uw = f"{where}.units[{i}]"
        figs = _unit_figures(uw, u)
        if not isinstance(u["name"], str) or not u["name"]:
            raise QsplitInputError(f"{uw}.name: expected a non-empty string")
        if u["name"] in names:
            raise QsplitInputError(f"{uw}.name: {shown(u['name'])} is already the name of unit "
                                   f"{names.index(u['name'])}; unit names must be unique")
        names.append(u["name"])
        if "evidence" in u:
            evidence.append(parse_tensor_evidence(f"{uw}.evidence", u["evidence"]))
        for k in _UNIT_KEYS[1:]:
            cols[k].append(figs[k])
    if evidence and len(evidence) != len(units):
        raise QsplitInputError(f"{where}.units: {len(evidence)} of {len(units)} units carry "
                               "'evidence'; expected every unit or none")
    if cols["sens_a"][-1] != 0:
        raise QsplitInputError(
            f"{where}.units[{len(units) - 1}].sens_a: {cols['sens_a'][-1]:g} on the last unit; "
            "expected 0 pp per unit of q(b) (no tensor is sent after the last unit)")
    if sum(cols["macs"]) == 0:
        raise QsplitInputError(f"{where}.units: every unit has 0 MACs; a network to plan must "
                               "compute something (some unit's macs in [1, "
                               f"{MAX_MACS:g}] MACs)")
    in_elems = check_finite(f"{where}.in_elems", d["in_elems"], lo=1.0, hi=MAX_ELEMS,
                            unit="elements")
    if in_elems < 1 or not in_elems.is_integer():
        raise QsplitInputError(
            f"{where}.in_elems: expected a whole number of elements in [1, {MAX_ELEMS:g}], "
            f"got {shown(d['in_elems'])}")
    input_bits = _nonneg(f"{where}.input_bits", d["input_bits"], "bits")
    if not input_bits.is_integer() or not 1 <= input_bits <= 32:
        raise QsplitInputError(
            f"{where}.input_bits: expected a whole number of bits in [1, 32], got {shown(d['input_bits'])}")
    acc = check_finite(f"{where}.base_accuracy_pct", d["base_accuracy_pct"], lo=0.0, hi=100.0,
                       unit="%")
    src = d.get("sensitivity_source", "measured")
    if src not in SENSITIVITY_SOURCES:
        raise QsplitInputError(
            f"{where}.sensitivity_source: {shown(src)} is not one of {list(SENSITIVITY_SOURCES)}")
    shape = d.get("input_shape", [])
    if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise QsplitInputError(f"{where}.input_shape: expected a list of positive integers")
    if shape and math.prod(shape) != int(in_elems):
        raise QsplitInputError(
            f"{where}.input_shape: product {math.prod(shape)} differs from in_elems {int(in_elems)}")
    prov = d.get("provenance", {})
    if not isinstance(prov, dict):
        raise QsplitInputError(f"{where}.provenance: expected a JSON object")
    macs = np.asarray(cols["macs"], dtype=np.float64)
    tables, eff = _unit_times(f"{where}.unit_times", d.get("unit_times"), macs)
    return ModelProfile(
        name=name, unit_names=tuple(names),
        **{k: np.asarray(v, dtype=np.float64) for k, v in cols.items()},
        in_elems=int(in_elems), input_bits=int(input_bits), base_accuracy_pct=acc,
        sensitivity_source=src, input_shape=tuple(shape), provenance=prov,
        time_tables=tables, efficiency=eff, evidence=tuple(evidence) or None,
        compounding=(parse_compounding(f"{where}.compounding", d["compounding"])
                     if "compounding" in d else None),
        widths=parse_width_mode(f"{where}.widths", d.get("widths", "evidence")))


def with_widths(profile: ModelProfile, widths: object, where: str = "widths") -> ModelProfile:
    """The profile offering the widths asked for (``evidence`` or ``extrapolate``; None keeps
    the profile's own): what a suite's, a scenario's or a command's option changes."""
    if widths is None or widths == profile.widths:
        return profile
    return replace(profile, widths=parse_width_mode(where, widths))


def load_profile_file(path: str | Path) -> ModelProfile:
    """Read a profile JSON file; errors name the file and the field."""
    p = Path(path)
    return profile_from_dict(parse_json(read_text(p, "profile"), f"profile {p.name}"),
                             where=f"profile {p.name}")


def builtin_profile_names() -> list[str]:
    """Names of the profiles shipped as package data."""
    folder = resources.files("system").joinpath("data/profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str | Path) -> ModelProfile:
    """A shipped profile by name (``resnet18``), a test profile (``toy3``) or a JSON path."""
    key = str(name_or_path)
    if key in TEST_PROFILES:
        return TEST_PROFILES[key]()
    if key in builtin_profile_names():
        text = resources.files("system").joinpath(f"data/profiles/{key}.json").read_text("utf-8")
        return profile_from_dict(parse_json(text, f"profile {key}"), where=f"profile {key}")
    if key.endswith(".json") or is_file(key):
        return load_profile_file(key)
    raise QsplitInputError(
        f"model: unknown profile {shown(key)}; known: {builtin_profile_names() + sorted(TEST_PROFILES)}"
        " or a path to a profile JSON file")


def toy3() -> ModelProfile:
    """A hand-checkable 3-unit profile (the golden cost tests compute it by hand)."""
    return ModelProfile(
        name="toy3", unit_names=("conv1", "conv2", "fc"),
        macs=np.array([1.0e6, 2.0e6, 0.5e6]), params=np.array([1000.0, 2000.0, 500.0]),
        out_elems=np.array([4000.0, 1000.0, 10.0]),
        sens_w=np.array([100.0, 50.0, 20.0]), sens_a=np.array([80.0, 40.0, 0.0]),
        in_elems=3000, input_bits=8, base_accuracy_pct=90.0,
        sensitivity_source="synthetic", input_shape=(3, 1000),
        provenance={"source": "hand-made test profile"})


def random_profile(n_units: int, rng: np.random.Generator, name: str = "random") -> ModelProfile:
    """A random but plausible profile: CNN-like shrinking tensors, log-uniform figures.

    Used by the exactness tests and benchmarks, where many different instances are needed.
    """
    if n_units < 1:
        raise QsplitInputError(f"n_units: {n_units} is outside the allowed range [1, inf)")
    L = n_units
    macs = np.exp(rng.uniform(np.log(1e6), np.log(3e8), L))
    params = np.exp(rng.uniform(np.log(1e3), np.log(3e6), L))
    shrink = np.cumprod(np.exp(rng.uniform(np.log(0.5), np.log(1.2), L)))
    out_elems = np.maximum(np.round(8e5 * shrink * np.exp(rng.normal(0, 0.3, L))), 10.0)
    sens_w = np.exp(rng.uniform(np.log(1.0), np.log(3e3), L))
    sens_a = np.exp(rng.uniform(np.log(1.0), np.log(3e3), L))
    sens_a[-1] = 0.0
    return ModelProfile(
        name=name, unit_names=tuple(f"u{i + 1}" for i in range(L)),
        macs=np.round(macs), params=np.round(params), out_elems=out_elems,
        sens_w=sens_w, sens_a=sens_a, in_elems=150528, input_bits=8, base_accuracy_pct=75.0,
        sensitivity_source="synthetic", input_shape=(3, 224, 224),
        provenance={"source": "system.profiles.random_profile"})


TEST_PROFILES = {"toy3": toy3}
