"""Command line: ``python -m runtime decide [--bundle DIR | --model NAME] --request FILE``.

Prints one JSON object: the plan (cut, weight_bits, act_bits), latency_s, energy_j, drop_pp,
cost, payload_reduction, feasible, ``path`` (policy, repaired, fallback, refined or trivial)
and ``out_of_range``. Without ``--bundle`` the committed default bundle of ``--model``
(default resnet18; a shipped model's name, never a path) is used.
``python -m runtime verify [--bundle DIR | --model NAME]`` checks a bundle and prints what
it holds. ``python -m runtime keygen`` makes an Ed25519 key pair and ``python -m runtime
sign`` signs a bundle with it; ``--pubkey`` (or ``$QSPLIT_BUNDLE_PUBKEY``) makes ``decide``
and ``verify`` refuse a bundle that is not signed by that key (:mod:`runtime.signing`).
Bad input or a refused bundle prints one line naming the field or the reason and exits
with code 2. numpy only: neither torch, gymnasium nor stable-baselines3 is imported.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from runtime.bundle import SUMS_FILE, load_bundle
from runtime.dispatcher import DEFAULT_MODEL, FALLBACKS, Dispatcher, default_bundle_path
from runtime.signing import PUBKEY_ENV, keygen, sign_bundle
from system.errors import QsplitInputError, cli_main
from system.request import REQUEST_JSON_FIELDS, load_request_file

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    de = sub.add_parser("decide", help="decide one request with a policy bundle; print JSON")
    ve = sub.add_parser("verify", help="verify a bundle (checksums, versions, shapes); print it")
    for p in (de, ve):
        p.add_argument("--bundle", type=Path, default=None,
                       help="bundle folder (default: the committed bundle of --model)")
        p.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"shipped model whose committed bundle to use (default {DEFAULT_MODEL}; "
                            "a name, not a path: give a folder with --bundle)")
        p.add_argument("--pubkey", type=Path, default=None,
                       help=f"Ed25519 public key (PEM): refuse a bundle it did not sign "
                            f"(default: ${PUBKEY_ENV} if set, else no signature check)")
    de.add_argument("--request", required=True,
                    help="request JSON file, or - for standard input; fields: "
                         + ", ".join(REQUEST_JSON_FIELDS))
    de.add_argument("--fallback", default="out_of_range", choices=FALLBACKS,
                    help="out_of_range (default): a request outside the policy's training "
                         "support goes to the exact optimizer; infeasible: an infeasible policy "
                         "plan does (instead of the env's repair); none: neither")
    de.add_argument("--refine", action="store_true",
                    help="refine the plan by a local search with the cost model")
    de.add_argument("--no-trivial-guard", action="store_true",
                    help="return the policy's guarded plan even where a fixed plan (fp32, 16 "
                         "or 8 bits at any cut) is cheaper")
    kg = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles")
    kg.add_argument("--private", required=True, type=Path, help="private key file to write (PEM)")
    kg.add_argument("--public", required=True, type=Path, help="public key file to write (PEM)")
    sg = sub.add_parser("sign", help="sign a bundle: write SHA256SUMS.sig in it")
    sg.add_argument("--bundle", required=True, type=Path, help="bundle folder")
    sg.add_argument("--key", required=True, type=Path, help="private key (PEM, from keygen)")
    return ap


def _bundle_path(args: argparse.Namespace) -> Path:
    if args.bundle is not None:
        return args.bundle
    if not _MODEL_NAME.match(args.model) or args.model in (".", ".."):
        raise QsplitInputError(f"--model: {args.model[:80]!r} is not a shipped model name "
                               "(for a bundle folder use --bundle)")
    return default_bundle_path(args.model)


def _run(args: argparse.Namespace) -> None:
    if args.cmd == "keygen":
        keygen(args.private, args.public)
        print(json.dumps({"private": str(args.private), "public": str(args.public)}))
        return
    if args.cmd == "sign":
        load_bundle(args.bundle, public_key=False)
        sig = sign_bundle(args.bundle, args.key, SUMS_FILE)
        print(json.dumps({"bundle": str(args.bundle), "signature": str(sig)}))
        return
    path = _bundle_path(args)
    if args.cmd == "verify":
        b = load_bundle(path, args.pubkey)
        c = b.contract
        print(json.dumps({"bundle": str(path), "ok": True, "model": b.model,
                          "profile_sha256": c["profile_sha256"],
                          "qsplit_version": c["qsplit_version"], "env": c["env"]["id"],
                          "units": b.codec.n_units, "bits": list(b.codec.bits),
                          "features": b.encoder.names, "masking": b.masking,
                          "layers": [h.weight.shape[0] for h in b.hidden],
                          "support": b.support is not None,
                          "files": c.get("files", [])}, indent=1))
        return
    d = Dispatcher.load(path, fallback=args.fallback, refine=args.refine,
                        trivial_guard=not args.no_trivial_guard, public_key=args.pubkey)
    req = load_request_file(args.request)
    print(json.dumps({**d.report(req), "bundle": str(path)}, indent=1, allow_nan=False))


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    _run(_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
