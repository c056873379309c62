"""Many plans through one server and one device process: what a benchmark runs per link rate.

Why: starting torch and loading a model costs seconds, so a group of jobs (plan, request,
inputs) shares one server process and one device process; a shaped link's rates are set by
the caller between groups. ``python -m execution.batch JOBS OUT`` is the device side.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from execution import link as lk
from execution.models import load_split_model
from system.plan import Plan

PORT = 47612


def worker(jobs_path: str, out_path: str) -> None:
    """Run every job of the file in one device process; write the DeviceRun dicts."""
    from execution.device import run_device
    from execution.run import model_inputs

    torch.set_num_threads(1)
    spec = json.loads(Path(jobs_path).read_text())
    models = {}
    out = []
    for job in spec["jobs"]:
        name = job["model"]
        if name not in models:
            models[name] = load_split_model(name, trained=False)
        x, _ = model_inputs(name, job["n"])
        plan = Plan(job["plan"]["cut"], tuple(job["plan"]["weight_bits"]), job["plan"]["act_bits"])
        run = asyncio.run(
            run_device(
                spec["host"],
                spec["port"],
                models[name],
                job["request"],
                x,
                plan,
                timeout_s=120,
                up_pacer_bps=job.get("pace_up_bps"),
            )
        )
        out.append(run.to_dict())
    Path(out_path).write_text(json.dumps(out))


def run_group(
    jobs: list[dict],
    mode: str,
    link: lk.ShapedLink | None,
    tmp: Path,
    tag: str,
    wrap_device: Callable[[list[str]], list[str]] | None = None,
) -> list[dict]:
    """Run the jobs through one server and one device process; ``wrap_device`` (e.g.
    ``execution.cpulimit.CpuShare.wrap``) wraps the device's command."""
    py = [sys.executable, "-m", "execution"]
    ready = tmp / f"ready_{tag}"
    srv = [
        *py,
        "server",
        "--decider",
        "optimal",
        "--ready-file",
        str(ready),
        "--timeout",
        "120",
        "--preload",
        *sorted({j["model"] for j in jobs}),
    ]
    if link is not None:
        srv = [*link.prefix("srv"), *srv, "--host", lk.SRV_ADDR, "--port", str(PORT)]
        host = lk.SRV_ADDR
    else:
        srv += ["--host", "127.0.0.1", "--port", "0"]
        host = "127.0.0.1"
        if mode == "pace" and jobs[0].get("pace_down_bps"):
            srv += ["--pace-down-mbps", str(jobs[0]["pace_down_bps"] / 1e6)]
    proc = subprocess.Popen(srv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 90
        while not (ready.exists() and ready.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > t_end:
                raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
        port = int(ready.read_text())
        (tmp / f"jobs_{tag}.json").write_text(json.dumps({"host": host, "port": port, "jobs": jobs}))
        dev = [sys.executable, "-m", "execution.batch", str(tmp / f"jobs_{tag}.json")]
        dev.append(str(tmp / f"out_{tag}.json"))
        cmd = [*(link.prefix("dev") if link else []), *dev]
        cmd = wrap_device(cmd) if wrap_device else cmd  # outside the namespace: it has its own /sys
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"device worker failed: {r.stderr.strip().splitlines()[-1:]}")
        return json.loads((tmp / f"out_{tag}.json").read_text())
    finally:
        lk.stop_process(proc)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
