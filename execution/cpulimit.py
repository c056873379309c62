"""A slower device on this host: the device process runs under a CFS CPU quota (cgroup v1).

Why: on one machine the device and the server are the same CPU, so a head costs the device
exactly what it saves the server and the cut is decided by the link alone. A device that
gets ``share`` of one core (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, a short period so
that a unit of a few milliseconds is slowed evenly) makes the trade between compute and
transfer real. The group is named ``qsx<pid>c`` after its owner; it is removed on close and,
for owners that are gone, at the next start (as ``execution.link`` does with namespaces).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from execution.link import pid_alive
from system.errors import QsplitInputError, check_finite

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
PREFIX = "qsx"
#: The kernel's least CFS quota is 1 ms; the period is the quota over the share.
QUOTA_US = 1000
MAX_PERIOD_US = 1_000_000
_NAME = re.compile(rf"^{PREFIX}(\d+)c$")


def unavailable_reason() -> str | None:
    """Why a CPU quota cannot be set here (None when it can)."""
    if not (CPU_ROOT / "cpu.cfs_quota_us").exists():
        return f"no cgroup v1 cpu controller at {CPU_ROOT}"
    if not os.access(CPU_ROOT, os.W_OK):
        return f"{CPU_ROOT} is not writable (not root?)"
    return None


def _remove(path: Path, wait_s: float = 5.0) -> None:
    """rmdir the group once its processes have gone (they are moved out as they exit)."""
    t_end = time.monotonic() + wait_s
    while path.exists():
        try:
            path.rmdir()
        except OSError:
            if time.monotonic() > t_end:
                raise
            time.sleep(0.05)


def clean_leftovers() -> list[str]:
    """Remove the groups of owners that are gone."""
    if unavailable_reason() is not None:
        return []
    gone = [p for p in CPU_ROOT.iterdir() if (m := _NAME.match(p.name)) and not pid_alive(int(m.group(1)))]
    for p in gone:
        _remove(p, 1.0)
    return [p.name for p in gone]


class CpuShare:
    """A cgroup holding ``share`` of one core; ``wrap(cmd)`` starts a command inside it."""

    def __init__(self, share: float) -> None:
        check_finite("cpu_share", share, lo=QUOTA_US / MAX_PERIOD_US, hi=1.0, unit="of one core")
        why = unavailable_reason()
        if why is not None:
            raise QsplitInputError(f"cpu_share: cannot limit the device's CPU ({why})")
        clean_leftovers()
        self.share = share
        self.period_us = round(QUOTA_US / share)
        self.path = CPU_ROOT / f"{PREFIX}{os.getpid()}c"
        self.path.mkdir(exist_ok=True)
        try:
            (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(QUOTA_US))
        except OSError:
            self.close()
            raise

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` run by a shell that first moves itself into the group (children inherit it)."""
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *cmd]

    def close(self) -> None:
        """Remove the group (its processes must have exited)."""
        _remove(self.path)

    def __enter__(self) -> CpuShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
