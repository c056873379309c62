"""Scenarios: the population of requests a planner (or a policy in training) faces.

A scenario says which catalog devices ask (with load and clock-frequency jitter), which server
answers (with its load), which channels carry the traffic (shipped links or trace replay, from
:mod:`system.channel`), and how the accuracy budget ``eps_pp``, the energy weight
``beta_s_per_j`` and the head ``reuse`` are distributed. :func:`sample_requests` draws
:class:`~system.request.Request` objects from it, deterministically from a numpy Generator.

The YAML form is loaded strictly: unknown keys are refused, every range is checked (an empty
``min == max`` or inverted ``min > max`` range, a distribution reaching outside the field's
valid range, an empty device or channel list are errors that name the field), so a typo
cannot silently train a policy on the wrong population. Field names carry their units.

Where scenarios are found (:func:`load_scenario`): a dict; a path to a ``.yaml`` file; or a
name, looked up as ``<name>.yaml`` in :func:`scenario_dirs`: ``$QSPLIT_CONFIG_DIR/scenarios``
if set, the repository's ``configs/scenarios`` (which an editable install keeps), then the
package's ``system/data/scenarios`` (the shipped ``default``), so the default scenario loads
even from a wheel without the configs folder. Every one is read by :func:`load_scenario_file`.

numpy only (PyYAML imported lazily when a file is read): the runtime may import this module.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from system.channel import Channel, TraceChannel, get_link
from system.errors import QsplitInputError, check_finite, check_keys, shown
from system.fields import FIELD_BY_NAME
from system.hardware import Device, Server, device_names, get_device, get_server, server_names
from system.loaders import is_dir, is_file, parse_yaml, read_text, user_path
from system.request import Request

SCENARIO_FORMAT = "qsplit-scenario/1"
DIST_KINDS = ("fixed", "uniform", "log_uniform", "choice")
_TOP_REQUIRED = ("name", "server", "devices", "channels", "eps_pp", "beta_s_per_j", "reuse")
_TOP_OPTIONAL = ("format", "description", "server_load", "device_load", "device_freq_factor")
_REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: The shipped scenarios (``default``), found even where the configs folder is not installed.
_PACKAGE_SCENARIOS = Path(__file__).resolve().parent / "data" / "scenarios"

#: Valid range of each distributed field: (lo, hi, lo_open). Draws must stay inside.
_FIELD_RANGES: dict[str, tuple[float, float, bool]] = {
    **{name: (FIELD_BY_NAME[field].lo, FIELD_BY_NAME[field].hi, FIELD_BY_NAME[field].lo_open)
       for name, field in (("eps_pp", "eps_pp"), ("beta_s_per_j", "beta_s_per_j"),
                           ("reuse", "reuse"), ("server_load", "srv_load"))},
    "device_load": (0.0, 1.0, True),
    "device_freq_factor": (0.0, 10.0, True),
}


@dataclass(frozen=True)
class Dist:
    """A scalar distribution: fixed value, uniform, log-uniform, or a weighted choice."""

    kind: str
    lo: float = 0.0                          # fixed: the value; uniform / log_uniform: min
    hi: float = 0.0                          # uniform / log_uniform: max
    values: tuple[float, ...] = ()           # choice
    weights: tuple[float, ...] = ()          # choice, relative weights

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n draws (always consumes the generator the same way for a given kind)."""
        if self.kind == "fixed":
            return np.full(n, self.lo)
        if self.kind == "uniform":
            return rng.uniform(self.lo, self.hi, n)
        if self.kind == "log_uniform":
            return np.exp(rng.uniform(math.log(self.lo), math.log(self.hi), n))
        w = np.asarray(self.weights)
        idx = rng.choice(len(self.values), size=n, p=w / w.sum())
        return np.asarray(self.values, dtype=np.float64)[idx]

    @property
    def support(self) -> tuple[float, float]:
        """Smallest and largest value a draw can take."""
        if self.kind == "fixed":
            return self.lo, self.lo
        if self.kind == "choice":
            return min(self.values), max(self.values)
        return self.lo, self.hi

    def to_dict(self) -> dict:
        """The YAML form."""
        if self.kind == "fixed":
            return {"dist": "fixed", "value": self.lo}
        if self.kind == "choice":
            return {"dist": "choice", "values": list(self.values), "weights": list(self.weights)}
        return {"dist": self.kind, "min": self.lo, "max": self.hi}


def parse_dist(field: str, data: object) -> Dist:
    """A :class:`Dist` from its YAML form; the support must lie in the field's valid range."""
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        data = {"dist": "fixed", "value": data}
    if not isinstance(data, dict) or "dist" not in data:
        raise QsplitInputError(
            f"{field}: expected a number or a mapping with 'dist' one of {list(DIST_KINDS)}")
    kind = data["dist"]
    if kind not in DIST_KINDS:
        raise QsplitInputError(f"{field}.dist: {shown(kind)} is not one of {list(DIST_KINDS)}")
    lo_f, hi_f, lo_open = _FIELD_RANGES[field]
    rng_kw = {"lo": lo_f, "hi": None if math.isinf(hi_f) else hi_f, "lo_open": lo_open}
    if kind == "fixed":
        check_keys(field, data, ["dist", "value"])
        return Dist("fixed", lo=check_finite(f"{field}.value", data["value"], **rng_kw))
    if kind in ("uniform", "log_uniform"):
        check_keys(field, data, ["dist", "min", "max"])
        if kind == "log_uniform":
            rng_kw = {**rng_kw, "lo": max(lo_f, 0.0), "lo_open": lo_f <= 0.0 or lo_open}
        lo = check_finite(f"{field}.min", data["min"], **rng_kw)
        hi = check_finite(f"{field}.max", data["max"], **rng_kw)
        if lo > hi:
            raise QsplitInputError(
                f"{field}: inverted range, min={lo:g} > max={hi:g}; expected min < max")
        if lo == hi:
            raise QsplitInputError(
                f"{field}: empty range, min = max = {lo:g}; expected min < max "
                f"(write {{dist: fixed, value: {lo:g}}} for a constant)")
        return Dist(kind, lo=lo, hi=hi)
    check_keys(field, data, ["dist", "values"], ["weights"])
    vals = data["values"]
    if not isinstance(vals, list) or not vals:
        raise QsplitInputError(f"{field}.values: expected a non-empty list of numbers")
    values = tuple(check_finite(f"{field}.values[{i}]", v, **rng_kw) for i, v in enumerate(vals))
    weights = _weights(f"{field}.weights", data.get("weights", [1.0] * len(values)), len(values))
    return Dist("choice", values=values, weights=weights)


def _weights(field: str, raw: object, n: int) -> tuple[float, ...]:
    """Non-negative weights of length n with a positive sum (kept as given; draws normalise)."""
    if not isinstance(raw, list) or len(raw) != n:
        raise QsplitInputError(f"{field}: expected a list of {n} non-negative numbers")
    w = [check_finite(f"{field}[{i}]", x, lo=0.0) for i, x in enumerate(raw)]
    total = sum(w)
    if total <= 0.0:
        raise QsplitInputError(f"{field}: weights must not all be zero")
    return tuple(w)


@dataclass(frozen=True)
class ChannelEntry:
    """One component of the channel mixture: a shipped link or a trace folder."""

    weight: float
    name: str = ""            # a shipped link ("3g", "lte", "5g", "wifi")
    trace_folder: str = ""    # or a folder of traces (resolved path)
    link: str = ""            # the shipped link whose uplink ratio and RTT a trace replay uses

    def build(self) -> Channel:
        """The :class:`~system.channel.Channel` object this entry stands for."""
        if self.name:
            return get_link(self.name)
        return TraceChannel.from_folder(self.trace_folder, link=self.link or None)

    def to_dict(self) -> dict:
        """The YAML form."""
        if self.name:
            return {"name": self.name, "weight": self.weight}
        out = {"trace_folder": self.trace_folder, "weight": self.weight}
        if self.link:
            out["link"] = self.link
        return out


@dataclass(frozen=True, eq=False)
class Scenario:
    """A validated request population (see the module docstring for the YAML form)."""

    name: str
    description: str
    server: str
    server_load: Dist
    device_names: tuple[str, ...]
    device_weights: tuple[float, ...]
    device_load: Dist
    device_freq_factor: Dist
    channel_entries: tuple[ChannelEntry, ...]
    channels: tuple[Channel, ...]
    eps_pp: Dist
    beta_s_per_j: Dist
    reuse: Dist

    def to_dict(self) -> dict:
        """The YAML form (``load_scenario(s.to_dict())`` gives an equal scenario)."""
        return {
            "format": SCENARIO_FORMAT, "name": self.name, "description": self.description,
            "server": self.server, "server_load": self.server_load.to_dict(),
            "devices": dict(zip(self.device_names, self.device_weights, strict=True)),
            "device_load": self.device_load.to_dict(),
            "device_freq_factor": self.device_freq_factor.to_dict(),
            "channels": [e.to_dict() for e in self.channel_entries],
            "eps_pp": self.eps_pp.to_dict(), "beta_s_per_j": self.beta_s_per_j.to_dict(),
            "reuse": self.reuse.to_dict(),
        }


def scenario_from_dict(data: object, where: str = "scenario",
                       base_dir: Path | None = None) -> Scenario:
    """Build a scenario from its YAML form; ``base_dir`` resolves relative trace folders."""
    d = check_keys(where, data, _TOP_REQUIRED, _TOP_OPTIONAL)
    if "format" in d and d["format"] != SCENARIO_FORMAT:
        raise QsplitInputError(
            f"{where}.format: expected {SCENARIO_FORMAT!r}, got {shown(d['format'])}")
    name = d["name"]
    if not isinstance(name, str) or not name:
        raise QsplitInputError(f"{where}.name: expected a non-empty string")
    desc = d.get("description", "")
    if not isinstance(desc, str):
        raise QsplitInputError(f"{where}.description: expected a string")
    server = d["server"]
    if server not in server_names():
        raise QsplitInputError(f"{where}.server: unknown server {shown(server)}; known: {server_names()}")
    devs = d["devices"]
    if not isinstance(devs, dict) or not devs:
        raise QsplitInputError(
            f"{where}.devices: expected a non-empty mapping of catalog device name -> weight; "
            f"known devices: {device_names()}")
    for dn in devs:
        if dn not in device_names():
            raise QsplitInputError(
                f"{where}.devices: unknown device {shown(dn)}; known: {device_names()}")
    dev_w = _weights(f"{where}.devices (weights)", list(devs.values()), len(devs))
    entries = _parse_channels(f"{where}.channels", d["channels"], base_dir)
    ds = {f: parse_dist(f, d.get(f, 1.0)) for f in
          ("server_load", "device_load", "device_freq_factor")}
    return Scenario(
        name=name, description=desc, server=server, server_load=ds["server_load"],
        device_names=tuple(devs), device_weights=dev_w, device_load=ds["device_load"],
        device_freq_factor=ds["device_freq_factor"], channel_entries=entries,
        channels=tuple(e.build() for e in entries), eps_pp=parse_dist("eps_pp", d["eps_pp"]),
        beta_s_per_j=parse_dist("beta_s_per_j", d["beta_s_per_j"]),
        reuse=parse_dist("reuse", d["reuse"]))


def _parse_channels(where: str, raw: object, base_dir: Path | None) -> tuple[ChannelEntry, ...]:
    if not isinstance(raw, list) or not raw:
        raise QsplitInputError(
            f"{where}: expected a non-empty list of {{name: 3g|lte|5g|wifi, weight: w}} or "
            f"{{trace_folder: path, weight: w, link: 3g|lte|5g|wifi}}")
    out = []
    weights = _weights(f"{where} (weights)",
                       [e.get("weight", 1.0) if isinstance(e, dict) else None for e in raw],
                       len(raw))
    for i, (e, w) in enumerate(zip(raw, weights, strict=True)):
        ew = f"{where}[{i}]"
        if isinstance(e, dict) and "trace_folder" in e:
            check_keys(ew, e, ["trace_folder"], ["weight", "link"])
            folder = user_path(e["trace_folder"], base_dir)
            if not is_dir(folder):
                raise QsplitInputError(f"{ew}.trace_folder: {folder} is not a folder")
            link = e.get("link", "")
            if link:
                get_link(link, where=f"{ew}.link")
            out.append(ChannelEntry(weight=w, trace_folder=str(folder.resolve()), link=link))
        else:
            check_keys(ew, e, ["name"], ["weight"])
            get_link(e["name"], where=f"{ew}.name")   # an unknown name is refused, listing all
            out.append(ChannelEntry(weight=w, name=str(e["name"]).strip().lower()))
    return tuple(out)


def config_dirs(kind: str) -> list[Path]:
    """Folders searched for a ``kind`` of config ("scenarios", "eval"), first match wins.

    ``$QSPLIT_CONFIG_DIR/<kind>`` when that variable is set (a user's own configs shadow the
    shipped ones), then the repository's ``configs/<kind>`` (present in an editable install).
    """
    env = os.environ.get("QSPLIT_CONFIG_DIR")
    return [*([Path(env) / kind] if env else []), _REPO_CONFIGS / kind]


def scenario_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, first match wins; the package's own come last."""
    return [*config_dirs("scenarios"), _PACKAGE_SCENARIOS]


def scenario_names() -> list[str]:
    """Names :func:`load_scenario` accepts without a path."""
    return sorted({p.stem for d in scenario_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def load_scenario_file(path: str | Path) -> Scenario:
    """Read a scenario YAML file; errors name the file and the field."""
    p = Path(path)
    data = parse_yaml(read_text(p, "scenario"), f"scenario {p.name}")
    return scenario_from_dict(data, where=f"scenario {p.name}", base_dir=p.resolve().parent)


def load_scenario(spec: str | Path | dict | Scenario = "default") -> Scenario:
    """A scenario from a dict, a YAML path, or a name (see the module docstring)."""
    if isinstance(spec, Scenario):
        return spec
    if isinstance(spec, dict):
        return scenario_from_dict(spec)
    key = str(spec)
    if key.endswith((".yaml", ".yml")) or os.sep in key or is_file(key):
        return load_scenario_file(key)
    for d in scenario_dirs():
        f = d / f"{key}.yaml"
        if is_file(f):
            return load_scenario_file(f)
    raise QsplitInputError(
        f"scenario: unknown scenario {shown(key)}; known: {scenario_names()} or a path to a .yaml file")


def sample_requests(scenario: Scenario, rng: np.random.Generator, n: int) -> list[Request]:
    """n requests drawn from the scenario; same generator state, same requests.

    Draw order (fixed, for reproducibility): device index, device load, device frequency
    factor, server load, channel component, then each component's link states in entry order,
    then eps_pp, beta_s_per_j, reuse. Device FLOP/s = catalog FLOP/s * load * frequency factor.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise QsplitInputError(f"n: expected an integer >= 1, got {shown(n)}")
    n = int(n)
    s = scenario
    dw = np.asarray(s.device_weights)
    dev_idx = rng.choice(len(dw), size=n, p=dw / dw.sum())
    speed = s.device_load.sample(rng, n) * s.device_freq_factor.sample(rng, n)
    srv_load = s.server_load.sample(rng, n)
    w = np.asarray([e.weight for e in s.channel_entries])
    comp = rng.choice(len(w), size=n, p=w / w.sum())
    up = np.empty(n)
    down = np.empty(n)
    rtt = np.empty(n)
    for j, ch in enumerate(s.channels):
        sel = np.flatnonzero(comp == j)
        if sel.size:
            cs = ch.sample(rng, int(sel.size))
            up[sel], down[sel], rtt[sel] = cs.up_bps, cs.down_bps, cs.rtt_s
    eps = s.eps_pp.sample(rng, n)
    beta = s.beta_s_per_j.sample(rng, n)
    reuse = s.reuse.sample(rng, n)
    devices, server = _hardware(s.device_names, s.server)
    return [Request.make(devices[dev_idx[i]], server, up_bps=float(up[i]),
                         down_bps=float(down[i]), rtt_s=float(rtt[i]), eps_pp=float(eps[i]),
                         beta_s_per_j=float(beta[i]), reuse=float(reuse[i]),
                         srv_load=float(srv_load[i]), dev_speed_factor=float(speed[i]))
            for i in range(n)]


@lru_cache(maxsize=64)
def _hardware(device_names: tuple[str, ...], server: str) -> tuple[list[Device], Server]:
    """Catalog objects of a scenario (built once: a one-request draw must stay cheap)."""
    return [get_device(dn) for dn in device_names], get_server(server)
