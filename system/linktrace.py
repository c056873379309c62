"""Capacity traces a transfer drains through exactly (DESIGN.md §8), and uplink/downlink pairs.

A :class:`CapacityTrace` is the cumulative capacity D(t) of a link in bits, piecewise linear
between knots and looping with its period. A transfer of B bits that starts at t0 ends at the
first t1 with D(t1) - D(t0) = B, outages (flat stretches of D) included: an upload waits for
capacity. Mahimahi files are read exactly: each line is one 1500-byte delivery opportunity
in its millisecond, the opportunities of a millisecond are spread evenly over it (a fluid
view of the packets), and the trace loops with the period of its last timestamp, as mm-link
replays it. Rate traces of the other formats hold each sample's rate until the next sample.

numpy only: the runtime may import this module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from system.errors import QsplitInputError
from system.traces import (
    MAHIMAHI_PACKET_BYTES,
    Trace,
    detect_format,
    load_trace_folder,
    mahimahi_direction,
    mahimahi_stamps,
)

__all__ = ["CapacityTrace", "LinkPair", "capacity_from_rates", "load_link_pairs",
           "load_routes", "read_mahimahi_capacity"]


@dataclass(frozen=True, eq=False)
class CapacityTrace:
    """Cumulative capacity ``cum_bits[i]`` at ``knots_s[i]`` (knots_s[0] = 0, cum_bits[0] = 0),
    linear in between, looping every ``period_s`` = knots_s[-1] seconds."""

    name: str
    knots_s: np.ndarray
    cum_bits: np.ndarray
    direction: str = "unstated"

    def __post_init__(self) -> None:
        t = np.array(self.knots_s, dtype=np.float64)
        c = np.array(self.cum_bits, dtype=np.float64)
        where = f"capacity trace {self.name!r}"
        if t.ndim != 1 or t.shape != c.shape or t.size < 2:
            raise QsplitInputError(f"{where}: expected knots and cumulative bits of one length >= 2")
        if t[0] != 0 or c[0] != 0 or np.any(np.diff(t) <= 0) or np.any(np.diff(c) < 0) \
                or not np.all(np.isfinite(c)):
            raise QsplitInputError(f"{where}: knots must start at 0 and increase, cumulative "
                                   "bits start at 0 and never decrease")
        if c[-1] <= 0:
            raise QsplitInputError(f"{where}: no capacity at all (every sample is an outage)")
        slope = np.diff(c) / np.diff(t)
        for a in (t, c, slope):
            a.setflags(write=False)
        object.__setattr__(self, "knots_s", t)
        object.__setattr__(self, "cum_bits", c)
        object.__setattr__(self, "_slope", slope)

    @property
    def period_s(self) -> float:
        """Length of one loop of the trace."""
        return float(self.knots_s[-1])

    @property
    def mean_bps(self) -> float:
        """Mean capacity over one loop."""
        return float(self.cum_bits[-1] / self.knots_s[-1])

    def delivered_bits(self, t_s: np.ndarray | float) -> np.ndarray:
        """D(t): the bits the link can carry over [0, t) (t >= 0, looping)."""
        t = np.asarray(t_s, dtype=np.float64)
        loops = np.floor(t / self.period_s)
        r = t - loops * self.period_s
        i = np.clip(np.searchsorted(self.knots_s, r, side="right") - 1, 0, self.knots_s.size - 2)
        return loops * self.cum_bits[-1] + self.cum_bits[i] + (r - self.knots_s[i]) * self._slope[i]

    def time_of(self, bits: np.ndarray | float) -> np.ndarray:
        """The first t with D(t) >= bits (bits > 0): when that much capacity has passed."""
        x = np.asarray(bits, dtype=np.float64)
        total = self.cum_bits[-1]
        loops = np.maximum(np.ceil(x / total) - 1.0, 0.0)
        r = x - loops * total                                   # in (0, total]
        j = np.clip(np.searchsorted(self.cum_bits, r, side="left"), 1, self.cum_bits.size - 1)
        seg = j - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = np.where(self._slope[seg] > 0,
                              (r - self.cum_bits[seg]) / self._slope[seg], 0.0)
        return loops * self.period_s + self.knots_s[seg] + inside

    def drain_s(self, start_s: np.ndarray | float, bits: np.ndarray | float) -> np.ndarray:
        """Seconds to carry ``bits`` from ``start_s`` on (0 for no bits); broadcasts."""
        start = np.asarray(start_s, dtype=np.float64)
        b = np.asarray(bits, dtype=np.float64)
        end = self.time_of(self.delivered_bits(start) + np.where(b > 0, b, 1.0))
        return np.where(b > 0, np.maximum(end - start, 0.0), 0.0)

    def throughput_bps(self, end_s: np.ndarray | float, k: int, window_s: float = 1.0
                       ) -> np.ndarray:
        """The last ``k`` windows' throughput before ``end_s``, oldest first: shape (..., k)."""
        end = np.asarray(end_s, dtype=np.float64)[..., None]
        edges = end - window_s * np.arange(k, -1, -1, dtype=np.float64)
        d = self.delivered_bits(np.maximum(edges, 0.0))
        return np.diff(d, axis=-1) / window_s


@dataclass(frozen=True, eq=False)
class LinkPair:
    """The uplink and downlink capacity of one recorded route, and the shipped link whose RTT
    a request on it borrows (no trace records the RTT)."""

    name: str
    up: CapacityTrace
    down: CapacityTrace
    link: str

    @property
    def period_s(self) -> float:
        """The span a request may be placed in: the shorter of the two loops."""
        return min(self.up.period_s, self.down.period_s)


def _capacity_from_stamps(name: str, stamps_ms: np.ndarray, direction: str) -> CapacityTrace:
    period_ms = max(math.ceil(float(stamps_ms[-1])), 1)
    ms = np.floor(stamps_ms).astype(np.int64) % period_ms     # the last stamp wraps onto 0
    counts = np.bincount(ms, minlength=period_ms).astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(counts * MAHIMAHI_PACKET_BYTES * 8.0)])
    return CapacityTrace(name, np.arange(period_ms + 1) / 1e3, cum, direction)


@lru_cache(maxsize=64)
def _read_mahimahi_cached(path: str, mtime_ns: int) -> CapacityTrace:
    p, stamps = mahimahi_stamps(path)
    return _capacity_from_stamps(p.name, stamps, mahimahi_direction(p))


def read_mahimahi_capacity(path: str | Path) -> CapacityTrace:
    """A Mahimahi trace file's exact capacity (1 ms knots, looping; see the module doc)."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError:
        raise QsplitInputError(f"{p}: cannot read trace file (not found)") from None
    return _read_mahimahi_cached(str(p.resolve()), mtime)


def capacity_from_rates(trace: Trace) -> CapacityTrace:
    """A rate trace as capacity: each sample's rate holds until the next sample, the last for
    the median sample interval; times restart at 0."""
    t = trace.time_s - trace.time_s[0]
    dt = np.diff(t)
    last = float(np.median(dt)) if dt.size else 1.0
    widths = np.concatenate([dt, [last if last > 0 else 1.0]])
    keep = widths > 0
    knots = np.concatenate([[0.0], np.cumsum(widths[keep])])
    cum = np.concatenate([[0.0], np.cumsum(trace.rate_bps[keep] * widths[keep])])
    return CapacityTrace(trace.name, knots, cum, trace.direction)


#: The shipped link a recorded route borrows its RTT from, by a word in its file name.
_NAME_LINK: tuple[tuple[str, str], ...] = (("umts", "3g"), ("hsdpa", "3g"), ("3g", "3g"),
                                           ("lte", "lte"), ("4g", "lte"), ("5g", "5g"),
                                           ("wifi", "wifi"))


def _link_of(name: str, default: str) -> str:
    low = name.lower()
    return next((link for word, link in _NAME_LINK if word in low), default)


def load_link_pairs(folder: str | Path, *, default_link: str = "lte") -> list[LinkPair]:
    """Every route in a trace folder, sorted by name.

    Mahimahi ``NAME.up`` / ``NAME.down`` files pair by name. A folder of one-direction traces
    (any other supported format) gives one route per trace: its capacity is the downlink and,
    scaled by the shipped link's mean uplink/downlink ratio, the uplink (those sets record no
    uplink). The RTT's link is named by a word in the file name, else ``default_link``.
    """
    from system.channel import get_link  # channel imports traces; keep this module light

    d = Path(folder)
    if not d.is_dir():
        raise QsplitInputError(f"{d}: expected a folder of trace files, none found there")
    mm = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in (".up", ".down")
                and detect_format(p) == "mahimahi")
    pairs: list[LinkPair] = []
    if mm:
        stems = sorted({p.stem for p in mm})
        for stem in stems:
            up, down = d / f"{stem}.up", d / f"{stem}.down"
            if not (up.is_file() and down.is_file()):
                raise QsplitInputError(f"{d / stem}: expected both {stem}.up and {stem}.down")
            pairs.append(LinkPair(stem, read_mahimahi_capacity(up), read_mahimahi_capacity(down),
                                  _link_of(stem, default_link)))
        return pairs
    for tr in load_trace_folder(d, on_zero="floor"):  # a zero second is an outage
        down = capacity_from_rates(tr)
        link = get_link(_link_of(tr.name + " " + d.name, default_link))
        ratio = 0.5 * (link.up_ratio_min + link.up_ratio_max)
        up = CapacityTrace(tr.name, down.knots_s, down.cum_bits * ratio, "uplink")
        pairs.append(LinkPair(re.sub(r"\s+", "_", tr.name), up, down, link.name))
    return pairs


def load_routes(specs: list[str] | tuple[str, ...], base: Path | None = None) -> list[LinkPair]:
    """Routes from specs ``FOLDER`` (every route in it) or ``FOLDER:NAME[,NAME...]`` (those
    routes only). A relative folder resolves against ``base`` (the caller's config folder or
    the repository root) when it is not found as given."""
    out: list[LinkPair] = []
    for spec in specs:
        folder, _, names = str(spec).partition(":")
        p = Path(folder)
        if not p.is_dir() and base is not None and (base / p).is_dir():
            p = base / p
        pairs = load_link_pairs(p)
        if names:
            want = [n.strip() for n in names.split(",") if n.strip()]
            have = {r.name: r for r in pairs}
            missing = [n for n in want if n not in have]
            if missing:
                raise QsplitInputError(f"routes: {spec!r}: no route {missing[0]!r} in {p}; "
                                       f"found {sorted(have)}")
            pairs = [have[n] for n in want]
        out.extend(pairs)
    if not out:
        raise QsplitInputError("routes: expected at least one route")
    return out
