"""Command line: ``python -m system plan --profile FILE --request FILE [--decider NAME]``.

Prints the plan and its figures as one JSON object. Bad input prints one line naming the
field and the allowed range and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from system.baselines import DECIDERS
from system.cost import plan_report
from system.errors import cli_main
from system.evidence import WIDTH_MODES
from system.hardware import catalog_entries
from system.profiles import builtin_profile_names, load_profile, with_widths
from system.request import REQUEST_JSON_FIELDS, load_request_file


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m system", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("plan", help="decide one request and print the plan as JSON")
    pl.add_argument("--profile", required=True,
                    help=f"profile JSON file or shipped name ({', '.join(builtin_profile_names())})")
    pl.add_argument("--request", required=True,
                    help="request JSON file, or - for standard input (see `request-fields`)")
    pl.add_argument("--decider", default="optimal", choices=sorted(DECIDERS))
    pl.add_argument("--widths", choices=list(WIDTH_MODES), default=None,
                    help="bit widths offered: those the profile's evidence backs (its default) or "
                    "every width, extrapolating the law (flagged in the report's 'extrapolated')")
    sub.add_parser("catalog", help="list the device and server catalog with sources")
    sub.add_parser("request-fields", help="list the request JSON fields with units")
    return ap


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.cmd == "plan":
        profile = with_widths(load_profile(args.profile), args.widths, "--widths")
        req = load_request_file(args.request)
        plan = DECIDERS[args.decider](profile, req)
        out = {"decider": args.decider, "profile": profile.name, **plan_report(profile, req, plan)}
        print(json.dumps(out, indent=1, allow_nan=False))
    elif args.cmd == "catalog":
        print(json.dumps({kind: catalog_entries(kind) for kind in ("devices", "servers")}, indent=1))
    else:
        print(json.dumps(REQUEST_JSON_FIELDS, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
