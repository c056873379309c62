"""Wireless channels for request generation: parametric links and trace replay.

A channel draws the link state of a request: uplink and downlink rates (bit/s) and the
round-trip time (s). Two kinds exist behind one :class:`Channel` protocol:

* :class:`ParametricChannel`: log-normal downlink rate, uniform uplink/downlink ratio,
  log-normal RTT, each clipped to a documented physical range. The project ships these as
  named links (``LINKS``, from ``system/data/links.json``); their figures come from
  ../shared/data/FACTS.md and are named in ``source``.
* :class:`TraceChannel`: replays measured downlink rates (:mod:`system.traces`) and draws the
  uplink ratio and RTT from a shipped link, because none of those traces records the uplink
  or the RTT.

numpy only: this module is imported by the runtime, which must not pull torch or gymnasium.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from system.errors import QsplitInputError, check_finite, check_keys
from system.traces import Trace, ZeroPolicy, infer_link, load_trace_folder

__all__ = [
    "LINKS",
    "Z_P90",
    "Channel",
    "ChannelSamples",
    "ParametricChannel",
    "TraceChannel",
    "get_link",
    "sigma_ln_from_p10_p90",
]

#: 90th percentile of the standard normal: a log-normal's p90/median = exp(Z_P90 * sigma).
Z_P90: float = 1.2815515655446004


def sigma_ln_from_p10_p90(p10: float, p90: float) -> float:
    """Log-space standard deviation of a log-normal whose 10th/90th percentiles are given.

    Lets a link be written in the figures the sources report (p10 - p90 spreads) rather
    than in an abstract sigma.
    """
    lo = check_finite("p10", p10, lo=0.0, lo_open=True)
    hi = check_finite("p90", p90, lo=lo, lo_open=True)
    return math.log(hi / lo) / (2.0 * Z_P90)


def _frozen_positive(field_name: str, values: object) -> np.ndarray:
    """A read-only 1-D float64 copy of ``values``, refused unless all are finite and > 0."""
    arr = np.array(values, dtype=np.float64)
    if arr.ndim != 1:
        raise QsplitInputError(f"{field_name}: expected a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0.0):
        raise QsplitInputError(f"{field_name}: every value must be finite and > 0")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class ChannelSamples:
    """n draws of the link state; arrays are aligned (index i is one request's channel)."""

    up_bps: np.ndarray
    down_bps: np.ndarray
    rtt_s: np.ndarray

    def __post_init__(self) -> None:
        for name in ("up_bps", "down_bps", "rtt_s"):
            object.__setattr__(self, name, _frozen_positive(name, getattr(self, name)))
        sizes = {self.up_bps.size, self.down_bps.size, self.rtt_s.size}
        if len(sizes) != 1:
            raise QsplitInputError(
                f"ChannelSamples: up_bps, down_bps and rtt_s must have one length, got "
                f"{self.up_bps.size}, {self.down_bps.size}, {self.rtt_s.size}")

    def __len__(self) -> int:
        return int(self.up_bps.size)


@runtime_checkable
class Channel(Protocol):
    """Anything that draws link states: a parametric channel or a trace replay."""

    @property
    def name(self) -> str:
        """Short identifier, e.g. ``"lte"``."""
        ...

    def sample(self, rng: np.random.Generator, n: int) -> ChannelSamples:
        """Draw ``n`` link states from ``rng`` (same seed, same samples)."""
        ...


def _check_rng_n(rng: object, n: object) -> int:
    """Validate the arguments of ``sample`` so a bad call fails with a named field."""
    if not isinstance(rng, np.random.Generator):
        raise QsplitInputError(
            f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise QsplitInputError(f"n: expected an integer >= 1, got {n!r}")
    return int(n)


def _check_range(lo_name: str, lo: float, hi_name: str, hi: float) -> None:
    """Refuse an inverted [lo, hi] pair, naming both fields."""
    if lo > hi:
        raise QsplitInputError(
            f"{lo_name}={lo:g} exceeds {hi_name}={hi:g}: expected {lo_name} <= {hi_name}")


def _lognormal_clipped(rng: np.random.Generator, n: int, median: float, sigma_ln: float,
                       lo: float, hi: float) -> np.ndarray:
    """Log-normal draws clipped to [lo, hi]: clipping keeps the median when lo <= median <= hi."""
    z = rng.standard_normal(n)
    return np.clip(median * np.exp(sigma_ln * z), lo, hi)


@dataclass(frozen=True, eq=False)
class _UplinkRtt:
    """The part both channel kinds draw from distributions: the uplink ratio and the RTT.

    up rate = down rate * U(up_ratio_min, up_ratio_max) (cellular uplinks are a fraction of the
    downlink, and the two fade together); rtt ~ LogNormal(rtt_median_ms, rtt_sigma_ln) clipped
    to [rtt_min_ms, rtt_max_ms]. No trace records either, so a replay borrows them from a link.
    """

    name: str
    up_ratio_min: float
    up_ratio_max: float
    rtt_median_ms: float
    rtt_sigma_ln: float
    rtt_min_ms: float
    rtt_max_ms: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise QsplitInputError(f"name: expected a non-empty string, got {self.name!r}")
        for f in ("up_ratio_min", "up_ratio_max", "rtt_median_ms", "rtt_min_ms", "rtt_max_ms"):
            object.__setattr__(self, f, check_finite(f, getattr(self, f), lo=0.0, lo_open=True))
        object.__setattr__(self, "rtt_sigma_ln",
                           check_finite("rtt_sigma_ln", self.rtt_sigma_ln, lo=0.0, hi=5.0))
        _check_range("up_ratio_min", self.up_ratio_min, "up_ratio_max", self.up_ratio_max)
        _check_range("rtt_min_ms", self.rtt_min_ms, "rtt_max_ms", self.rtt_max_ms)
        # The median must lie inside the clip range, else clipping moves it.
        check_finite("rtt_median_ms", self.rtt_median_ms, lo=self.rtt_min_ms, hi=self.rtt_max_ms)

    @property
    def rtt_range_s(self) -> tuple[float, float]:
        """The clip range of the RTT in seconds."""
        return self.rtt_min_ms / 1e3, self.rtt_max_ms / 1e3

    def _complete(self, rng: np.random.Generator, down_bps: np.ndarray) -> ChannelSamples:
        """Complete drawn downlink rates with the uplink ratio, then the RTT (in that order)."""
        n = down_bps.size
        ratio = rng.uniform(self.up_ratio_min, self.up_ratio_max, n)
        rtt_ms = _lognormal_clipped(rng, n, self.rtt_median_ms, self.rtt_sigma_ln,
                                    self.rtt_min_ms, self.rtt_max_ms)
        return ChannelSamples(up_bps=down_bps * ratio, down_bps=down_bps, rtt_s=rtt_ms / 1e3)


@dataclass(frozen=True)
class ParametricChannel(_UplinkRtt):
    """A channel given by distributions, with every figure's source named.

    down rate ~ LogNormal(median=down_median_mbps, sigma=down_sigma_ln), clipped to
    [down_min_mbps, down_max_mbps]; the uplink ratio and RTT as in :class:`_UplinkRtt`.
    Clipping keeps every draw positive and physically plausible: a log-normal tail would
    otherwise give near-zero rates (unbounded latency) or rates above the radio's peak.
    Consequently up_bps lies in [down_min_mbps * up_ratio_min, down_max_mbps * up_ratio_max]
    * 1e6. sigma = 0 gives a fixed value (useful for tests and for what-if runs).
    """

    down_median_mbps: float
    down_sigma_ln: float
    down_min_mbps: float
    down_max_mbps: float
    source: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.source, str):
            raise QsplitInputError(f"source: expected a string, got {self.source!r}")
        for f in ("down_median_mbps", "down_min_mbps", "down_max_mbps"):
            object.__setattr__(self, f, check_finite(f, getattr(self, f), lo=0.0, lo_open=True))
        object.__setattr__(self, "down_sigma_ln",
                           check_finite("down_sigma_ln", self.down_sigma_ln, lo=0.0, hi=5.0))
        _check_range("down_min_mbps", self.down_min_mbps, "down_max_mbps", self.down_max_mbps)
        check_finite("down_median_mbps", self.down_median_mbps,
                     lo=self.down_min_mbps, hi=self.down_max_mbps)

    @property
    def down_range_bps(self) -> tuple[float, float]:
        """The clip range of the downlink rate in bit/s."""
        return self.down_min_mbps * 1e6, self.down_max_mbps * 1e6

    @property
    def up_range_bps(self) -> tuple[float, float]:
        """The range the uplink rate can take in bit/s (clip range times ratio bounds)."""
        return (self.down_min_mbps * self.up_ratio_min * 1e6,
                self.down_max_mbps * self.up_ratio_max * 1e6)

    def sample(self, rng: np.random.Generator, n: int) -> ChannelSamples:
        """Draw n link states; draws happen in a fixed order (down, ratio, rtt) for determinism."""
        n = _check_rng_n(rng, n)
        down_mbps = _lognormal_clipped(rng, n, self.down_median_mbps, self.down_sigma_ln,
                                       self.down_min_mbps, self.down_max_mbps)
        return self._complete(rng, down_mbps * 1e6)


_LINKS_FORMAT = "qsplit-links/1"
_LINK_KEYS = ("down_median_mbps", "down_p10_mbps", "down_p90_mbps", "down_min_mbps",
              "down_max_mbps", "up_ratio_min", "up_ratio_max", "rtt_median_ms", "rtt_p10_ms",
              "rtt_p90_ms", "rtt_min_ms", "rtt_max_ms", "source")


def _load_links() -> dict[str, ParametricChannel]:
    """The shipped links from package data; spreads are written as the p10-p90 the sources give."""
    text = resources.files("system").joinpath("data/links.json").read_text(encoding="utf-8")
    doc = check_keys("links.json", json.loads(text), ["format", "links"], ["notes"])
    if doc["format"] != _LINKS_FORMAT:
        raise QsplitInputError(
            f"links.json: format: expected {_LINKS_FORMAT!r}, got {doc['format']!r}")
    out = {}
    for name, e in doc["links"].items():
        e = check_keys(f"links.json: {name}", e, _LINK_KEYS)
        out[name] = ParametricChannel(
            name=name, down_median_mbps=e["down_median_mbps"],
            down_sigma_ln=sigma_ln_from_p10_p90(e["down_p10_mbps"], e["down_p90_mbps"]),
            down_min_mbps=e["down_min_mbps"], down_max_mbps=e["down_max_mbps"],
            up_ratio_min=e["up_ratio_min"], up_ratio_max=e["up_ratio_max"],
            rtt_median_ms=e["rtt_median_ms"],
            rtt_sigma_ln=sigma_ln_from_p10_p90(e["rtt_p10_ms"], e["rtt_p90_ms"]),
            rtt_min_ms=e["rtt_min_ms"], rtt_max_ms=e["rtt_max_ms"], source=e["source"])
    return out


#: The shipped links (named parametric channels: "3g", "lte", "5g", "wifi"), by name.
LINKS: dict[str, ParametricChannel] = _load_links()


def get_link(name: str, where: str = "link") -> ParametricChannel:
    """The shipped link called ``name`` (case and spaces ignored); ``where`` names the field."""
    if not isinstance(name, str) or name.strip().lower() not in LINKS:
        raise QsplitInputError(
            f"{where}: unknown link {name!r}; allowed names: {', '.join(sorted(LINKS))}")
    return LINKS[name.strip().lower()]


@dataclass(frozen=True, eq=False)
class TraceChannel(_UplinkRtt):
    """Replay measured downlink rates; draw the uplink ratio and RTT from distributions.

    A draw picks a trace uniformly (so a long trace does not outweigh short ones), then a
    sample index uniformly within it (down_bps = that rate), then the uplink ratio and RTT as
    in :class:`_UplinkRtt`. The traces record neither, so :meth:`from_traces` and
    :meth:`from_folder` take those from the shipped link of the same kind (``LINKS[link]``).
    Traces whose direction is "unstated" (5Gophers) are used as downlink.
    """

    traces: tuple[Trace, ...]
    source: str = ""
    _rates_bps: np.ndarray = field(init=False, repr=False, compare=False)
    _offsets: np.ndarray = field(init=False, repr=False, compare=False)
    _lengths: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        traces = tuple(self.traces)
        if not traces or not all(isinstance(t, Trace) for t in traces):
            raise QsplitInputError("traces: expected a non-empty sequence of Trace objects")
        object.__setattr__(self, "traces", traces)
        lengths = np.array([len(t) for t in traces], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        rates = np.concatenate([t.rate_bps for t in traces])
        for a in (lengths, offsets, rates):
            a.setflags(write=False)
        object.__setattr__(self, "_lengths", lengths)
        object.__setattr__(self, "_offsets", offsets)
        object.__setattr__(self, "_rates_bps", rates)

    @classmethod
    def from_traces(cls, traces: Iterable[Trace], *, link: str = "lte",
                    name: str | None = None) -> TraceChannel:
        """Replay ``traces`` with the uplink ratio and RTT of the shipped link ``link``."""
        base = get_link(link)
        traces = tuple(traces)
        borrowed = {f.name: getattr(base, f.name) for f in fields(_UplinkRtt) if f.name != "name"}
        return cls(name=name or f"trace-{base.name}", traces=traces, **borrowed,
                   source=(f"down rates replayed from {len(traces)} trace(s); up/down ratio and "
                           f"RTT from link {base.name!r}: {base.source}"))

    @classmethod
    def from_folder(cls, path: str | Path, *, link: str | None = None,
                    name: str | None = None, on_zero: ZeroPolicy = "drop") -> TraceChannel:
        """Read a trace folder and replay it; ``link`` None infers it (:func:`infer_link`)."""
        traces = load_trace_folder(path, on_zero=on_zero)
        # a Mahimahi folder holds uplinks too: the replay draws downlink rates only
        traces = [t for t in traces if t.direction != "uplink"] or traces
        return cls.from_traces(traces, link=link or infer_link(path, traces),
                               name=name or Path(path).name)

    def sample(self, rng: np.random.Generator, n: int) -> ChannelSamples:
        """Draw n link states: trace, then index, then ratio, then RTT, in that fixed order."""
        n = _check_rng_n(rng, n)
        which = rng.integers(0, self._lengths.size, n)
        within = np.floor(rng.random(n) * self._lengths[which]).astype(np.int64)
        # rng.random() < 1 so within < length; the min() guards float rounding at the edge.
        within = np.minimum(within, self._lengths[which] - 1)
        return self._complete(rng, self._rates_bps[self._offsets[which] + within])
