"""Measured rate traces: one :class:`Trace` type and readers for the formats the project replays.

Pensieve "cooked" files (Norway HSDPA 3G, FCC broadband), the Ghent 4G/LTE logs and the
5Gophers CSVs; :func:`load_trace_folder` detects the format per file and :func:`infer_link`
names the shipped link whose uplink ratio and RTT a folder's replay borrows. Every reader
refuses a malformed line with the file, the line number and what was expected.

numpy only: the runtime may import this module.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from system.errors import QsplitInputError

__all__ = [
    "ZERO_FLOOR_BPS",
    "Trace",
    "TraceFormat",
    "ZeroPolicy",
    "detect_format",
    "infer_link",
    "load_trace_folder",
    "read_5gophers",
    "read_ghent",
    "read_pensieve",
]

#: Rate given to a zero-rate trace sample under ``on_zero="floor"`` (1 kbit/s: an outage that
#: still gives a finite latency). The default policy drops zero samples instead.
ZERO_FLOOR_BPS: float = 1.0e3

ZeroPolicy = Literal["drop", "floor"]
TraceFormat = Literal["pensieve", "ghent", "5gophers", "mahimahi"]


@dataclass(frozen=True, eq=False)
class Trace:
    """One measured rate time series, rates in bit/s.

    ``direction`` is the one the source states ("downlink", or "unstated" for 5Gophers, whose
    README does not say). ``n_zero`` counts the zero-rate samples in the file and
    ``zero_policy`` what was done with them: "drop" removes them (the default; a zero rate
    would make any transfer infinite), "floor" sets them to ``ZERO_FLOOR_BPS``.
    """

    name: str
    time_s: np.ndarray
    rate_bps: np.ndarray
    direction: str
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


def _finish(p: Path, name: str, fmt: str, direction: str, time_s: Sequence[float],
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
    return Trace(name=name, time_s=t, rate_bps=r, direction=direction, path=str(p), fmt=fmt,
                 n_zero=n_zero, zero_policy=on_zero)


def _data_lines(lines: list[str]) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, line, whitespace-separated fields) of each line that is not blank or '#'."""
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            yield i, line, s.split()


def read_pensieve(path: str | Path, *, direction: str = "downlink",
                  on_zero: ZeroPolicy = "drop") -> Trace:
    """Read a Pensieve "cooked" trace: per line ``time_s  throughput_Mbit/s``.

    Fields are whitespace separated (tab in the Norway and FCC files). Only the first two
    columns are read; further columns, found in some Pensieve-derived sets, are ignored.
    Blank lines and lines starting with '#' are skipped. Pensieve traces are download
    throughput, hence ``direction="downlink"`` by default.
    """
    p, lines = _read_lines(path)
    times: list[float] = []
    rates: list[float] = []
    nums: list[int] = []
    for i, line, tok in _data_lines(lines):
        if len(tok) < 2:
            raise QsplitInputError(
                f"{p}: line {i}: expected 2 whitespace-separated fields "
                f"'time_s Mbit/s', got {_short(line)}")
        times.append(_number(p, i, line, tok[0], "time_s (column 1)"))
        rates.append(_number(p, i, line, tok[1], "throughput in Mbit/s (column 2)") * 1e6)
        nums.append(i)
    return _finish(p, p.name, "pensieve", direction, times, rates, nums, on_zero)


def read_ghent(path: str | Path, *, on_zero: ZeroPolicy = "drop") -> Trace:
    """Read a Ghent 4G/LTE log (users.ugent.be/~jvdrhoof/dataset-4g/).

    Six space-separated columns per line: epoch_ms, ms_since_start, lat, lon,
    bytes_since_last, ms_since_last. time_s = ms_since_start / 1000 and
    rate_bps = bytes_since_last * 8 / (ms_since_last / 1000). ms_since_last must be > 0.
    The logs measure HTTP downloads, hence ``direction="downlink"``.
    """
    p, lines = _read_lines(path)
    times: list[float] = []
    rates: list[float] = []
    nums: list[int] = []
    for i, line, tok in _data_lines(lines):
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

    The README does not state the link direction, so ``direction="unstated"``. In the driving
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


MAHIMAHI_PACKET_BYTES = 1500


def mahimahi_stamps(path: str | Path) -> tuple[Path, np.ndarray]:
    """The delivery-opportunity timestamps (ms, non-decreasing) of a Mahimahi trace file."""
    p, lines = _read_lines(path)
    stamps: list[float] = []
    for i, line, tok in _data_lines(lines):
        if len(tok) != 1:
            raise QsplitInputError(f"{p}: line {i}: expected one field 'ms', got {_short(line)}")
        ms = _number(p, i, line, tok[0], "timestamp in ms")
        if ms < 0 or (stamps and ms < stamps[-1]):
            raise QsplitInputError(f"{p}: line {i}: expected a timestamp >= 0 and not below the "
                                   f"previous one, got {tok[0]}")
        stamps.append(ms)
    if not stamps:
        raise QsplitInputError(f"{p}: empty trace, expected at least one timestamp")
    return p, np.asarray(stamps, dtype=np.float64)


def mahimahi_direction(p: Path) -> str:
    """A Mahimahi file's direction, from its suffix (.up / .down)."""
    return {".up": "uplink", ".down": "downlink"}.get(p.suffix.lower(), "unstated")


def read_mahimahi(path: str | Path, *, bin_s: float = 0.1, on_zero: ZeroPolicy = "drop") -> Trace:
    """Read a Mahimahi link trace as binned rates (see :mod:`system.linktrace` for the exact
    capacity a transfer drains through).

    A timestamp repeated k times is k packets in that millisecond. The file loops at its end
    (period: the last timestamp, rounded up to a whole bin). Opportunities are counted per
    ``bin_s`` bin from 0; the Trace's samples are the bins' start times and rates
    (packets x 1500 x 8 / bin_s). The direction is the file's suffix (.up / .down).
    """
    if not (isinstance(bin_s, (int, float)) and math.isfinite(bin_s) and 0.001 <= bin_s <= 60):
        raise QsplitInputError(f"bin_s: {bin_s!r} s is outside [0.001, 60]")
    p, stamps = mahimahi_stamps(path)
    n_bins = max(1, math.ceil(stamps[-1] / 1e3 / bin_s))
    idx = np.minimum((stamps / 1e3 / bin_s).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    rates = counts * MAHIMAHI_PACKET_BYTES * 8.0 / bin_s
    return _finish(p, p.name, "mahimahi", mahimahi_direction(p), np.arange(n_bins) * bin_s,
                   rates, list(range(1, n_bins + 1)), on_zero)


_DOC_SUFFIXES = frozenset({".md", ".txt", ".rst", ".pdf", ".json", ".yaml", ".yml", ".py"})


def _is_trace_file(p: Path) -> bool:
    """Skip documentation and licences that sit beside the traces (SOURCE.md, LICENSE...)."""
    return (p.is_file() and not p.name.startswith(".")
            and not p.name.upper().startswith(("LICENSE", "README", "SOURCE"))
            and p.suffix.lower() not in _DOC_SUFFIXES)


def detect_format(path: str | Path) -> TraceFormat:
    """Tell a trace file's format: .csv -> 5Gophers, .log -> Ghent, .up/.down -> Mahimahi,
    else by its first data line: 6 fields Ghent, 1 field Mahimahi, 2 or more Pensieve.
    """
    p, lines = _read_lines(path)
    suffix = {".csv": "5gophers", ".log": "ghent", ".up": "mahimahi", ".down": "mahimahi"}
    if p.suffix.lower() in suffix:
        return suffix[p.suffix.lower()]  # type: ignore[return-value]
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        n = len(s.split())
        return "ghent" if n == 6 else "mahimahi" if n == 1 else "pensieve"
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
        elif fmt == "mahimahi":
            traces.append(read_mahimahi(p, on_zero=on_zero))
        else:
            traces.append(read_pensieve(p, on_zero=on_zero))
    if not traces:
        raise QsplitInputError(f"{d}: expected at least one trace file, found none")
    return traces


#: Which shipped link lends its uplink-ratio and RTT distributions to a trace folder, by a word
#: in the folder name (checked in this order), else by the file format.
_FOLDER_LINK_HINTS: tuple[tuple[str, str], ...] = (
    ("hsdpa", "3g"), ("norway", "3g"), ("3g", "3g"),
    ("umts", "3g"), ("ghent", "lte"), ("lte", "lte"), ("4g", "lte"),
    ("5gophers", "5g"), ("5g", "5g"),
    # FCC fixed broadband: the phone reaches it through home Wi-Fi (assumption).
    ("fcc", "wifi"), ("broadband", "wifi"), ("wifi", "wifi"),
)
_FORMAT_LINK: dict[str, str] = {"pensieve": "3g", "ghent": "lte", "5gophers": "5g",
                                 "mahimahi": "lte"}


def infer_link(folder: str | Path, traces: Sequence[Trace]) -> str:
    """The shipped link whose uplink ratio and RTT a replay of this folder borrows.

    The traces record neither the uplink nor the RTT. Chosen by a word in the folder name:
    norway/hsdpa -> 3g, ghent -> lte, 5gophers -> 5g, fcc/broadband -> wifi; otherwise pensieve
    -> 3g, ghent -> lte, 5gophers -> 5g.
    """
    name = Path(folder).resolve().name.lower()
    return next((link for word, link in _FOLDER_LINK_HINTS if word in name),
                _FORMAT_LINK[traces[0].fmt])
