"""The planning service under load: uvicorn workers on 127.0.0.1 driven by locust, headless.

It starts ``python -m service --workers 2`` on a free loopback port, waits for /healthz, and
runs locust (as a library, in a child process: locust patches the standard library with
gevent) twice for ``--duration`` seconds each with ``--users`` concurrent clients:

1. single requests to ``POST /v1/plan``; ``--bad-share`` of them malformed in one of
   :data:`BAD_KINDS` (a value out of range, a string for a number, a missing or unknown
   key, broken JSON, NaN, an unknown catalog device, a kernel width that does not exist, a
   list for an object, an empty body, a body over the size limit);
2. batches of ``--batch-size`` to ``POST /v1/plans``, the same share of items malformed.

The good requests are drawn from the default scenario (seeded). Every plan that comes back
is checked here, independently of the service, with the profile's accuracy model
(:func:`system.accuracy.plans_drop_pp`) against its request's budget (single answers after
the run, so the check does not take the cores the workers and the clients share). Then the service is
sent SIGTERM and must exit cleanly. The last line printed is one JSON object:
``plans_per_s`` (single requests answered 200 per second), ``batch_plans_per_s``, ``p50_ms``
and ``p99_ms`` (single requests, client side; ``p90_ms`` and ``max_ms`` too), ``errors`` (5xx
or dropped connections),
``bad_sent`` and ``bad_rejected`` (malformed requests answered 413 or 422 with a message),
``good_rejected``, ``over_budget``, ``rss_mb`` of each worker, the workers' CPU time per
plan in each phase (``worker_cpu_us_per_plan``: what a core of theirs spends on one plan,
less sensitive to what else the machine runs than the rates), the load average. The load
generator runs on the same machine as the workers and takes a share of its cores.

    python benchmarks/bench_service.py [--duration 30] [--users 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BAD_KINDS = ("range", "type", "missing", "unknown_key", "json_syntax", "nan", "unknown_device",
             "kappa_width", "not_object", "srv_load", "empty", "over_limit")
#: Malformed batch items (a batch body itself stays valid JSON).
BAD_ITEM_KINDS = ("range", "type", "missing", "unknown_key", "unknown_device", "kappa_width",
                  "not_object", "srv_load")
LIMIT_BYTES = 1 << 20


def good_requests(n: int, seed: int) -> list[dict]:
    """Requests from the default scenario, in their JSON form."""
    import numpy as np

    from system.scenario import load_scenario, sample_requests
    return [r.to_json_dict() for r in sample_requests(load_scenario("default"),
                                                      np.random.default_rng(seed), n)]


def bad_item(kind: str, good: dict) -> object:
    """A malformed request of ``kind`` made from a good one (a JSON value)."""
    d = dict(good)
    if kind == "range":
        d["up_mbps"] = -5.0
    elif kind == "type":
        d["eps_pp"] = "one"
    elif kind == "missing":
        del d["up_mbps"]
    elif kind == "unknown_key":
        d["bandwidth_mbps"] = 3.0
    elif kind == "unknown_device":
        d["device"] = "pixel99"
    elif kind == "kappa_width":
        d["dev_kappa"] = {"5": 2.0, "32": 1.0}
    elif kind == "not_object":
        return [d]
    elif kind == "srv_load":
        d["srv_load"] = 1.5
    else:
        raise ValueError(kind)
    return d


def bad_body(kind: str, good: dict) -> bytes:
    """A malformed /v1/plan body of ``kind``."""
    text = json.dumps(good)
    if kind == "json_syntax":
        return text[: len(text) // 2].encode()
    if kind == "nan":
        return json.dumps({**good, "rtt_ms": float("nan")}).encode()
    if kind == "empty":
        return b""
    if kind == "over_limit":
        return (text[:-1] + " " * (LIMIT_BYTES + 1024) + "}").encode()
    return json.dumps(bad_item(kind, good)).encode()


# ---------------------------------------------------------------------------- the load driver

def drive(cfg: dict) -> dict:
    """One locust run in this process (see the module docstring); returns the counts."""
    import random

    import gevent
    import numpy as np
    from locust import FastHttpUser, constant, task
    from locust.env import Environment

    from runtime.bundle import load_bundle
    from runtime.dispatcher import default_bundle_path
    from system.accuracy import drop_limit_pp, plans_drop_pp
    from system.plan import Plan

    profile = load_bundle(default_bundle_path(cfg["model"]), public_key=False).profile
    rng = random.Random(cfg["seed"])
    goods = good_requests(2000, cfg["seed"])
    eps = [g["eps_pp"] for g in goods]
    bodies = [json.dumps(g).encode() for g in goods]
    c: dict[str, Any] = dict.fromkeys(("sent", "ok", "bad_sent", "bad_rejected", "good_rejected",
                                       "errors", "over_budget", "plans", "items_bad_sent",
                                       "items_bad_rejected"), 0)
    c["bad_by_kind"] = dict.fromkeys(BAD_KINDS, 0)
    lat: list[float] = []
    answers: list[tuple[bytes, int]] = []
    batches: list[tuple[bytes, list[int], set[int]]] = []
    if cfg["phase"] == "batch":
        size = cfg["batch_size"]
        for _ in range(32):
            idx = [rng.randrange(len(goods)) for _ in range(size)]
            bad = {i for i in range(size) if rng.random() < cfg["bad_share"]}
            items = [bad_item(BAD_ITEM_KINDS[rng.randrange(len(BAD_ITEM_KINDS))], goods[k])
                     if i in bad else goods[k] for i, k in enumerate(idx)]
            batches.append((json.dumps({"requests": items}).encode(), idx, bad))
    L = profile.n_units

    def over_budget(plans: list[dict], budgets: list[float]) -> int:
        ps = [Plan.canonical(p["cut"], p["weight_bits"], p["act_bits"], L) for p in plans]
        drops = plans_drop_pp(profile.sens_w, profile.sens_a, ps)
        return int(np.sum(drops > drop_limit_pp(np.asarray(budgets))))

    headers = {"content-type": "application/json"}

    class Planner(FastHttpUser):
        wait_time = constant(0)
        host = cfg["base"]

        @task
        def go(self) -> None:
            if cfg["phase"] == "single":
                self.single()
            else:
                self.batch()

        @staticmethod
        def failed(status: int) -> bool:
            """Count one answer; a 5xx or a dropped connection (status 0) is an error."""
            c["sent"] += 1
            if status == 0 or status >= 500:
                c["errors"] += 1
                return True
            return False

        def single(self) -> None:
            k = rng.randrange(len(goods))
            kind = BAD_KINDS[rng.randrange(len(BAD_KINDS))] if rng.random() < cfg["bad_share"] \
                else None
            body = bodies[k] if kind is None else bad_body(kind, goods[k])
            t0 = time.perf_counter()
            with self.client.post("/v1/plan", data=body, headers=headers,
                                  catch_response=True) as r:
                dt = time.perf_counter() - t0
                st = r.status_code
                r.success()
            if self.failed(st):
                return
            if kind is not None:
                c["bad_sent"] += 1
                c["bad_by_kind"][kind] += 1
                try:
                    named = st in (413, 422) and bool(json.loads(r.content)["detail"][0]["msg"])
                except (ValueError, KeyError, IndexError, TypeError):
                    named = False
                c["bad_rejected"] += named
                return
            if st != 200:
                c["good_rejected"] += 1
                return
            lat.append(dt)
            c["ok"] += 1
            c["plans"] += 1
            answers.append((r.content, k))          # checked after the run (client CPU)

        def batch(self) -> None:
            body, idx, bad = batches[rng.randrange(len(batches))]
            with self.client.post("/v1/plans", data=body, headers=headers,
                                  catch_response=True) as r:
                st = r.status_code
                r.success()
            if self.failed(st):
                return
            if st != 200:
                c["good_rejected"] += 1
                return
            c["ok"] += 1
            items = json.loads(r.content)["items"]
            c["items_bad_sent"] += len(bad)
            c["items_bad_rejected"] += sum(1 for i in bad if "error" in items[i])
            good = [i for i in range(len(items)) if i not in bad]
            plans = [items[i]["plan"] for i in good if "plan" in items[i]]
            c["good_rejected"] += len(good) - len(plans)
            c["plans"] += len(plans)
            c["over_budget"] += over_budget(plans, [eps[idx[i]] for i in good if "plan" in items[i]])

    env = Environment(user_classes=[Planner], host=cfg["base"])
    runner = env.create_local_runner()
    t0 = time.perf_counter()
    runner.start(cfg["users"], spawn_rate=cfg["users"])
    gevent.spawn_later(cfg["duration"], runner.quit)
    runner.greenlet.join()
    c["elapsed_s"] = time.perf_counter() - t0
    if answers:
        c["over_budget"] += over_budget([json.loads(body) for body, _ in answers],
                                        [eps[k] for _, k in answers])
    if lat:
        q = np.percentile(np.asarray(lat) * 1e3, [50, 90, 99, 100])
        c["p50_ms"], c["p90_ms"], c["p99_ms"], c["max_ms"] = map(float, q)
    return c


# ---------------------------------------------------------------------------- the run

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode} before it was up")
        try:
            if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service did not answer /healthz within {timeout:.0f} s")


def run_phase(cfg: dict) -> dict:
    """One locust run in a child process (its last stdout line is the counts)."""
    out = subprocess.run([sys.executable, __file__, "--drive", json.dumps(cfg)], cwd=ROOT,
                         capture_output=True, text=True, timeout=cfg["duration"] + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load driver failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def workers(pid: int) -> list[Any]:
    """The uvicorn worker processes of the service (the service itself with one worker)."""
    import psutil

    main = psutil.Process(pid)
    return [k for k in main.children(recursive=True)
            if any("spawn_main" in a for a in k.cmdline())] or [main]


def cpu_s(procs: list[Any]) -> float:
    """CPU seconds (user + system) the processes have used so far."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per phase (default 30)")
    ap.add_argument("--users", type=int, default=64, help="concurrent clients (default 64)")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--bad-share", type=float, default=0.05)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--drive", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.drive:
        print(json.dumps(drive(json.loads(args.drive))))
        return 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    svc = subprocess.Popen([sys.executable, "-m", "service", "--model", args.model, "--port",
                            str(port), "--workers", str(args.workers), "--max-body-bytes",
                            str(LIMIT_BYTES)], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(base, svc)
        common = {"base": base, "users": args.users, "duration": args.duration,
                  "bad_share": args.bad_share, "seed": args.seed, "model": args.model,
                  "batch_size": args.batch_size}
        procs = workers(svc.pid)
        c0 = cpu_s(procs)
        single = run_phase({**common, "phase": "single"})
        c1 = cpu_s(procs)
        batch = run_phase({**common, "phase": "batch", "seed": args.seed + 1})
        c2 = cpu_s(procs)
        rss = [round(p.memory_info().rss / 2**20, 1) for p in procs]
        load_after = os.getloadavg()
    finally:
        svc.send_signal(signal.SIGTERM)
        try:
            rc = svc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            svc.kill()
            rc = -9
    result = {
        "plans_per_s": single["plans"] / single["elapsed_s"],
        "batch_plans_per_s": batch["plans"] / batch["elapsed_s"],
        "p50_ms": single.get("p50_ms"), "p99_ms": single.get("p99_ms"),
        "p90_ms": single.get("p90_ms"), "max_ms": single.get("max_ms"),
        "errors": single["errors"] + batch["errors"],
        "bad_sent": single["bad_sent"], "bad_rejected": single["bad_rejected"],
        "bad_by_kind": single["bad_by_kind"],
        "batch_bad_items_sent": batch["items_bad_sent"],
        "batch_bad_items_rejected": batch["items_bad_rejected"],
        "good_rejected": single["good_rejected"] + batch["good_rejected"],
        "over_budget": single["over_budget"] + batch["over_budget"],
        "single_requests": single["sent"], "batches": batch["sent"],
        "worker_cpu_us_per_plan": (c1 - c0) / max(single["plans"], 1) * 1e6,
        "batch_worker_cpu_us_per_plan": (c2 - c1) / max(batch["plans"], 1) * 1e6,
        "rss_mb": rss, "service_exit_code": rc, "workers": args.workers, "users": args.users,
        "duration_s": args.duration, "batch_size": args.batch_size, "model": args.model,
        "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }
    print(f"single: {result['plans_per_s']:.0f} plans/s, p50 {result['p50_ms']} ms, p99 "
          f"{result['p99_ms']} ms; batch: {result['batch_plans_per_s']:.0f} plans/s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
