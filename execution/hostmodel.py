"""The cost model of this host: the prediction a run on this machine is compared with.

Why: a plan run here executes the head and the tail on this CPU, in float32 (the device
dequantizes the head, so every width runs at kappa 1). The prediction is ``system.cost`` for
a request whose device and server are this host's processor, using the profile's measured
per-unit table for it (``profiling.timing``, DESIGN.md §1a); where the profile carries no
table for this host, one is measured now with the profiler's own timing and said so.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from execution.models import load_split_model
from system.bits import KERNEL_WIDTHS
from system.profiles import ModelProfile
from system.request import Request


def host_profile(name: str, threads: int = 1) -> tuple[ModelProfile, str, str]:
    """(profile with this host's table, processor name, where the table came from)."""
    try:
        from profiling.timing import host_processor_name, time_units, with_table
    except ImportError:
        prof = load_split_model(name, trained=False).profile
        return prof, "", "MAC-proportional model (profiling/ has no per-unit timing)"
    proc = host_processor_name(threads)
    m = load_split_model(name, trained=True)
    if proc in m.profile.time_tables:
        return m.profile, proc, f"measured per-unit times of {proc} (from the profile)"
    t, prov = time_units(
        m.units,
        torch.zeros((1, *m.input_shape)),
        threads=threads,
        repeats=30 if name.startswith("digits_") else 7,      # short units: more repeats
        warmup=3,
    )
    return (
        with_table(m.profile, proc, t, prov),
        proc,
        f"measured per-unit times of {proc} (timed now: the profile carries no table for this host)",
    )


def host_request(
    req: Request,
    processor: str,
    up_bps: float | None = None,
    down_bps: float | None = None,
    rtt_s: float | None = None,
) -> Request:
    """``req`` with this host as device and server (fp32 kernels, whole server), optionally the
    link's rates and RTT."""
    return replace(
        req,
        up_bps=up_bps or req.up_bps,
        down_bps=down_bps or req.down_bps,
        rtt_s=req.rtt_s if rtt_s is None else rtt_s,
        reuse=1.0,
        dev_kappa=tuple(1.0 for _ in KERNEL_WIDTHS),
        srv_load=1.0,
        device=processor,
        server=processor,
    )
