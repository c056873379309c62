"""``python -m execution {server,device,run,link}``: run a plan for real (see execution/)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from system.errors import QsplitInputError, cli_main
from system.loaders import parse_json, read_text


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m execution", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server", help="serve plans, heads and tails over TCP")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=47611)
    s.add_argument("--decider", default="optimal", help="optimal | bundle | PLAN.json")
    s.add_argument("--timeout", type=float, default=30.0, help="read timeout, s")
    s.add_argument("--ready-file", default=None)
    s.add_argument("--pace-down-mbps", type=float, default=None)
    s.add_argument("--preload", nargs="*", default=["digits_cnn"], help="models to load before listening")
    d = sub.add_parser("device", help="run inputs through the server's plan")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=47611)
    d.add_argument("--model", default="digits_cnn")
    d.add_argument("--request", required=True)
    d.add_argument("--plan", default=None, help="ask for this plan (JSON file)")
    d.add_argument("--n", type=int, default=20)
    d.add_argument("--timeout", type=float, default=30.0, help="read timeout, s")
    d.add_argument("--json-out", default=None)
    d.add_argument("--pace-up-mbps", type=float, default=None)
    r = sub.add_parser("run", help="server and device in two processes; predicted vs measured")
    r.add_argument("--model", default="digits_cnn")
    r.add_argument("--request", required=True)
    r.add_argument("--decider", default="optimal", help="optimal | bundle | PLAN.json")
    r.add_argument("--trace", default=None, help="replay a trace (Mahimahi .up/.down or a system format)")
    r.add_argument("--n", type=int, default=20)
    r.add_argument("--link", default="auto", choices=["auto", "netns", "pace", "none"])
    r.add_argument("--timeout", type=float, default=60.0)
    k = sub.add_parser(
        "link", help="make the shaped link and hold it until Ctrl-C; --clean removes leftovers"
    )
    k.add_argument("--up-mbps", type=float, default=5.0)
    k.add_argument("--down-mbps", type=float, default=20.0)
    k.add_argument("--trace", default=None)
    k.add_argument("--seconds", type=float, default=None, help="hold for this long, then clean up")
    k.add_argument("--clean", action="store_true")
    return ap


def _positive(name: str, v: float | None, unit: str) -> None:
    if v is not None and not v > 0:
        raise QsplitInputError(f"{name}: {v} {unit} must be > 0")


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd != "link":
        import torch

        torch.set_num_threads(1)
    if args.cmd == "server":
        from execution.deciders import make_decider
        from execution.server import ServerConfig, main_server

        _positive("--timeout", args.timeout, "s")
        _positive("--pace-down-mbps", args.pace_down_mbps, "Mbit/s")
        cfg = ServerConfig(
            make_decider(args.decider),
            read_timeout_s=args.timeout,
            down_pacer_bps=args.pace_down_mbps * 1e6 if args.pace_down_mbps else None,
        )
        return main_server(args.host, args.port, cfg, args.ready_file, tuple(args.preload))
    if args.cmd == "device":
        from execution.deciders import plan_from_json
        from execution.device import run_device
        from execution.models import load_split_model
        from execution.run import model_inputs
        from system.atomic import atomic_write_text

        _positive("--timeout", args.timeout, "s")
        request = parse_json(read_text(args.request, "request"), f"request {args.request}")
        m = load_split_model(args.model, trained=False)
        plan = None
        if args.plan:
            plan = plan_from_json(parse_json(read_text(args.plan, "plan"), "plan"), m.n_units)
        x, _ = model_inputs(args.model, args.n)
        res = asyncio.run(
            run_device(
                args.host,
                args.port,
                m,
                request,
                x,
                plan,
                args.timeout,
                up_pacer_bps=args.pace_up_mbps * 1e6 if args.pace_up_mbps else None,
            )
        )
        text = json.dumps(res.to_dict())
        if args.json_out:
            atomic_write_text(args.json_out, text + "\n")
        else:
            print(text)
        return 0
    if args.cmd == "run":
        from execution.run import execute, model_inputs, report, table

        request = parse_json(read_text(args.request, "request"), f"request {args.request}")
        raw = execute(
            args.model, request, args.decider, args.n, args.link, args.trace, timeout_s=args.timeout
        )
        rep = report(args.model, request, raw, model_inputs(args.model, args.n)[1])
        print(table(rep))
        print(json.dumps(rep))
        return 0
    from execution import link as lk

    if args.clean:
        print(json.dumps({"removed": lk.clean_leftovers()}))
        return 0
    reason = lk.unavailable_reason()
    if reason is not None:
        raise QsplitInputError(f"link: cannot make network namespaces ({reason})")
    with lk.ShapedLink(args.up_mbps * 1e6, args.down_mbps * 1e6) as link:
        if args.trace:
            from execution.run import load_trace_pair

            up, down = load_trace_pair(args.trace)
            link.play(lk.rate_function(up), lk.rate_function(down), 0.1)
        print(
            f"link: device netns {link.ns_dev} ({lk.DEV_ADDR}), server netns {link.ns_srv} ({lk.SRV_ADDR})",
            flush=True,
        )
        print(link.qdiscs(), flush=True)
        try:
            t_end = time.monotonic() + (args.seconds if args.seconds else 1e12)
            while time.monotonic() < t_end:
                time.sleep(min(0.2, max(0.0, t_end - time.monotonic())))
        except KeyboardInterrupt:
            print("link: interrupted, cleaning up", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
