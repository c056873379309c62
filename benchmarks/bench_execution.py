"""Run >= 100 digits_cnn plans for real over a shaped link and set them beside the model.

Plans: the exact optimizer's plans for default-scenario requests, plus random mixed plans.
They are spread over link rates of 1-50 Mbit/s (tbf in two network namespaces where this
runs as root, else the senders' token bucket), one group replays a Mahimahi trace, and a
few ResNet-18 (224x224, random init) plans run for bytes and times. Accuracy is measured in
process on the held-out validation half (three views per image, round-to-nearest), through
the same quantizers the wire uses; the first inputs of every plan also go over the network
and their predictions are compared with the in-process ones.

Predicted figures: system.cost.evaluate_plans for a request with the link's rates and RTT;
compute with this host's measured per-unit table (profiling.timing, system.cost.unit_time).
The last line printed is one JSON object.

    python benchmarks/bench_execution.py            # ~3-5 minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from execution import link as lk  # noqa: E402
from execution.batch import run_group  # noqa: E402
from execution.frames import HEADER_BYTES  # noqa: E402
from execution.hostmodel import host_profile, host_request  # noqa: E402
from execution.models import load_split_model  # noqa: E402
from system.bits import DEFAULT_BITS  # noqa: E402
from system.cost import evaluate_plans  # noqa: E402
from system.optimal import solve  # noqa: E402
from system.plan import Plan  # noqa: E402
from system.request import Request  # noqa: E402
from system.scenario import load_scenario, sample_requests  # noqa: E402

TRACE = ROOT.parent / "shared" / "data" / "traces" / "mahimahi_cellular" / "TMobile-LTE-short.up"
RATES_MBPS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
RTT_MS = 20.0


# ----------------------------------------------------------------------------- worker (device side)


# ----------------------------------------------------------------------------- plans


def digits_plans(n_opt: int, n_rand: int, seed: int) -> list[tuple[Plan, float, str]]:
    """(plan, budget in pp, source): optimizer plans for default-scenario requests, random mixed."""
    prof = load_split_model("digits_cnn", trained=False).profile
    rng = np.random.default_rng(seed)
    out = []
    for r in sample_requests(load_scenario("default"), rng, n_opt):
        out.append((solve(prof, r).plan, float(r.eps_pp), "optimal"))
    L = prof.n_units
    bits = [b for b in DEFAULT_BITS if b <= 16]
    while len(out) < n_opt + n_rand:
        cut = int(rng.integers(1, L))
        plan = Plan.canonical(cut, rng.choice(bits, cut), int(rng.choice(bits[:5])), L)
        out.append((plan, float(rng.choice([0.5, 1.0, 2.0])), "random"))
    return out


def link_request(base: Request, up_mbps: float, down_mbps: float, processor: str) -> Request:
    """The request the prediction uses: the link's rates and RTT, this host on both sides."""
    return host_request(base, processor, up_mbps * 1e6, down_mbps * 1e6, RTT_MS / 1e3)


def request_json(up_mbps: float, down_mbps: float, eps: float) -> dict:
    return {
        "device": "jetson_nano",
        "server": "t4",
        "up_mbps": up_mbps,
        "down_mbps": down_mbps,
        "rtt_ms": RTT_MS,
        "eps_pp": eps,
        "beta_s_per_j": 0.0,
        "reuse": 1,
    }


# ----------------------------------------------------------------------------- compute model


def host_profiles() -> tuple[dict, str, str]:
    """Both models' profiles with this host's per-unit table (execution.hostmodel)."""
    got = {n: host_profile(n) for n in ("digits_cnn", "resnet18")}
    return {n: g[0] for n, g in got.items()}, got["digits_cnn"][1], got["digits_cnn"][2]


# ----------------------------------------------------------------------------- groups


comp_ratio: list[float] = []


def ape(pred: float, meas: float) -> float:
    return abs(meas - pred) / pred


def cape(pred: float, meas: float) -> float:
    comp_ratio.append(meas / pred)
    return ape(pred, meas)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-opt", type=int, default=60)
    ap.add_argument("--n-rand", type=int, default=48)
    ap.add_argument("--n-net", type=int, default=6, help="inputs per plan sent over the link")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.time()
    load0 = os.getloadavg()[0]
    mode = "netns" if lk.unavailable_reason() is None else "pace"
    if mode == "pace":
        print(
            f"link: no network namespaces ({lk.unavailable_reason()}): senders pace themselves",
            file=sys.stderr,
        )
    profiles, proc_name, compute_source = host_profiles()
    dprof = profiles["digits_cnn"]
    base = Request.make(*_hw(), up_bps=1e6, down_bps=1e6, rtt_s=0.02, eps_pp=1.0)

    # accuracy, in process, on the validation half (three views)
    from profiling.chain import Chain
    from profiling.digits import eval_views, load_split

    plans = digits_plans(args.n_opt, args.n_rand, args.seed)
    sp = load_split()
    dm = load_split_model("digits_cnn", trained=True)
    xv, yv = eval_views(sp.x_val, sp.y_val)
    chain = Chain(dm.units, xv, yv)
    net_chain = Chain(dm.units, sp.x_val[: args.n_net], sp.y_val[: args.n_net])
    pred_drop = evaluate_plans(dprof, base, [p for p, _, _ in plans]).drop_pp
    meas_drop = np.array([chain.drop_pp(p, 0)[0] for p, _, _ in plans])
    eps = np.array([e for _, e, _ in plans])

    # network groups
    groups: list[tuple[str, list[dict], float | None]] = []
    for k, rate in enumerate(RATES_MBPS):
        jobs = []
        for i in range(k, len(plans), len(RATES_MBPS)):
            p, e, _ = plans[i]
            jobs.append(
                {
                    "model": "digits_cnn",
                    "plan": p.to_json_dict(),
                    "n": args.n_net,
                    "idx": i,
                    "request": request_json(rate, rate, e),
                    "rate": rate,
                    **({"pace_up_bps": rate * 1e6, "pace_down_bps": rate * 1e6} if mode == "pace" else {}),
                }
            )
        groups.append((f"r{rate:g}", jobs, rate))
    trace_jobs = [
        {
            "model": "digits_cnn",
            "plan": plans[i][0].to_json_dict(),
            "n": args.n_net,
            "idx": i,
            "request": request_json(10.0, 10.0, plans[i][1]),
            "rate": None,
        }
        for i in range(0, min(24, len(plans)), 2)
    ]
    rn_plans = [
        Plan(1, (8,), 8),
        Plan(3, (4, 4, 4), 4),
        Plan(5, (6, 6, 6, 6, 6), 6),
        Plan(0, (), 32),
        Plan(11, (4,) * 11, 8),
    ]
    rn_jobs = [
        {
            "model": "resnet18",
            "plan": p.to_json_dict(),
            "n": 3,
            "idx": -1,
            "request": request_json(50.0, 50.0, 100.0),
            "rate": 50.0,
            **({"pace_up_bps": 50e6, "pace_down_bps": 50e6} if mode == "pace" else {}),
        }
        for p in rn_plans
    ]
    groups.append(("resnet18", rn_jobs, 50.0))

    results: list[tuple[dict, dict]] = []
    trace_results: list[tuple[dict, dict]] = []
    trace_info = None
    with tempfile.TemporaryDirectory(prefix="qsx") as tmpd:
        tmp = Path(tmpd)
        link = lk.ShapedLink(1e6, 1e6).__enter__() if mode == "netns" else None
        try:
            for tag, jobs, rate in groups:
                if link is not None:
                    link.set_rates(rate * 1e6, rate * 1e6)
                results += list(zip(jobs, run_group(jobs, mode, link, tmp, tag), strict=True))
            if link is not None and TRACE.exists():
                from execution.run import load_trace_pair

                up_tr, down_tr = load_trace_pair(TRACE)
                f_up, f_down = lk.rate_function(up_tr), lk.rate_function(down_tr)
                t_play = link.play(f_up, f_down, 0.1)
                trace_results = list(
                    zip(trace_jobs, run_group(trace_jobs, mode, link, tmp, "trace"), strict=True)
                )
                trace_info = (f_up, f_down, t_play, up_tr.name)
        finally:
            if link is not None:
                link.close()

    # figures
    payload_err, head_over, tr_err, comp_err, overheads, mism = [], [], [], [], [], 0
    comp_side: list[str] = []
    rn_rows = []
    for job, run in results:
        prof = profiles[job["model"]]
        p = Plan(job["plan"]["cut"], tuple(job["plan"]["weight_bits"]), job["plan"]["act_bits"])
        L = prof.n_units
        for nb, b, n in zip(
            run["head_payload_bytes"], run["head_tensor_bits"], run["head_tensor_elems"], strict=True
        ):
            payload_err.append(abs(nb - n * b / 8))
        if run["act_payload_bytes"]:
            ab = prof.input_bits if p.cut == 0 else p.act_bits
            payload_err.append(
                abs(
                    run["act_payload_bytes"] - prof.in_elems * ab / 8
                    if p.cut == 0
                    else run["act_payload_bytes"] - prof.out_elems[p.cut - 1] * ab / 8
                )
            )
        req = link_request(base, job["rate"], job["rate"], proc_name)
        f = evaluate_plans(prof, req, [p])
        rate = job["rate"] * 1e6
        if p.cut > 0:
            model_head_bytes = float(np.sum(prof.params[: p.cut] * np.array(p.weight_bits))) / 8
            head_over.append(run["head_bytes"] / model_head_bytes - 1)
            tr_err.append(ape(RTT_MS / 1e3 + run["head_bytes"] * 8 / rate, run["ship_s"]))
            comp_err.append(cape(float(f.t_dev_s[0]), float(np.median(run["head_s"]))))
            comp_side.append(job["model"] + ":head")
        if p.cut < L:
            tr_err.append(ape(RTT_MS / 2e3 + run["act_bytes"] * 8 / rate, float(np.median(run["up_s"]))))
            comp_err.append(cape(float(f.t_srv_s[0]), float(np.median(run["tail_s"]))))
            comp_side.append(job["model"] + ":tail")
            overheads += [
                e - h - u - t
                for e, h, u, t in zip(run["e2e_s"], run["head_s"], run["up_s"], run["tail_s"], strict=True)
            ]
        if job["model"] == "digits_cnn":
            mism += int((torch.tensor(run["preds"]) != _chain_preds(net_chain, p)).sum())
        else:
            rn_rows.append(
                {
                    "plan": job["plan"],
                    "bytes_down": run["bytes_down"],
                    "bytes_up": run["bytes_up"],
                    "ship_s": run["ship_s"],
                    "head_s": float(np.median(run["head_s"])),
                    "head_pred_s": float(f.t_dev_s[0]),
                    "up_s": float(np.median(run["up_s"])) if run["up_s"] else 0.0,
                    "tail_s": float(np.median(run["tail_s"])) if run["tail_s"] else 0.0,
                    "tail_pred_s": float(f.t_srv_s[0]),
                    "unpack_s": run["unpack_s"],
                }
            )
    trace_err = []
    if trace_info is not None:
        f_up, f_down, t_play, _ = trace_info
        for job, run in trace_results:
            p = Plan(job["plan"]["cut"], tuple(job["plan"]["weight_bits"]), job["plan"]["act_bits"])
            if p.cut > 0:
                t0 = run["t_hello"] - t_play + RTT_MS / 2e3 + run["prep_s"]
                pred = RTT_MS / 1e3 + lk.transfer_s(f_down, t0, run["head_bytes"] * 8, 0.1)
                trace_err.append(ape(pred, run["ship_s"]))
            for ts, us in zip(run["t_send"], run["up_s"], strict=True):
                pred = RTT_MS / 2e3 + lk.transfer_s(f_up, ts - t_play, run["act_bytes"] * 8, 0.1)
                trace_err.append(ape(pred, us))
    feas = pred_drop <= eps + 1e-9
    out = {
        "plans": len(plans),
        "plans_optimal": args.n_opt,
        "plans_random": len(plans) - args.n_opt,
        "link": mode,
        "rates_mbps": list(RATES_MBPS),
        "rtt_ms": RTT_MS,
        "trace": trace_info[3] if trace_info else None,
        "payload_bytes_max_err": float(max(payload_err)),
        "header_bytes": HEADER_BYTES,
        "head_wire_over_model_bytes_median_pct": round(100 * float(np.median(head_over)), 2),
        "transfer_mape": round(float(np.mean(tr_err)), 4),
        "transfer_n": len(tr_err),
        "transfer_ape_p90": round(float(np.percentile(tr_err, 90)), 4),
        "trace_transfer_mape": round(float(np.mean(trace_err)), 4) if trace_err else None,
        "trace_transfer_n": len(trace_err),
        "compute_mape": round(float(np.mean(comp_err)), 4),
        "compute_source": compute_source,
        "compute_ape_median": round(float(np.median(comp_err)), 4),
        **{
            f"compute_mape_{k}": _mape(comp_err, comp_side, k)
            for k in ("digits_cnn", "resnet18", "digits_cnn:head", "digits_cnn:tail")
        },
        "compute_idle_over_warm_digits": idle_ratio(),
        "compute_ratio_median": round(float(np.median(comp_ratio)), 4),
        "safe_rate": round(float(np.mean(meas_drop[feas] <= eps[feas] + 1e-9)), 4),
        "safe_n": int(feas.sum()),
        "drop_mae_pp": round(float(np.mean(np.abs(meas_drop - pred_drop))), 4),
        "drop_mae_pp_predicted_le_2": round(float(np.mean(np.abs(meas_drop - pred_drop)[pred_drop <= 2])), 4),
        "network_vs_in_process_pred_mismatches": mism,
        "overhead_ms": round(1e3 * float(np.median(overheads)), 3),
        "resnet18": rn_rows,
        "loadavg_start": round(load0, 2),
        "loadavg_end": round(os.getloadavg()[0], 2),
        "wall_s": round(time.time() - t_start, 1),
    }
    print(json.dumps(out))


def _mape(err: list[float], tags: list[str], prefix: str) -> float:
    sel = [e for e, t in zip(err, tags, strict=True) if t.startswith(prefix)]
    return round(float(np.mean(sel)), 4) if sel else float("nan")


def idle_ratio(gap_s: float = 0.01, n: int = 40) -> float:
    """Median whole-network time of the digits CNN after gap_s idle, over back to back."""
    m = load_split_model("digits_cnn", trained=True)
    x = torch.zeros((1, *m.input_shape))
    med = []
    for gap in (0.0, gap_s):
        ts = []
        for _ in range(n):
            time.sleep(gap)
            t0 = time.perf_counter()
            m.run(0, m.n_units, x)
            ts.append(time.perf_counter() - t0)
        med.append(float(np.median(ts)))
    return round(med[1] / med[0], 3)


def _chain_preds(chain, plan: Plan) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Top-1 of the quantized chain per image (round to nearest), as the network path computes it."""
    from profiling.quantize import quantize_activation, quantized_unit

    h = chain.acts[0]
    L = chain.n_units
    with torch.no_grad():
        for i in range(L):
            if i < plan.cut:
                with quantized_unit(chain.units[i], plan.weight_bits[i]):
                    h = chain.units[i](h)
            else:
                h = chain.units[i](h)
            if i == plan.cut - 1 and 0 < plan.cut < L:
                h = quantize_activation(h, plan.act_bits)
    if plan.cut == 0:
        h = chain.units[0](quantize_activation(chain.acts[0], 8))
        for u in chain.units[1:]:
            h = u(h)
    return h.argmax(1)


def _hw():  # type: ignore[no-untyped-def]
    from system.hardware import get_device, get_server

    return get_device("jetson_nano"), get_server("t4")


if __name__ == "__main__":
    main()
