"""Does the measured per-unit time model (DESIGN.md §1a) pick the right cut, measured for real?

Part 1, the fit: for each model, this host's table in the shipped profile against the
model before §1a (MACs only: t = 2 macs / F, F fitted to the total) and after (eff, o, from
the profile's fit): MAPE per unit and per cut (head time sum_{l<=p} t[l], tail time).

Part 2, the cut: the device is this CPU under a CFS quota (``execution.cpulimit``: a share of
one core), the server this CPU at one thread; on one CPU both sides would cost the same and
the link alone would decide. Every cut of one fixed plan family (``--wbits`` weights,
``--abits`` activations; cut 0 uploads the 8-bit input) runs through ``execution/`` over the
tbf-shaped link at each uplink rate, rounds interleaving the cuts. The latency is per
inference with the head already on the device (T_down is left out of the model and the
head's shipping out of the measure: one shipped head serves many inferences). The cut each
model predicts best is compared with the measured best cut (``profiling.timecheck``).
Tables, all timed in this run with ``python -m profiling time-units`` on a copy of the
profile: the device's inside the quota (no profile carries it), the server's at one thread;
``macs`` is MACs only fitted to each of them, ``measured`` the tables themselves,
``shipped_server`` the device's with the server's table shipped in the profile for this host
(``host-<cpu>-1t``, what ``execution.hostmodel`` uses), and with ``--idle-ms`` both sides
timed after idle gaps (``time-units --idle-ms``), the conditions of a pipeline.

    python benchmarks/bench_cost_model.py                     # ~6-10 min on 2 busy cores
    python benchmarks/bench_cost_model.py --models digits_cnn --rounds 1 --n 3   # quick

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from execution import cpulimit  # noqa: E402
from execution import link as lk  # noqa: E402
from execution.batch import run_group  # noqa: E402
from execution.hostmodel import host_request  # noqa: E402
from profiling import timecheck as tc  # noqa: E402
from profiling.timing import carried_fit, host_processor_name, predict  # noqa: E402
from system.cost import evaluate_plans  # noqa: E402
from system.plan import Plan  # noqa: E402
from system.profiles import ModelProfile, TimeTable, load_profile, load_profile_file  # noqa: E402
from system.request import Request  # noqa: E402

DEV = "bench-device"  # the request's device label: the quota-limited CPU
SRV = "bench-server"  # the request's server label: this CPU, one thread
SWEEP_MBPS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
MARK = {"macs": "m", "measured": "t", "shipped_server": "s", "measured_idle": "i"}  # printed table


def fit_figures(prof: ModelProfile, name: str) -> dict:
    """MAPE per unit and per cut of MACs only and of §1a (eff, o) against table ``name``."""
    t = prof.time_tables[name].time_s
    out = {"table": name, "total_ms": round(float(t.sum()) * 1e3, 4)}
    models = {"macs_only": tc.macs_only_times(prof.macs, t)}
    if prof.efficiency is not None and name in prof.efficiency.fit.get("processors", {}):
        fp = prof.efficiency.fit["processors"][name]
        models["s1a"] = predict(prof.macs, prof.efficiency.eff, fp["flops_per_s"], fp["overhead_s"])
    for k, pred in models.items():
        out[f"mape_unit_{k}"] = round(tc.mape(pred, t), 4)
        out[f"mape_cut_{k}"] = round(tc.mape_per_cut(pred, t), 4)
    return out


def time_table(model: str, proc: str, tmp: Path, repeats: int, idle_ms: float,
               share: cpulimit.CpuShare | None) -> TimeTable:
    """``python -m profiling time-units`` on a copy of the shipped profile (inside the quota
    when ``share`` is given); the shipped file is not touched."""
    path = tmp / f"{model}_{proc}.json"
    path.write_text((ROOT / "system" / "data" / "profiles" / f"{model}.json").read_text())
    cmd = [sys.executable, "-m", "profiling", "time-units", "--profile", str(path), "--processor",
           proc, "--threads", "1", "--repeats", str(repeats), "--warmup", "3", "--idle-ms", str(idle_ms)]
    r = subprocess.run(share.wrap(cmd) if share else cmd, capture_output=True, text=True, cwd=ROOT,
                       timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"time-units {model} {proc}: {r.stderr.strip().splitlines()[-1:]}")
    return load_profile_file(path).time_tables[proc]


def fixed_plans(L: int, wbits: int, abits: int) -> list[Plan]:
    """Every cut 0..L of one plan family: ``wbits`` on every head unit, ``abits`` at the cut."""
    return [Plan.canonical(p, [wbits] * p, abits, L) for p in range(L + 1)]


def model_latency_s(prof: ModelProfile, dev_s: np.ndarray, srv_s: np.ndarray, base: Request,
                    up_mbps: float, down_mbps: float, rtt_ms: float, plans: list[Plan]) -> np.ndarray:
    """system.cost's latency of each plan with these two tables, less T_down (head on board)."""
    p = dataclasses.replace(prof, time_tables={DEV: TimeTable(dev_s, {}), SRV: TimeTable(srv_s, {})})
    req = dataclasses.replace(host_request(base, SRV, up_mbps * 1e6, down_mbps * 1e6, rtt_ms / 1e3),
                              device=DEV)
    f = evaluate_plans(p, req, plans)
    return f.latency_s - f.t_down_s


def request_json(up_mbps: float, down_mbps: float, rtt_ms: float) -> dict:
    """The HELLO's request: only the RTT (half added by each receiver) matters, the plan is fixed."""
    return {"device": "jetson_nano", "server": "t4", "up_mbps": up_mbps, "down_mbps": down_mbps,
            "rtt_ms": rtt_ms, "eps_pp": 100.0, "beta_s_per_j": 0.0, "reuse": 1}


def run_rate(model: str, plans: list[Plan], rate: float, args: argparse.Namespace, link: lk.ShapedLink,
             share: cpulimit.CpuShare, tmp: Path) -> dict[int, dict[str, list[float]]]:
    """Every cut ``args.rounds`` times (n inputs each), cuts interleaved; per cut the samples."""
    link.set_rates(rate * 1e6, args.down_mbps * 1e6)
    jobs = [{"model": model, "plan": p.to_json_dict(), "n": args.n, "idx": p.cut, "rate": rate,
             "request": request_json(rate, args.down_mbps, args.rtt_ms)}
            for _ in range(args.rounds) for p in plans]
    runs = run_group(jobs, "netns", link, tmp, f"{model}_r{rate:g}", wrap_device=share.wrap)
    keys = ("e2e_s", "head_s", "up_s", "tail_s")
    out: dict[int, dict[str, list[float]]] = {p.cut: {k: [] for k in keys} for p in plans}
    for job, run in zip(jobs, runs, strict=True):
        for k in keys:
            out[job["idx"]][k] += run[k]
    return out


def stages_ms(m: dict[str, list[float]]) -> dict[str, float]:
    """Median head, up, tail and the rest (packing and unpacking the cut tensor, the result)."""
    n = len(m["e2e_s"])
    parts = {k: np.array(m[k] or [0.0] * n) for k in ("head_s", "up_s", "tail_s")}
    rest = np.array(m["e2e_s"]) - sum(parts.values())
    return {**{k.removesuffix("_s"): round(float(np.median(v)) * 1e3, 3) for k, v in parts.items()},
            "rest": round(float(np.median(rest)) * 1e3, 3)}


def cut_figures(prof: ModelProfile, tables: dict[str, tuple[np.ndarray, np.ndarray]],
                meas: dict[int, dict[str, list[float]]], plans: list[Plan], base: Request, rate: float,
                args: argparse.Namespace) -> dict:
    """Per rate: measured latency of every cut, each model's predicted latency, choice and regret."""
    lat = {p: float(np.median(v["e2e_s"])) for p, v in meas.items()}
    out: dict = {"rate_mbps": rate, "measured_ms": {p: round(v * 1e3, 3) for p, v in lat.items()},
                 "measured_best_cut": tc.chosen_cut(lat),
                 "stages_ms": {p: stages_ms(v) for p, v in meas.items()}}
    for k, (dev, srv) in tables.items():
        pred = model_latency_s(prof, dev, srv, base, rate, args.down_mbps, args.rtt_ms, plans)
        cut = tc.chosen_cut({p.cut: float(v) for p, v in zip(plans, pred, strict=True)})
        out[f"predicted_ms_{k}"] = {p.cut: round(float(v) * 1e3, 3) for p, v in zip(plans, pred, strict=True)}
        out[f"cut_{k}"] = cut
        out[f"cut_regret_{k}"] = round(tc.cut_regret(lat, cut), 4)
    return out


def _ape(pred_s: float, meas_s: list[float]) -> float:
    """|measured median / predicted - 1|, as bench_execution's compute figures."""
    return abs(float(np.median(meas_s)) / float(pred_s) - 1.0)


def compute_mape(tables: dict[str, tuple[np.ndarray, np.ndarray]],
                 meas: list[dict[int, dict[str, list[float]]]], L: int) -> dict[str, float]:
    """MAPE of each table's head (device) and tail (server) compute against the pipeline's."""
    out = {}
    for k, (dev, srv) in tables.items():
        head, tail = [], []
        for m in meas:
            head += [_ape(dev[:p].sum(), m[p]["head_s"]) for p in range(1, L + 1)]
            tail += [_ape(srv[p:].sum(), m[p]["tail_s"]) for p in range(L)]
        out[k] = {"head": round(float(np.mean(head)), 4), "tail": round(float(np.mean(tail)), 4),
                  "all": round(float(np.mean(head + tail)), 4)}
    return out


def sweep(prof: ModelProfile, tables: dict[str, tuple[np.ndarray, np.ndarray]], plans: list[Plan],
          base: Request, args: argparse.Namespace) -> dict[str, list[int]]:
    """Each model's chosen cut over SWEEP_MBPS: how the rates were chosen (before running)."""
    return {k: [tc.chosen_cut({p.cut: float(v) for p, v in zip(plans, model_latency_s(
        prof, d, s, base, r, args.down_mbps, args.rtt_ms, plans), strict=True)}) for r in SWEEP_MBPS]
        for k, (d, s) in tables.items()}


def bench_model(model: str, args: argparse.Namespace, link: lk.ShapedLink, share: cpulimit.CpuShare,
                tmp: Path) -> dict:
    prof = load_profile(model)
    host = host_processor_name(1)
    if host not in prof.time_tables:
        raise RuntimeError(f"profile {model} carries no table for {host}: run time-units first")
    L = prof.n_units
    t0 = time.time()
    shipped = prof.time_tables[host].time_s
    dev = time_table(model, DEV, tmp, args.repeats[model], 0.0, share).time_s
    srv = time_table(model, SRV, tmp, args.repeats[model], 0.0, None).time_s
    tables = {"macs": (tc.macs_only_times(prof.macs, dev), tc.macs_only_times(prof.macs, srv)),
              "measured": (dev, srv), "shipped_server": (dev, shipped)}
    idle_tables = {}
    if args.idle_ms > 0:
        idle_tables["measured_idle"] = (
            time_table(model, DEV, tmp, args.repeats[model], args.idle_ms, share).time_s,
            time_table(model, SRV, tmp, args.repeats[model], args.idle_ms, None).time_s)
    base = Request.make(*_hw(), up_bps=1e6, down_bps=1e6, rtt_s=args.rtt_ms / 1e3, eps_pp=100.0)
    plans = fixed_plans(L, args.wbits, args.abits)
    out: dict = {
        "fit": fit_figures(prof, host),
        "device_table_ms": [round(float(v) * 1e3, 4) for v in dev],
        "server_table_ms": [round(float(v) * 1e3, 4) for v in srv],
        "device_over_server_total": round(float(dev.sum() / srv.sum()), 3),
        "server_over_shipped_total": round(float(srv.sum() / shipped.sum()), 3),
        "device_fit_carried": carried_fit(dataclasses.replace(
            prof, time_tables={**prof.time_tables, DEV: TimeTable(dev, {})}), DEV),
        "sweep_mbps": list(SWEEP_MBPS),
        "sweep_cuts": sweep(prof, {**tables, **idle_tables}, plans, base, args),
        "timing_s": round(time.time() - t0, 1),
    }
    for k, (d, s) in idle_tables.items():
        out[f"{k}_total_over_warm"] = [round(float(d.sum() / dev.sum()), 3),
                                       round(float(s.sum() / srv.sum()), 3)]
    meas, rows = [], []
    for rate in args.rates_mbps:
        m = run_rate(model, plans, rate, args, link, share, tmp)
        meas.append(m)
        rows.append(cut_figures(prof, {**tables, **idle_tables}, m, plans, base, rate, args))
    out["rates"] = rows
    out["compute_mape"] = compute_mape({**tables, **idle_tables}, meas, L)
    for k in {**tables, **idle_tables}:
        reg = [r[f"cut_regret_{k}"] for r in rows]
        out[f"cut_regret_{k}_worst"] = max(reg)
        out[f"cut_regret_{k}_mean"] = round(float(np.mean(reg)), 4)
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def _hw():  # type: ignore[no-untyped-def]
    from system.hardware import get_device, get_server

    return get_device("jetson_nano"), get_server("t4")


def print_table(model: str, r: dict) -> None:
    """Cuts down, rates across: measured ms, and each model's choice marked."""
    keys = [k.removeprefix("cut_") for k in r["rates"][0] if k.startswith("cut_") and "regret" not in k]
    print(f"{model}: measured latency per inference, ms (median); * measured best; chosen by "
          + ", ".join(f"{MARK[k]} {k}" for k in keys))
    print("cut  " + "".join(f"{rr['rate_mbps']:>14g}" for rr in r["rates"]))
    for p in r["rates"][0]["measured_ms"]:
        cells = []
        for rr in r["rates"]:
            mark = ("*" if rr["measured_best_cut"] == p else "") + "".join(
                MARK[k] for k in keys if rr[f"cut_{k}"] == p)
            cells.append(f"{rr['measured_ms'][p]:>9.1f} {mark:<4}")
        print(f"{p:>3}  " + "".join(cells))
    for k in keys:
        print(f"  cut_regret_{k}: " + ", ".join(f"{rr[f'cut_regret_{k}']:.4f}" for rr in r["rates"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "digits_cnn"])
    ap.add_argument("--rates-mbps", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    ap.add_argument("--down-mbps", type=float, default=100.0, help="downlink (ships the head)")
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--cpu-share", type=float, default=0.25, help="the device's share of one core")
    ap.add_argument("--wbits", type=int, default=8)
    ap.add_argument("--abits", type=int, default=4)
    ap.add_argument("--n", type=int, default=8, help="inputs per run of a cut")
    ap.add_argument("--rounds", type=int, default=2, help="runs of every cut per rate")
    ap.add_argument("--idle-ms", type=float, default=10.0, help="idle gap for the idle tables (0: none)")
    args = ap.parse_args()
    args.repeats = {"resnet18": 20, "digits_cnn": 100}
    why = lk.unavailable_reason() or cpulimit.unavailable_reason()
    if why is not None:
        sys.exit(f"error: this benchmark needs root, network namespaces and a CPU quota ({why})")
    t_start, load0 = time.time(), os.getloadavg()
    lk.clean_leftovers()
    out: dict = {"link": "netns tbf", "rates_mbps": args.rates_mbps, "down_mbps": args.down_mbps,
                 "rtt_ms": args.rtt_ms, "cpu_share": args.cpu_share, "plan_family":
                 {"weight_bits": args.wbits, "act_bits": args.abits, "input_bits_at_cut_0": 8},
                 "n_per_run": args.n, "rounds": args.rounds, "idle_ms": args.idle_ms,
                 "latency": "per inference, head on the device: T_dev + T_up + T_srv (model), "
                            "median e2e of input to result (measured)", "models": {}}
    with tempfile.TemporaryDirectory(prefix="qsx") as tmpd, cpulimit.CpuShare(args.cpu_share) as share:
        link = lk.ShapedLink(args.rates_mbps[0] * 1e6, args.down_mbps * 1e6).__enter__()
        try:
            for model in args.models:
                out["models"][model] = bench_model(model, args, link, share, Path(tmpd))
                print_table(model, out["models"][model])
        finally:
            link.close()
    main_model = out["models"].get("resnet18") or next(iter(out["models"].values()))
    for k in MARK:
        for s in ("worst", "mean"):
            if f"cut_regret_{k}_{s}" in main_model:
                out[f"cut_regret_{k}_{s}"] = main_model[f"cut_regret_{k}_{s}"]
    out["cut_regret_measured"] = main_model["cut_regret_measured_worst"]
    out["cut_regret_macs"] = main_model["cut_regret_macs_worst"]
    out["cut_regret_measured_target"] = 0.01
    out.update(loadavg_start=[round(x, 2) for x in load0], loadavg_end=[round(x, 2) for x in os.getloadavg()],
               wall_s=round(time.time() - t_start, 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
