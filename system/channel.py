"""Wireless channels for request generation: parametric scenarios and trace replay.

A channel draws the link state of a request: uplink and downlink rates (bit/s) and the
round-trip time (s). Two kinds exist behind one :class:`Channel` protocol:

* :class:`ParametricChannel`: log-normal downlink rate, uniform uplink/downlink ratio,
  log-normal RTT, each clipped to a documented physical range. The project ships these
  (``SCENARIOS``); their figures come from ../shared/data/FACTS.md and are named in ``source``.
* :class:`TraceChannel`: replays measured downlink rates (Pensieve "cooked" files, the Ghent
  4G/LTE logs, the 5Gophers CSVs) and draws the uplink ratio and RTT as above, because none
  of those traces records the uplink or the RTT.

numpy only: this module is imported by the runtime, which must not pull torch or gymnasium.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from system.errors import QsplitInputError, check_finite

__all__ = [
    "SCENARIOS",
    "ZERO_FLOOR_BPS",
    "Z_P90",
    "Channel",
    "ChannelSamples",
    "ParametricChannel",
    "Trace",
    "TraceChannel",
    "detect_format",
    "get_channel",
    "load_trace_folder",
    "read_5gophers",
    "read_ghent",
    "read_pensieve",
    "sigma_ln_from_p10_p90",
]

#: 90th percentile of the standard normal: a log-normal's p90/median = exp(Z_P90 * sigma).
Z_P90: float = 1.2815515655446004
#: Rate given to a zero-rate trace sample under ``on_zero="floor"`` (1 kbit/s: an outage that
#: still gives a finite latency). The default policy drops zero samples instead.
ZERO_FLOOR_BPS: float = 1.0e3

ZeroPolicy = Literal["drop", "floor"]


def sigma_ln_from_p10_p90(p10: float, p90: float) -> float:
    """Log-space standard deviation of a log-normal whose 10th/90th percentiles are given.

    Lets a scenario be written in the figures the sources report (p10 - p90 spreads) rather
    than in an abstract sigma.
    """
    lo = check_finite("p10", p10, lo=0.0, lo_open=True)
    hi = check_finite("p90", p90, lo=lo, lo_open=True)
    return math.log(hi / lo) / (2.0 * Z_P90)


# --------------------------------------------------------------------------------------------
# Samples and the protocol


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
    """Anything that draws link states: a parametric scenario or a trace replay."""

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


# --------------------------------------------------------------------------------------------
# Parametric channels


@dataclass(frozen=True)
class ParametricChannel:
    """A channel scenario given by distributions, with every figure's source named.

    down rate ~ LogNormal(median=down_median_mbps, sigma=down_sigma_ln), clipped to
    [down_min_mbps, down_max_mbps]; up rate = down rate * U(up_ratio_min, up_ratio_max)
    (cellular uplinks are a fraction of the downlink, and the two fade together);
    rtt ~ LogNormal(rtt_median_ms, rtt_sigma_ln) clipped to [rtt_min_ms, rtt_max_ms].
    Clipping keeps every draw positive and physically plausible: a log-normal tail would
    otherwise give near-zero rates (unbounded latency) or rates above the radio's peak.
    Consequently up_bps lies in [down_min_mbps * up_ratio_min, down_max_mbps * up_ratio_max]
    * 1e6. sigma = 0 gives a fixed value (useful for tests and for what-if runs).
    """

    name: str
    down_median_mbps: float
    down_sigma_ln: float
    down_min_mbps: float
    down_max_mbps: float
    up_ratio_min: float
    up_ratio_max: float
    rtt_median_ms: float
    rtt_sigma_ln: float
    rtt_min_ms: float
    rtt_max_ms: float
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise QsplitInputError(f"name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.source, str):
            raise QsplitInputError(f"source: expected a string, got {self.source!r}")
        pos = {"lo": 0.0, "lo_open": True}
        for f in ("down_median_mbps", "down_min_mbps", "down_max_mbps", "up_ratio_min",
                  "up_ratio_max", "rtt_median_ms", "rtt_min_ms", "rtt_max_ms"):
            object.__setattr__(self, f, check_finite(f, getattr(self, f), **pos))
        for f in ("down_sigma_ln", "rtt_sigma_ln"):
            object.__setattr__(self, f, check_finite(f, getattr(self, f), lo=0.0, hi=5.0))
        _check_range("down_min_mbps", self.down_min_mbps, "down_max_mbps", self.down_max_mbps)
        _check_range("up_ratio_min", self.up_ratio_min, "up_ratio_max", self.up_ratio_max)
        _check_range("rtt_min_ms", self.rtt_min_ms, "rtt_max_ms", self.rtt_max_ms)
        # The median must lie inside the clip range, else clipping moves it.
        check_finite("down_median_mbps", self.down_median_mbps,
                     lo=self.down_min_mbps, hi=self.down_max_mbps)
        check_finite("rtt_median_ms", self.rtt_median_ms,
                     lo=self.rtt_min_ms, hi=self.rtt_max_ms)

    @property
    def down_range_bps(self) -> tuple[float, float]:
        """The clip range of the downlink rate in bit/s."""
        return self.down_min_mbps * 1e6, self.down_max_mbps * 1e6

    @property
    def up_range_bps(self) -> tuple[float, float]:
        """The range the uplink rate can take in bit/s (clip range times ratio bounds)."""
        return (self.down_min_mbps * self.up_ratio_min * 1e6,
                self.down_max_mbps * self.up_ratio_max * 1e6)

    @property
    def rtt_range_s(self) -> tuple[float, float]:
        """The clip range of the RTT in seconds."""
        return self.rtt_min_ms / 1e3, self.rtt_max_ms / 1e3

    def sample(self, rng: np.random.Generator, n: int) -> ChannelSamples:
        """Draw n link states; draws happen in a fixed order (down, ratio, rtt) for determinism."""
        n = _check_rng_n(rng, n)
        down_mbps = _lognormal_clipped(rng, n, self.down_median_mbps, self.down_sigma_ln,
                                       self.down_min_mbps, self.down_max_mbps)
        ratio = rng.uniform(self.up_ratio_min, self.up_ratio_max, n)
        rtt_ms = _lognormal_clipped(rng, n, self.rtt_median_ms, self.rtt_sigma_ln,
                                    self.rtt_min_ms, self.rtt_max_ms)
        down_bps = down_mbps * 1e6
        return ChannelSamples(up_bps=down_bps * ratio, down_bps=down_bps, rtt_s=rtt_ms / 1e3)


def _scenarios() -> dict[str, ParametricChannel]:
    """The shipped scenarios. Every figure carries its source; assumptions are marked as such."""
    s3g = ParametricChannel(
        name="3g",
        # sqrt(0.8 * 3.6) = 1.70: geometric middle of the per-file medians.
        down_median_mbps=1.7,
        down_sigma_ln=sigma_ln_from_p10_p90(0.4, 4.2),  # = 0.917
        down_min_mbps=0.05,
        down_max_mbps=14.4,
        up_ratio_min=0.15,
        up_ratio_max=0.5,
        rtt_median_ms=120.0,
        rtt_sigma_ln=sigma_ln_from_p10_p90(70.0, 250.0),
        rtt_min_ms=30.0,
        rtt_max_ms=1000.0,
        source=(
            "down median 1.7 Mbit/s = geometric middle of the per-file medians 0.8-3.6 Mbit/s "
            "and sigma from the p10-p90 envelope 0.4-4.2 Mbit/s of the Norway HSDPA 3G commute "
            "traces (Riiser et al., MMSys 2013; statistics derived in FACTS.md); clip max 14.4 "
            "Mbit/s = HSDPA category 10 peak (3GPP Rel-5); clip min 0.05 Mbit/s: assumption, "
            "below the lowest rate in those traces (0.24 Mbit/s). up/down ratio U(0.15, 0.5): "
            "assumption (HSPA uplinks run at a fraction of the downlink; HSUPA cat 6 peak 5.76 "
            "vs 14.4 Mbit/s gives 0.4). RTT median 120 ms, p10-p90 70-250 ms, clip 30-1000 ms: "
            "assumption, typical HSPA round trips to a server in the operator's region."),
    )
    lte = ParametricChannel(
        name="lte",
        # sqrt(17 * 38) = 25.4: geometric middle of the per-file medians.
        down_median_mbps=25.0,
        down_sigma_ln=sigma_ln_from_p10_p90(4.6, 58.0),  # = 0.989
        down_min_mbps=0.05,
        down_max_mbps=150.0,
        up_ratio_min=0.3,
        up_ratio_max=0.6,
        rtt_median_ms=50.0,
        rtt_sigma_ln=sigma_ln_from_p10_p90(30.0, 100.0),
        rtt_min_ms=10.0,
        rtt_max_ms=1000.0,
        source=(
            "down median 25 Mbit/s = geometric middle of the per-file medians 17-38 Mbit/s and "
            "sigma from the p10-p90 envelope 4.6-58 Mbit/s of the Ghent 4G/LTE logs (van der "
            "Hooft et al., Ghent University; statistics derived in FACTS.md); Huang et al. "
            "(MobiSys 2012) report a lower 13 Mbit/s median (US, 2011-12). Clip max 150 Mbit/s "
            "= LTE UE category 4 peak (20 MHz, 2x2 MIMO; the Ghent phone is category 4); clip "
            "min 0.05 Mbit/s: assumption, below the lowest non-zero Ghent rate (0.065 Mbit/s). "
            "up/down ratio U(0.3, 0.6), mean 0.45 = Huang et al. medians 6 / 13 Mbit/s. "
            "RTT median 50 ms, p10-p90 30-100 ms, clip 10-1000 ms: assumption, typical LTE "
            "round trips to a nearby server (LTE RTTs are well below 3G's: Huang et al., "
            "SIGCOMM 2013)."),
    )
    s5g = ParametricChannel(
        name="5g",
        # sqrt(178 * 313) = 236: geometric middle of the per-file medians.
        down_median_mbps=236.0,
        down_sigma_ln=sigma_ln_from_p10_p90(73.0, 807.0),  # = 0.938
        down_min_mbps=0.4,
        down_max_mbps=3000.0,
        up_ratio_min=0.05,
        up_ratio_max=0.25,
        rtt_median_ms=30.0,
        rtt_sigma_ln=sigma_ln_from_p10_p90(15.0, 60.0),
        rtt_min_ms=5.0,
        rtt_max_ms=500.0,
        source=(
            "down median 236 Mbit/s = geometric middle of the per-file medians 178-313 Mbit/s "
            "and sigma from the p10-p90 spread 73-807 Mbit/s of the 5Gophers mmWave traces "
            "(Narayanan et al., WWW 2020, Minneapolis; link direction not stated there; "
            "statistics derived in FACTS.md). Clip max 3000 Mbit/s: assumption, above the "
            "highest 5Gophers sample (2061 Mbit/s); clip min 0.4 Mbit/s: assumption, below "
            "the lowest non-zero sample (0.46 Mbit/s). up/down ratio U(0.05, 0.25): assumption "
            "(2019 non-standalone mmWave 5G carried uploads on LTE, so uplink is an LTE-like "
            "rate against a 5G downlink). RTT median 30 ms, p10-p90 15-60 ms, clip 5-500 ms: "
            "assumption."),
    )
    wifi = ParametricChannel(
        name="wifi",
        down_median_mbps=50.0,
        down_sigma_ln=sigma_ln_from_p10_p90(10.0, 150.0),
        down_min_mbps=0.5,
        down_max_mbps=600.0,
        up_ratio_min=0.5,
        up_ratio_max=1.0,
        rtt_median_ms=10.0,
        rtt_sigma_ln=sigma_ln_from_p10_p90(3.0, 30.0),
        rtt_min_ms=1.0,
        rtt_max_ms=500.0,
        source=(
            "assumption, no trace in ../shared: a phone on a home/office 802.11n/ac network "
            "with the edge server on the LAN or one hop behind the access point. Down median "
            "50 Mbit/s, p10-p90 10-150 Mbit/s; clip 0.5-600 Mbit/s (600 is below the 867 "
            "Mbit/s PHY rate of 2x2 802.11ac at 80 MHz); up/down ratio U(0.5, 1.0) (one "
            "shared half-duplex medium, the phone's transmitter weaker than the AP's); RTT "
            "median 10 ms, p10-p90 3-30 ms, clip 1-500 ms."),
    )
    return {c.name: c for c in (s3g, lte, s5g, wifi)}


#: The shipped parametric scenarios, by name.
SCENARIOS: dict[str, ParametricChannel] = _scenarios()


def get_channel(name: str) -> Channel:
    """The shipped scenario called ``name``; an unknown name is refused with the allowed ones."""
    allowed = ", ".join(sorted(SCENARIOS))
    if not isinstance(name, str) or name.strip().lower() not in SCENARIOS:
        raise QsplitInputError(f"channel: unknown scenario {name!r}; allowed names: {allowed}")
    return SCENARIOS[name.strip().lower()]


# --------------------------------------------------------------------------------------------
# Traces

TraceFormat = Literal["pensieve", "ghent", "5gophers"]


@dataclass(frozen=True, eq=False)
class Trace:
    """One measured rate time series, rates in bit/s.

    ``link`` says which direction the source states ("downlink", or "unstated" for 5Gophers,
    whose README does not say). ``n_zero`` counts the zero-rate samples in the file and
    ``zero_policy`` what was done with them: "drop" removes them (the default; a zero rate
    would make any transfer infinite), "floor" sets them to ``ZERO_FLOOR_BPS``.
    """

    name: str
    time_s: np.ndarray
    rate_bps: np.ndarray
    link: str
    path: str
    fmt: str
    n_zero: int = 0
    zero_policy: str = "drop"

    def __post_init__(self) -> None:
        where = f"Trace {self.name!r}"
        t = np.array(self.time_s, dtype=np.float64)
        r = np.array(self.rate_bps, dtype=np.float64)
        if t.ndim != 1 or r.ndim != 1 or t.size != r.size:
            raise QsplitInputError(
                f"{where}: time_s and rate_bps must be 1-D of one length, got "
                f"{t.shape} and {r.shape}")
        if r.size == 0:
            raise QsplitInputError(f"{where}: empty trace, expected at least one sample")
        if not np.all(np.isfinite(t)) or not np.all(np.isfinite(r)) or not np.all(r > 0):
            raise QsplitInputError(f"{where}: times must be finite and rates finite and > 0")
        t.setflags(write=False)
        r.setflags(write=False)
        object.__setattr__(self, "time_s", t)
        object.__setattr__(self, "rate_bps", r)

    def __len__(self) -> int:
        return int(self.rate_bps.size)

    @property
    def median_mbps(self) -> float:
        """Median rate in Mbit/s, the figure FACTS.md tabulates."""
        return float(np.median(self.rate_bps)) / 1e6


def _read_lines(path: str | Path) -> tuple[Path, list[str]]:
    """The file's lines, or a one-line ValueError naming it (missing, unreadable, not text)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise QsplitInputError(f"{p}: cannot read trace file ({reason})") from None
    return p, text.splitlines()


def _short(line: str) -> str:
    """A line quoted for an error message, cut so the message stays one short line."""
    return repr(line if len(line) <= 60 else line[:57] + "...")


def _number(p: Path, lineno: int, line: str, token: str, what: str) -> float:
    """Parse one numeric field, or raise naming the file, the line and what was expected."""
    try:
        x = float(token)
    except ValueError:
        raise QsplitInputError(
            f"{p}: line {lineno}: expected {what} as a number, got {token!r} in {_short(line)}"
        ) from None
    if not math.isfinite(x):
        raise QsplitInputError(f"{p}: line {lineno}: expected a finite {what}, got {token!r}")
    return x


def _finish(p: Path, name: str, fmt: str, link: str, time_s: Sequence[float],
            rate_bps: Sequence[float], lines: Sequence[int], on_zero: ZeroPolicy) -> Trace:
    """Check rates (no negatives), apply the zero policy, and build the Trace."""
    if on_zero not in ("drop", "floor"):
        raise QsplitInputError(f"on_zero: expected 'drop' or 'floor', got {on_zero!r}")
    t = np.asarray(time_s, dtype=np.float64)
    r = np.asarray(rate_bps, dtype=np.float64)
    if r.size == 0:
        raise QsplitInputError(f"{p}: empty trace {name!r}, expected at least one sample")
    neg = np.flatnonzero(r < 0)
    if neg.size:
        raise QsplitInputError(
            f"{p}: line {lines[neg[0]]}: expected a rate >= 0, got {r[neg[0]]:g} bit/s")
    zero = r == 0
    n_zero = int(zero.sum())
    if on_zero == "drop":
        t, r = t[~zero], r[~zero]
        if r.size == 0:
            raise QsplitInputError(
                f"{p}: trace {name!r} has only zero-rate samples ({n_zero}); "
                "expected at least one positive rate")
    else:
        r = np.where(zero, ZERO_FLOOR_BPS, r)
    return Trace(name=name, time_s=t, rate_bps=r, link=link, path=str(p), fmt=fmt,
                 n_zero=n_zero, zero_policy=on_zero)


def read_pensieve(path: str | Path, *, link: str = "downlink",
                  on_zero: ZeroPolicy = "drop") -> Trace:
    """Read a Pensieve "cooked" trace: per line ``time_s  throughput_Mbit/s``.

    Fields are whitespace separated (tab in the Norway and FCC files). Only the first two
    columns are read; further columns, found in some Pensieve-derived sets, are ignored.
    Blank lines and lines starting with '#' are skipped. Pensieve traces are download
    throughput, hence ``link="downlink"`` by default.
    """
    p, lines = _read_lines(path)
    times: list[float] = []
    rates: list[float] = []
    nums: list[int] = []
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tok = s.split()
        if len(tok) < 2:
            raise QsplitInputError(
                f"{p}: line {i}: expected 2 whitespace-separated fields "
                f"'time_s Mbit/s', got {_short(line)}")
        times.append(_number(p, i, line, tok[0], "time_s (column 1)"))
        rates.append(_number(p, i, line, tok[1], "throughput in Mbit/s (column 2)") * 1e6)
        nums.append(i)
    return _finish(p, p.name, "pensieve", link, times, rates, nums, on_zero)


def read_ghent(path: str | Path, *, on_zero: ZeroPolicy = "drop") -> Trace:
    """Read a Ghent 4G/LTE log (users.ugent.be/~jvdrhoof/dataset-4g/).

    Six space-separated columns per line: epoch_ms, ms_since_start, lat, lon,
    bytes_since_last, ms_since_last. time_s = ms_since_start / 1000 and
    rate_bps = bytes_since_last * 8 / (ms_since_last / 1000). ms_since_last must be > 0.
    The logs measure HTTP downloads, hence ``link="downlink"``.
    """
    p, lines = _read_lines(path)
    times: list[float] = []
    rates: list[float] = []
    nums: list[int] = []
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tok = s.split()
        if len(tok) != 6:
            raise QsplitInputError(
                f"{p}: line {i}: expected 6 fields 'epoch_ms ms_since_start lat lon "
                f"bytes_since_last ms_since_last', got {len(tok)} in {_short(line)}")
        t_ms = _number(p, i, line, tok[1], "ms_since_start (column 2)")
        n_bytes = _number(p, i, line, tok[4], "bytes_since_last (column 5)")
        dt_ms = _number(p, i, line, tok[5], "ms_since_last (column 6)")
        if dt_ms <= 0:
            raise QsplitInputError(
                f"{p}: line {i}: expected ms_since_last (column 6) > 0, got {tok[5]!r}")
        times.append(t_ms / 1e3)
        rates.append(n_bytes * 8.0 / (dt_ms / 1e3))
        nums.append(i)
    return _finish(p, p.name, "ghent", "downlink", times, rates, nums, on_zero)


_G_THROUGHPUT = "throughput_mbps"
_G_RUN_KEY = ("carrier", "num_tcp_conn", "server_location", "run_num")


def read_5gophers(path: str | Path, *, on_zero: ZeroPolicy = "drop") -> list[Trace]:
    """Read one 5Gophers CSV (Narayanan et al., WWW 2020) into one Trace per series.

    The throughput unit is Mbit/s (``*_throughput_mbps`` columns); ``seq_num`` is a per-second
    index and becomes time_s. Three layouts exist, told apart by the header:

    * ``01-Throughput``: columns carrier, num_tcp_conn, server_location, run_num, seq_num,
      throughput_mbps: one Trace per run (carrier/connections/location/run_num, ~60 s each).
    * ``03-User-Mobility`` walking: seq_num, throughput_mbps (radio_type 4G/5G mixed, as
      measured): one Trace.
    * ``03-User-Mobility`` driving: seq_num and one ``<Carrier>_throughput_mbps`` column per
      carrier: one Trace per carrier column.

    The README does not state the link direction, so ``link="unstated"``. In the driving
    files a carrier's column is 0.0 where its series has ended (e.g. T-Mobile in trace 2 from
    second 45 on); these zeros are dropped by default and counted in ``n_zero``.
    """
    p, lines = _read_lines(path)
    rows = list(csv.reader(lines))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise QsplitInputError(f"{p}: line 1: expected a CSV header with seq_num and "
                               f"*throughput_mbps columns, got an empty file")
    header = [h.strip() for h in rows[0]]
    col = {h: j for j, h in enumerate(header)}
    rate_cols = [h for h in header if h == _G_THROUGHPUT or h.endswith("_" + _G_THROUGHPUT)]
    if "seq_num" not in col or not rate_cols:
        raise QsplitInputError(
            f"{p}: line 1: expected a 5Gophers header with 'seq_num' and a "
            f"'*throughput_mbps' column, got {_short(','.join(rows[0]))}")
    grouped = all(k in col for k in _G_RUN_KEY)

    # series key -> (times, rates, line numbers)
    series: dict[str, tuple[list[float], list[float], list[int]]] = {}
    for i, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        line = ",".join(row)
        if len(row) != len(header):
            raise QsplitInputError(
                f"{p}: line {i}: expected {len(header)} comma-separated fields as in the "
                f"header, got {len(row)} in {_short(line)}")
        t_s = _number(p, i, line, row[col["seq_num"]].strip(), "seq_num")
        for rc in rate_cols:
            mbps = _number(p, i, line, row[col[rc]].strip(), f"{rc} (Mbit/s)")
            if grouped:
                carrier, conn, loc, run = (row[col[k]].strip() for k in _G_RUN_KEY)
                key = f"{p.name}:{carrier}/{conn}conn/{loc}/run{run}"
            elif rc == _G_THROUGHPUT:
                key = p.name
            else:
                key = f"{p.name}:{rc[: -len(_G_THROUGHPUT) - 1]}"
            ts, rs, ns = series.setdefault(key, ([], [], []))
            ts.append(t_s)
            rs.append(mbps * 1e6)
            ns.append(i)
    if not series:
        raise QsplitInputError(f"{p}: empty trace, expected data rows after the header")
    return [_finish(p, key, "5gophers", "unstated", ts, rs, ns, on_zero)
            for key, (ts, rs, ns) in series.items()]


_DOC_SUFFIXES = frozenset({".md", ".txt", ".rst", ".pdf", ".json", ".yaml", ".yml", ".py"})


def _is_trace_file(p: Path) -> bool:
    """Skip documentation and licences that sit beside the traces (SOURCE.md, LICENSE...)."""
    return (p.is_file() and not p.name.startswith(".")
            and not p.name.upper().startswith(("LICENSE", "README", "SOURCE"))
            and p.suffix.lower() not in _DOC_SUFFIXES)


def detect_format(path: str | Path) -> TraceFormat:
    """Tell a trace file's format: .csv -> 5Gophers, .log -> Ghent, else by its first line.

    A first data line of 6 numeric fields is a Ghent log; 2 or more otherwise is Pensieve.
    """
    p, lines = _read_lines(path)
    if p.suffix.lower() == ".csv":
        return "5gophers"
    if p.suffix.lower() == ".log":
        return "ghent"
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        return "ghent" if len(s.split()) == 6 else "pensieve"
    raise QsplitInputError(f"{p}: empty trace, expected at least one data line")


def load_trace_folder(path: str | Path, *, on_zero: ZeroPolicy = "drop") -> list[Trace]:
    """Read every trace file in a folder (sorted by name), detecting the format per file.

    Documentation files (README*, SOURCE*, LICENSE*, *.md, ...) and hidden files are skipped.
    """
    d = Path(path)
    if not d.is_dir():
        raise QsplitInputError(f"{d}: expected a folder of trace files, none found there")
    traces: list[Trace] = []
    for p in sorted(q for q in d.iterdir() if _is_trace_file(q)):
        fmt = detect_format(p)
        if fmt == "5gophers":
            traces.extend(read_5gophers(p, on_zero=on_zero))
        elif fmt == "ghent":
            traces.append(read_ghent(p, on_zero=on_zero))
        else:
            traces.append(read_pensieve(p, on_zero=on_zero))
    if not traces:
        raise QsplitInputError(f"{d}: expected at least one trace file, found none")
    return traces


# --------------------------------------------------------------------------------------------
# Trace replay

#: Which shipped scenario lends its uplink-ratio and RTT distributions to a trace folder,
#: by a word in the folder name (checked in this order), else by the file format.
_FOLDER_PROFILE_HINTS: tuple[tuple[str, str], ...] = (
    ("hsdpa", "3g"), ("norway", "3g"), ("3g", "3g"),
    ("ghent", "lte"), ("lte", "lte"), ("4g", "lte"),
    ("5gophers", "5g"), ("5g", "5g"),
    # FCC fixed broadband: the phone reaches it through home Wi-Fi (assumption).
    ("fcc", "wifi"), ("broadband", "wifi"), ("wifi", "wifi"),
)
_FORMAT_PROFILE: dict[str, str] = {"pensieve": "3g", "ghent": "lte", "5gophers": "5g"}


@dataclass(frozen=True, eq=False)
class TraceChannel:
    """Replay measured downlink rates; draw the uplink ratio and RTT from distributions.

    A draw picks a trace uniformly (so a long trace does not outweigh short ones), then a
    sample index uniformly within it: down_bps = that rate, up_bps = down_bps * U(up_ratio_min,
    up_ratio_max), rtt_s from a clipped log-normal. The traces record neither uplink nor RTT,
    so those come from a profile: :meth:`from_traces` and :meth:`from_folder` take them from
    the shipped scenario of the same link type (``SCENARIOS[profile]``). Traces whose link is
    "unstated" (5Gophers) are used as downlink.
    """

    name: str
    traces: tuple[Trace, ...]
    up_ratio_min: float
    up_ratio_max: float
    rtt_median_ms: float
    rtt_sigma_ln: float
    rtt_min_ms: float
    rtt_max_ms: float
    source: str = ""
    _rates_bps: np.ndarray = field(init=False, repr=False, compare=False)
    _offsets: np.ndarray = field(init=False, repr=False, compare=False)
    _lengths: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise QsplitInputError(f"name: expected a non-empty string, got {self.name!r}")
        traces = tuple(self.traces)
        if not traces or not all(isinstance(t, Trace) for t in traces):
            raise QsplitInputError("traces: expected a non-empty sequence of Trace objects")
        object.__setattr__(self, "traces", traces)
        pos = {"lo": 0.0, "lo_open": True}
        for f in ("up_ratio_min", "up_ratio_max", "rtt_median_ms", "rtt_min_ms", "rtt_max_ms"):
            object.__setattr__(self, f, check_finite(f, getattr(self, f), **pos))
        object.__setattr__(self, "rtt_sigma_ln",
                           check_finite("rtt_sigma_ln", self.rtt_sigma_ln, lo=0.0, hi=5.0))
        _check_range("up_ratio_min", self.up_ratio_min, "up_ratio_max", self.up_ratio_max)
        _check_range("rtt_min_ms", self.rtt_min_ms, "rtt_max_ms", self.rtt_max_ms)
        check_finite("rtt_median_ms", self.rtt_median_ms, lo=self.rtt_min_ms, hi=self.rtt_max_ms)
        lengths = np.array([len(t) for t in traces], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        rates = np.concatenate([t.rate_bps for t in traces])
        for a in (lengths, offsets, rates):
            a.setflags(write=False)
        object.__setattr__(self, "_lengths", lengths)
        object.__setattr__(self, "_offsets", offsets)
        object.__setattr__(self, "_rates_bps", rates)

    @classmethod
    def from_traces(cls, traces: Iterable[Trace], *, profile: str = "lte",
                    name: str | None = None) -> TraceChannel:
        """Replay ``traces`` with the uplink ratio and RTT of the shipped scenario ``profile``."""
        get_channel(profile)  # refuses an unknown profile, listing the allowed names
        base = SCENARIOS[profile.strip().lower()]
        traces = tuple(traces)
        return cls(
            name=name or f"trace-{base.name}",
            traces=traces,
            up_ratio_min=base.up_ratio_min,
            up_ratio_max=base.up_ratio_max,
            rtt_median_ms=base.rtt_median_ms,
            rtt_sigma_ln=base.rtt_sigma_ln,
            rtt_min_ms=base.rtt_min_ms,
            rtt_max_ms=base.rtt_max_ms,
            source=(f"down rates replayed from {len(traces)} trace(s); up/down ratio and RTT "
                    f"from scenario {base.name!r}: {base.source}"),
        )

    @classmethod
    def from_folder(cls, path: str | Path, *, profile: str | None = None,
                    name: str | None = None, on_zero: ZeroPolicy = "drop") -> TraceChannel:
        """Read a trace folder and replay it; ``profile`` None infers the link type.

        Inference: a word in the folder name (norway/hsdpa -> 3g, ghent -> lte, 5gophers
        -> 5g, fcc/broadband -> wifi), else the format (pensieve -> 3g, ghent -> lte,
        5gophers -> 5g).
        """
        traces = load_trace_folder(path, on_zero=on_zero)
        if profile is None:
            folder = Path(path).resolve().name.lower()
            profile = next((prof for word, prof in _FOLDER_PROFILE_HINTS if word in folder),
                           _FORMAT_PROFILE[traces[0].fmt])
        return cls.from_traces(traces, profile=profile, name=name or Path(path).name)

    def sample(self, rng: np.random.Generator, n: int) -> ChannelSamples:
        """Draw n link states: trace, then index, then ratio, then RTT, in that fixed order."""
        n = _check_rng_n(rng, n)
        which = rng.integers(0, self._lengths.size, n)
        within = np.floor(rng.random(n) * self._lengths[which]).astype(np.int64)
        # rng.random() < 1 so within < length; the min() guards float rounding at the edge.
        within = np.minimum(within, self._lengths[which] - 1)
        down_bps = self._rates_bps[self._offsets[which] + within]
        ratio = rng.uniform(self.up_ratio_min, self.up_ratio_max, n)
        rtt_ms = _lognormal_clipped(rng, n, self.rtt_median_ms, self.rtt_sigma_ln,
                                    self.rtt_min_ms, self.rtt_max_ms)
        return ChannelSamples(up_bps=down_bps * ratio, down_bps=down_bps, rtt_s=rtt_ms / 1e3)
