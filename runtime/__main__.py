"""Command line: ``python -m runtime decide [--bundle DIR | --model NAME] --request FILE``.

Prints one JSON object: the plan (cut, weight_bits, act_bits), latency_s, energy_j, drop_pp,
cost, payload_reduction, feasible, and ``path`` (policy, repaired, fallback or refined).
Without ``--bundle`` the committed default bundle of ``--model`` (default resnet18) is used.
``python -m runtime verify [--bundle DIR | --model NAME]`` checks a bundle and prints what
it holds. Bad input or a refused bundle prints one line naming the field or the reason and
exits with code 2. numpy only: neither torch, gymnasium nor stable-baselines3 is imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.bundle import load_bundle
from runtime.dispatcher import DEFAULT_MODEL, FALLBACKS, Dispatcher, default_bundle_path
from system.errors import QsplitInputError
from system.request import (
    REQUEST_JSON_FIELDS,
    Request,
    load_request_file,
    request_from_json_text,
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    de = sub.add_parser("decide", help="decide one request with a policy bundle; print JSON")
    ve = sub.add_parser("verify", help="verify a bundle (checksums, versions, shapes); print it")
    for p in (de, ve):
        p.add_argument("--bundle", type=Path, default=None,
                       help="bundle folder (default: the committed bundle of --model)")
        p.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"shipped model whose committed bundle to use (default {DEFAULT_MODEL})")
    de.add_argument("--request", required=True,
                    help="request JSON file, or - for standard input; fields: "
                         + ", ".join(REQUEST_JSON_FIELDS))
    de.add_argument("--fallback", default="none", choices=FALLBACKS,
                    help="infeasible: an infeasible policy plan goes to the exact optimizer "
                         "instead of the repair; out_of_range: so does a request outside the "
                         "policy's trained feature range (default none: the env's repair)")
    de.add_argument("--refine", action="store_true",
                    help="refine the plan by a local search with the cost model")
    return ap


def _read_request(arg: str) -> Request:
    if arg == "-":
        return request_from_json_text(sys.stdin.read(), where="request <stdin>")
    return load_request_file(arg)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        path = args.bundle if args.bundle is not None else default_bundle_path(args.model)
        if args.cmd == "verify":
            b = load_bundle(path)
            c = b.contract
            print(json.dumps({"bundle": str(path), "ok": True, "model": b.model,
                              "profile_sha256": c["profile_sha256"],
                              "qsplit_version": c["qsplit_version"], "env": c["env"]["id"],
                              "units": b.codec.n_units, "bits": list(b.codec.bits),
                              "features": b.encoder.names, "masking": b.masking,
                              "layers": [h.weight.shape[0] for h in b.hidden],
                              "files": c.get("files", [])}, indent=1))
            return 0
        d = Dispatcher.load(path, fallback=args.fallback, refine=args.refine)
        req = _read_request(args.request)
        print(json.dumps({**d.report(req), "bundle": str(path)}, indent=1))
    except QsplitInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
