"""A real shaped link: two network namespaces, a veth pair, ``tbf`` on each side, a player.

Why: a plan's transfer times are only tested by sending its bytes through a link of the
planned rate. Device and server live in namespaces ``qsx<pid>d`` / ``qsx<pid>s`` joined by the
veth pair ``qsx<pid>d``/``qsx<pid>s`` (MTU 1500, set before shaping: a large MTU with a small
burst drops every packet); each side's egress is shaped with ``tc qdisc replace ... tbf``
(device egress = uplink, server egress = downlink). This kernel has no netem: half a round
trip is added by each receiver in the application. Every resource carries the ``qsx`` prefix
and the owner's pid: a run removes what it made on exit, on Ctrl-C and on SIGTERM, and
removes the leftovers of killed runs (dead pids) when it starts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import numpy as np

from system.errors import QsplitInputError
from system.traces import Trace

PREFIX = "qsx"
SRV_ADDR, DEV_ADDR = "10.213.0.1", "10.213.0.2"
_NAME = re.compile(rf"^{PREFIX}(\d+)[ds]$")


def stop_process(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Ask a child to stop, and kill it if it has not within ``grace_s``: nothing is left running."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "the ip and tc commands are missing"
    if os.geteuid() != 0:
        return "not running as root"
    probe = f"{PREFIX}{os.getpid()}p"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add failed ({r.stderr.strip()})"
    _ip("netns", "del", probe, check=False)
    return None


def pid_alive(pid: int) -> bool:
    """Whether a process exists (one we may not signal counts too): whose leftovers to keep."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers() -> list[str]:
    """Namespaces of this prefix whose owner is gone."""
    r = _ip("netns", "list", check=False)
    names = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    return [n for n in names if (m := _NAME.match(n)) and not pid_alive(int(m.group(1)))]


def clean_leftovers() -> list[str]:
    """Delete the namespaces (and with them their veth ends) of killed runs."""
    gone = leftovers()
    for n in gone:
        _ip("netns", "del", n, check=False)
    return gone


def tbf_args(rate_bps: float) -> list[str]:
    """tbf parameters: a burst of one full Ethernet frame (the least tbf passes), a 2 s queue."""
    burst = 1514
    return ["tbf", "rate", f"{int(rate_bps)}bit", "burst", str(burst), "latency", "2s"]


class ShapedLink:
    """The namespaces and the veth pair, shaped at (up_bps, down_bps); a context manager."""

    def __init__(self, up_bps: float, down_bps: float) -> None:
        for name, v in (("up_bps", up_bps), ("down_bps", down_bps)):
            if not 8e3 <= v <= 10e9:
                raise QsplitInputError(f"{name}: {v:g} bit/s is outside [8e3, 1e10]")
        tag = f"{PREFIX}{os.getpid()}"
        self.ns_dev, self.ns_srv = f"{tag}d", f"{tag}s"
        self.up_bps, self.down_bps = up_bps, down_bps
        self._player: threading.Thread | None = None
        self._stop = threading.Event()
        self._old: dict[int, object] = {}

    def __enter__(self) -> ShapedLink:
        clean_leftovers()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if threading.current_thread() is threading.main_thread():
                self._old[sig] = signal.signal(sig, _raise_interrupt)
        try:
            self._make()
        except BaseException:
            self.close()
            raise
        return self

    def _make(self) -> None:
        for ns in (self.ns_dev, self.ns_srv):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", self.ns_dev, "type", "veth", "peer", "name", self.ns_srv)
        for ns, addr in ((self.ns_dev, DEV_ADDR), (self.ns_srv, SRV_ADDR)):
            _ip("link", "set", ns, "netns", ns)
            _ip("-n", ns, "link", "set", ns, "mtu", "1500")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ns)
            _ip("-n", ns, "link", "set", ns, "up")
        self.set_rates(self.up_bps, self.down_bps)

    def set_rates(self, up_bps: float, down_bps: float) -> None:
        """Change both sides' tbf rates now."""
        for ns, rate in ((self.ns_dev, up_bps), (self.ns_srv, down_bps)):
            subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", ns, "root", *tbf_args(rate)],
                check=True,
                capture_output=True,
                timeout=10,
            )
        self.up_bps, self.down_bps = up_bps, down_bps

    def qdiscs(self) -> str:
        return "\n".join(
            subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", ns], capture_output=True, text=True
            ).stdout
            for ns in (self.ns_dev, self.ns_srv)
        )

    def prefix(self, side: str) -> list[str]:
        """Command prefix that runs a command on the device ('dev') or server ('srv') side."""
        return ["ip", "netns", "exec", self.ns_dev if side == "dev" else self.ns_srv]

    def play(self, up: Callable[[float], float], down: Callable[[float], float], step_s: float) -> float:
        """Start a player that sets the rates to up(t), down(t) every ``step_s``; returns its t=0."""
        t0 = time.monotonic()

        def loop() -> None:
            k = 0
            while not self._stop.is_set():
                t = k * step_s
                self.set_rates(up(t), down(t))
                k += 1
                self._stop.wait(max(0.0, t0 + k * step_s - time.monotonic()))

        self.set_rates(up(0.0), down(0.0))
        self._player = threading.Thread(target=loop, daemon=True)
        self._player.start()
        return t0

    def close(self) -> None:
        self._stop.set()
        if self._player is not None:
            self._player.join(timeout=5)
        for ns in (self.ns_dev, self.ns_srv):
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.ns_dev, check=False)
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def rate_function(trace: Trace, scale: float = 1.0) -> Callable[[float], float]:
    """The trace's rate at time t (piecewise constant from each sample, looping), x ``scale``."""
    t = np.asarray(trace.time_s) - float(trace.time_s[0])
    r = np.asarray(trace.rate_bps) * scale
    step = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    period = float(t[-1]) + step

    def at(x: float) -> float:
        return float(r[np.searchsorted(t, x % period, side="right") - 1])

    return at


def transfer_s(rate: Callable[[float], float], t0: float, bits: float, step_s: float) -> float:
    """Time to send ``bits`` from t0 at the piecewise-constant ``rate`` (constant per step):
    integral_{t0}^{t1} rate dt = bits, solved step by step."""
    t, left = t0, float(bits)
    for _ in range(10_000_000):
        edge = (np.floor(t / step_s + 1e-9) + 1) * step_s
        r = rate(t)
        if r * (edge - t) >= left:
            return t + left / r - t0
        left -= r * (edge - t)
        t = edge
    raise QsplitInputError(f"transfer of {bits:g} bits does not end within the trace")
