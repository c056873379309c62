"""Sender-side pacing (a token bucket) and the receiver's added half round trip.

Why: where network namespaces and ``tc`` cannot be used (no root), the sender itself holds
its rate to the link's: each chunk of at most one MTU's payload leaves when the bucket has
the tokens for it. ``rate_bps`` may be a function of time, so a trace replays the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

CHUNK_BYTES = 1448  # TCP payload of a 1500-byte MTU packet


class Pacer:
    """Writes at most ``rate_bps(t)`` bits per second (t: seconds since the pacer started)."""

    def __init__(
        self, rate_bps: float | Callable[[float], float], burst_bytes: int = 2 * CHUNK_BYTES
    ) -> None:
        self.rate = rate_bps if callable(rate_bps) else (lambda t, r=float(rate_bps): r)
        self.burst = burst_bytes
        self.t_start = time.monotonic()
        self.t_free = self.t_start  # when the bucket is next empty enough for a chunk

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), CHUNK_BYTES):
            chunk = view[i : i + CHUNK_BYTES]
            now = time.monotonic()
            wait = self.t_free - now - self.burst * 8 / self.rate(now - self.t_start)
            if wait > 0:
                await asyncio.sleep(wait)
                now = time.monotonic()
            self.t_free = max(self.t_free, now) + len(chunk) * 8 / self.rate(now - self.t_start)
            writer.write(chunk)
            await writer.drain()
        # the last bits leave when the bucket has paid for them
        rest = self.t_free - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)


async def send(writer: asyncio.StreamWriter, data: bytes, pacer: Pacer | None) -> None:
    """Write ``data`` (paced when a pacer is given) and wait until it is handed to the kernel."""
    if pacer is None:
        writer.write(data)
        await writer.drain()
    else:
        await pacer.write(writer, data)
