"""Run a plan for real between a server and a device process, and set it beside the model.

Predicted figures come from ``system.cost`` (``evaluate_plans``, ``bits_at_cut``) for the
request as given; measured ones from the two processes. The link is, in order of preference,
a shaped pair of network namespaces (root), a sender-paced loopback (``pace``: the sender's
token bucket holds the rate, and says so), or plain loopback (``none``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from execution import link as lk
from execution.hostmodel import host_profile, host_request
from execution.models import load_split_model
from system.cost import bits_at_cut, evaluate_plans
from system.errors import QsplitInputError
from system.plan import Plan
from system.request import request_from_json_dict
from system.traces import Trace, load_trace_folder, read_mahimahi

SERVER_PORT = 47611


def model_inputs(model: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n held-out validation images and labels (digits), or n random images (others)."""
    if model.startswith("digits_"):       # the digits networks share one held-out split
        from profiling.digits import load_split

        sp = load_split()
        if not 1 <= n <= len(sp.y_val):
            raise QsplitInputError(f"n: {n} inputs is outside [1, {len(sp.y_val)}] (the validation half)")
        return sp.x_val[:n], sp.y_val[:n]
    shape = load_split_model(model, trained=False).input_shape
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed)), None


def load_trace_pair(path: str | Path) -> tuple[Trace, Trace]:
    """(uplink, downlink) traces: a Mahimahi .up/.down pair, or one file of another format for both."""
    p = Path(path)
    if p.suffix in (".up", ".down"):
        up_p, down_p = p.with_suffix(".up"), p.with_suffix(".down")
        up = read_mahimahi(up_p if up_p.exists() else p, on_zero="floor")
        down = read_mahimahi(down_p if down_p.exists() else p, on_zero="floor")
        return up, down
    traces = (
        load_trace_folder(p, on_zero="floor") if p.is_dir() else load_trace_folder(p.parent, on_zero="floor")
    )
    pick = [t for t in traces if Path(t.path).name == p.name] or traces
    return pick[0], pick[0]


def _wait_ready(path: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if path.exists() and path.read_text().strip():
            return
        if proc.poll() is not None:
            raise QsplitInputError(
                f"server exited before listening: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.05)
    raise QsplitInputError(f"server: not listening after {timeout_s:g} s")


def execute(
    model: str,
    request: dict,
    decider: str = "optimal",
    n: int = 20,
    mode: str = "auto",
    trace: str | None = None,
    plan: Plan | None = None,
    timeout_s: float = 60.0,
    trace_step_s: float = 0.1,
) -> dict:
    """Start a server and a device (two processes) and run n inputs; returns the raw figures."""
    req = request_from_json_dict(request, "request")
    if mode == "auto":
        mode = "netns" if lk.unavailable_reason() is None else "pace"
    if mode == "pace":
        why = lk.unavailable_reason() or "--link pace"
        print(
            f"link: no network namespaces ({why}): the senders pace themselves with a token bucket",
            file=sys.stderr,
        )
    py = [sys.executable, "-m", "execution"]
    with tempfile.TemporaryDirectory(prefix="qsx") as tmp:
        d = Path(tmp)
        (d / "req.json").write_text(json.dumps(request))
        srv_args = [
            "server",
            "--decider",
            decider,
            "--ready-file",
            str(d / "ready"),
            "--timeout",
            str(timeout_s),
            "--preload",
            model,
        ]
        dev_args = [
            "device",
            "--model",
            model,
            "--request",
            str(d / "req.json"),
            "--n",
            str(n),
            "--json-out",
            str(d / "dev.json"),
            "--timeout",
            str(timeout_s),
        ]
        if plan is not None:
            (d / "plan.json").write_text(json.dumps(plan.to_json_dict()))
            dev_args += ["--plan", str(d / "plan.json")]
        link = None
        t_play = None
        try:
            if mode == "netns":
                link = lk.ShapedLink(req.up_bps, req.down_bps).__enter__()
                srv_cmd = [
                    *link.prefix("srv"),
                    *py,
                    *srv_args,
                    "--host",
                    lk.SRV_ADDR,
                    "--port",
                    str(SERVER_PORT),
                ]
                dev_host = lk.SRV_ADDR
            else:
                srv_cmd = [*py, *srv_args, "--host", "127.0.0.1", "--port", "0"]
                dev_host = "127.0.0.1"
                if mode == "pace":
                    srv_cmd += ["--pace-down-mbps", str(req.down_bps / 1e6)]
                    dev_args += ["--pace-up-mbps", str(req.up_bps / 1e6)]
            srv = subprocess.Popen(srv_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                _wait_ready(d / "ready", srv)
                port = (d / "ready").read_text().strip()
                up_tr = down_tr = None
                if trace is not None:
                    if link is None:
                        raise QsplitInputError(
                            "trace: replaying a trace needs the shaped link (root and ip netns)"
                        )
                    up_tr, down_tr = load_trace_pair(trace)
                    t_play = link.play(lk.rate_function(up_tr), lk.rate_function(down_tr), trace_step_s)
                dev_cmd = [
                    *(link.prefix("dev") if link else []),
                    *py,
                    *dev_args,
                    "--host",
                    dev_host,
                    "--port",
                    port,
                ]
                r = subprocess.run(dev_cmd, capture_output=True, text=True, timeout=timeout_s * 4 + 60)
                if r.returncode != 0:
                    last = (r.stderr.strip().splitlines() or ["failed"])[-1]
                    raise QsplitInputError(f"device: {last.removeprefix('error: ')}")
                dev = json.loads((d / "dev.json").read_text())
            finally:
                lk.stop_process(srv)
        finally:
            if link is not None:
                link.close()
    return {"mode": mode, "device": dev, "trace": trace, "t_play": t_play, "trace_step_s": trace_step_s}


def _med(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else 0.0


def report(model: str, request: dict, raw: dict, labels: torch.Tensor | None) -> dict:
    """Predicted (system.cost) against measured figures of one executed request."""
    prof, proc, source = host_profile(model)
    req = request_from_json_dict(request, "request")
    dev = raw["device"]
    plan = Plan(
        cut=dev["plan"]["cut"],
        weight_bits=tuple(dev["plan"]["weight_bits"]),
        act_bits=dev["plan"]["act_bits"],
    )
    planned = evaluate_plans(prof, req, [plan])
    f = evaluate_plans(prof, host_request(req, proc), [plan]) if proc else planned
    L = prof.n_units
    up_bits = float(bits_at_cut(prof, np.array([plan.cut]), np.array([plan.act_bits]))[0])
    head_bits = float(np.sum(prof.params[: plan.cut] * np.array(plan.weight_bits, dtype=np.float64)))
    meas_ship = dev["ship_s"] if plan.cut > 0 else 0.0
    stages = {
        "ship_s": (float(f.t_down_s[0]), meas_ship),
        "head_s": (float(f.t_dev_s[0]), _med(dev["head_s"]) if plan.cut > 0 else 0.0),
        "up_s": (float(f.t_up_s[0]), _med(dev["up_s"]) if plan.cut < L else 0.0),
        "tail_s": (float(f.t_srv_s[0]), _med(dev["tail_s"]) if plan.cut < L else 0.0),
    }
    e2e = meas_ship + _med(dev["e2e_s"])
    out = {
        "model": model,
        "plan": plan.to_json_dict(),
        "link": raw["mode"],
        "n": len(dev["preds"]),
        "bytes_down": {"predicted": head_bits / 8, "measured": dev["bytes_down"]},
        "bytes_up": {"predicted": up_bits / 8 * len(dev["preds"]), "measured": dev["bytes_up"]},
        **{k: {"predicted": p, "measured": v} for k, (p, v) in stages.items()},
        "end_to_end_s": {"predicted": float(f.latency_s[0]), "measured": e2e},
        "overhead_ms": 1e3
        * _med(
            [
                e - h - u - t
                for e, h, u, t in zip(
                    dev["e2e_s"],
                    dev["head_s"],
                    dev["up_s"] or [0.0] * len(dev["e2e_s"]),
                    dev["tail_s"] or [0.0] * len(dev["e2e_s"]),
                    strict=True,
                )
            ]
        ),
    }
    if labels is not None:
        preds = torch.tensor(dev["preds"])
        base = load_split_model(model, trained=True).run(0, L, _inputs_like(model, len(preds)))
        acc = float((preds == labels).double().mean()) * 100
        base_acc = float((base.argmax(1) == labels).double().mean()) * 100
        out["top1_pct"] = {"predicted": base_acc - float(f.drop_pp[0]), "measured": acc}
        out["drop_pp"] = {"predicted": float(f.drop_pp[0]), "measured": base_acc - acc}
    out["predicted_by"] = f"system.cost at the request's link; compute: {source}"
    if raw.get("trace"):
        out["predicted_by"] += (
            f"; the link replayed {raw['trace']}, transfers predicted at the request's rates"
        )
    out["planner_latency_s"] = float(planned.latency_s[0])  # on the request's own processors
    return out


def _inputs_like(model: str, n: int) -> torch.Tensor:
    return model_inputs(model, n)[0]


def table(rep: dict) -> str:
    """The report as an aligned text table."""
    rows = [
        (k, v["predicted"], v["measured"]) for k, v in rep.items() if isinstance(v, dict) and "measured" in v
    ]
    lines = [f"{'figure':<14} {'predicted':>14} {'measured':>14}"]
    lines += [f"{k:<14} {p:>14.6g} {mv:>14.6g}" for k, p, mv in rows]
    lines.append(
        f"plan {json.dumps(rep['plan'])}  link {rep['link']}  n {rep['n']}  "
        f"overhead {rep['overhead_ms']:.3f} ms"
    )
    return "\n".join(lines)


def env_threads() -> None:
    torch.set_num_threads(int(os.environ.get("QSPLIT_THREADS", "1")))
