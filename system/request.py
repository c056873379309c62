"""A request: the state the planner decides on (device, server, channel, budget, weights).

Internally everything is SI (FLOP/s, bit/s, s, W, J). The JSON form a user writes uses the
units people quote (GFLOP/s, Mbit/s, ms) and says so in every field name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from system.bits import KERNEL_WIDTHS
from system.errors import QsplitInputError, check_finite, check_keys
from system.hardware import Device, Server, get_device, get_server, kappa_to_dict, parse_kappa


@dataclass(frozen=True)
class Request:
    """Everything one decision depends on. Validated on construction; nothing is clamped."""

    dev_flops_per_s: float      # device effective fp32 FLOP/s
    dev_kappa: tuple[float, ...]  # device speedup per kernel width (KERNEL_WIDTHS), 0 = none
    p_comp_w: float             # device power computing
    p_tx_w: float               # device power transmitting
    p_rx_w: float               # device power receiving
    p_idle_w: float             # device power waiting for the server
    srv_flops_per_s: float      # server effective fp32 FLOP/s
    srv_load: float             # share of the server available to this request, (0, 1]
    up_bps: float               # uplink rate
    down_bps: float             # downlink rate
    rtt_s: float                # round-trip time
    eps_pp: float               # accuracy budget, percentage points of top-1
    beta_s_per_j: float = 0.0   # energy weight: cost = latency_s + beta * energy_j
    reuse: float = 1.0          # inferences served by one shipped head (1 = ship per request)
    device: str = ""            # label only
    server: str = ""            # label only

    def __post_init__(self) -> None:
        pos = {"lo": 0.0, "lo_open": True}
        check_finite("dev_flops_per_s", self.dev_flops_per_s, **pos)
        check_finite("srv_flops_per_s", self.srv_flops_per_s, **pos)
        check_finite("srv_load", self.srv_load, lo=0.0, hi=1.0, lo_open=True)
        check_finite("up_bps", self.up_bps, **pos)
        check_finite("down_bps", self.down_bps, **pos)
        check_finite("rtt_s", self.rtt_s, lo=0.0)
        check_finite("eps_pp", self.eps_pp, lo=0.0, hi=100.0)
        check_finite("beta_s_per_j", self.beta_s_per_j, lo=0.0)
        check_finite("reuse", self.reuse, lo=1.0)
        for f in ("p_comp_w", "p_tx_w", "p_rx_w", "p_idle_w"):
            check_finite(f, getattr(self, f), lo=0.0)
        if len(self.dev_kappa) != len(KERNEL_WIDTHS):
            raise QsplitInputError(
                f"dev_kappa: expected {len(KERNEL_WIDTHS)} entries for widths {KERNEL_WIDTHS}")
        for w, k in zip(KERNEL_WIDTHS, self.dev_kappa, strict=True):
            check_finite(f"dev_kappa[{w}]", k, lo=0.0)
        if self.dev_kappa[-1] != 1.0:
            raise QsplitInputError("dev_kappa[32]: must be 1.0 (speedups are relative to fp32)")

    @classmethod
    def make(cls, device: Device, server: Server, *, up_bps: float, down_bps: float,
             rtt_s: float, eps_pp: float, beta_s_per_j: float = 0.0, reuse: float = 1.0,
             srv_load: float = 1.0, dev_speed_factor: float = 1.0) -> Request:
        """A request for catalog hardware; ``dev_speed_factor`` scales the device's FLOP/s."""
        return cls(dev_flops_per_s=device.flops_per_s * dev_speed_factor, dev_kappa=device.kappa,
                   p_comp_w=device.p_comp_w, p_tx_w=device.p_tx_w, p_rx_w=device.p_rx_w,
                   p_idle_w=device.p_idle_w, srv_flops_per_s=server.flops_per_s,
                   srv_load=srv_load, up_bps=up_bps, down_bps=down_bps, rtt_s=rtt_s,
                   eps_pp=eps_pp, beta_s_per_j=beta_s_per_j, reuse=reuse,
                   device=device.name, server=server.name)

    def with_budget(self, eps_pp: float) -> Request:
        """The same request with another accuracy budget."""
        return replace(self, eps_pp=eps_pp)

    def to_json_dict(self) -> dict:
        """The user-facing JSON form (GFLOP/s, Mbit/s, ms), fully explicit."""
        d = asdict(self)
        out = {
            "dev_gflops": d["dev_flops_per_s"] / 1e9, "dev_kappa": kappa_to_dict(self.dev_kappa),
            "p_comp_w": d["p_comp_w"], "p_tx_w": d["p_tx_w"], "p_rx_w": d["p_rx_w"],
            "p_idle_w": d["p_idle_w"], "srv_gflops": d["srv_flops_per_s"] / 1e9,
            "srv_load": d["srv_load"], "up_mbps": d["up_bps"] / 1e6,
            "down_mbps": d["down_bps"] / 1e6, "rtt_ms": d["rtt_s"] * 1e3,
            "eps_pp": d["eps_pp"], "beta_s_per_j": d["beta_s_per_j"], "reuse": d["reuse"],
        }
        if self.device:
            out["device"] = self.device
        if self.server:
            out["server"] = self.server
        return out


#: Fields of the request JSON, with units. ``device`` / ``server`` name catalog entries whose
#: figures fill in any device / server field not given explicitly.
REQUEST_JSON_FIELDS: dict[str, str] = {
    "device": "catalog device name (optional if every dev_* and p_* field is given)",
    "dev_gflops": "device effective fp32 compute, GFLOP/s, > 0",
    "dev_speed_factor": "multiplier on the catalog device's compute (load, DVFS), > 0; default 1",
    "dev_kappa": "device kernel speedups over fp32 keyed by width {'4','8','16','32'}; '32' = 1",
    "p_comp_w": "device power computing, W, >= 0",
    "p_tx_w": "device power transmitting, W, >= 0",
    "p_rx_w": "device power receiving, W, >= 0",
    "p_idle_w": "device power waiting, W, >= 0",
    "server": "catalog server name (optional if srv_gflops is given)",
    "srv_gflops": "server effective fp32 compute, GFLOP/s, > 0",
    "srv_load": "share of the server available, (0, 1]; default 1",
    "up_mbps": "uplink rate, Mbit/s, > 0",
    "down_mbps": "downlink rate, Mbit/s, > 0",
    "rtt_ms": "round-trip time, ms, >= 0",
    "eps_pp": "accuracy budget, percentage points of top-1, [0, 100]",
    "beta_s_per_j": "energy weight in cost = latency_s + beta * energy_j, s/J, >= 0; default 0",
    "reuse": "inferences served by one shipped head, >= 1; default 1 (ship per request)",
}
_REQUIRED = ("up_mbps", "down_mbps", "rtt_ms", "eps_pp")


def request_from_json_dict(data: object, where: str = "request") -> Request:
    """Build a request from its JSON form; errors name the field and the allowed range."""
    d = check_keys(where, data, _REQUIRED, [k for k in REQUEST_JSON_FIELDS if k not in _REQUIRED])
    dev_fields: dict[str, object] = {}
    if "device" in d:
        dev = get_device(str(d["device"]))
        dev_fields = {"dev_gflops": dev.flops_per_s / 1e9, "dev_kappa": kappa_to_dict(dev.kappa),
                      "p_comp_w": dev.p_comp_w, "p_tx_w": dev.p_tx_w, "p_rx_w": dev.p_rx_w,
                      "p_idle_w": dev.p_idle_w}
    srv_fields: dict[str, object] = {}
    if "server" in d:
        srv_fields = {"srv_gflops": get_server(str(d["server"])).flops_per_s / 1e9}
    merged = {**dev_fields, **srv_fields, **d}
    for k in ("dev_gflops", "dev_kappa", "p_comp_w", "p_tx_w", "p_rx_w", "p_idle_w",
              "srv_gflops"):
        if k not in merged:
            raise QsplitInputError(
                f"{where}: missing {k!r} ({REQUEST_JSON_FIELDS[k]}); give it or name a catalog "
                f"{'server' if k.startswith('srv') else 'device'}")
    speed = check_finite("dev_speed_factor", merged.get("dev_speed_factor", 1.0), lo=0.0,
                         lo_open=True)
    num = {k: check_finite(k, merged[k]) for k in (
        "dev_gflops", "p_comp_w", "p_tx_w", "p_rx_w", "p_idle_w", "srv_gflops", "up_mbps",
        "down_mbps", "rtt_ms", "eps_pp")}
    return Request(
        dev_flops_per_s=num["dev_gflops"] * 1e9 * speed,
        dev_kappa=parse_kappa("dev_kappa", merged["dev_kappa"]),
        p_comp_w=num["p_comp_w"], p_tx_w=num["p_tx_w"], p_rx_w=num["p_rx_w"],
        p_idle_w=num["p_idle_w"], srv_flops_per_s=num["srv_gflops"] * 1e9,
        srv_load=check_finite("srv_load", merged.get("srv_load", 1.0)),
        up_bps=num["up_mbps"] * 1e6, down_bps=num["down_mbps"] * 1e6, rtt_s=num["rtt_ms"] / 1e3,
        eps_pp=num["eps_pp"], beta_s_per_j=check_finite("beta_s_per_j",
                                                        merged.get("beta_s_per_j", 0.0)),
        reuse=check_finite("reuse", merged.get("reuse", 1.0)),
        device=str(merged.get("device", "")), server=str(merged.get("server", "")))


def load_request_file(path: str | Path) -> Request:
    """Read a request JSON file; errors name the file and the field."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QsplitInputError(f"request: cannot read {p}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise QsplitInputError(f"request {p}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    return request_from_json_dict(data, where=f"request {p.name}")


def random_request(rng, device: str | None = None, server: str = "t4") -> Request:
    """A random but plausible request over the catalog (tests and benchmarks need many).

    Rates log-uniform 0.1-300 Mbit/s up and 0.3-1000 down, RTT 5-200 ms, budget log-uniform
    0.03-6 pp, beta from {0, 0.01, 0.1, 1} s/J, reuse from {1, 10, 1000}.
    """
    from system.hardware import device_names

    name = device if device is not None else str(rng.choice(device_names()))
    return Request.make(
        get_device(name), get_server(server),
        up_bps=float(10 ** rng.uniform(5.0, 8.5)), down_bps=float(10 ** rng.uniform(5.5, 9.0)),
        rtt_s=float(rng.uniform(0.005, 0.2)), eps_pp=float(10 ** rng.uniform(-1.5, 0.8)),
        beta_s_per_j=float(rng.choice([0.0, 0.01, 0.1, 1.0])),
        reuse=float(rng.choice([1.0, 1.0, 10.0, 1000.0])), srv_load=float(rng.uniform(0.2, 1.0)),
        dev_speed_factor=float(rng.uniform(0.5, 1.5)))
