"""Command line: the planning service over HTTP (FastAPI served by uvicorn).

``python -m service [--bundle DIR | --model NAME]... [--host H] [--port P] [--workers N]
[--fallback F]``.

Every bundle is verified before uvicorn starts (checksums; its signature with ``--pubkey``
or ``$QSPLIT_BUNDLE_PUBKEY``): a bad one prints one line and exits with code 2. With more
than one worker, uvicorn starts each from :func:`service.app.app_from_env` and the workers
share their metrics through a fresh ``PROMETHEUS_MULTIPROC_DIR``. SIGINT or SIGTERM stops
accepting connections and finishes the requests in flight (up to ``--graceful-timeout``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from runtime.dispatcher import FALLBACKS
from runtime.signing import PUBKEY_ENV
from service.app import CONFIG_ENV, ServiceConfig, create_app, load_all
from service.metrics import MULTIPROC_ENV
from system.errors import QsplitInputError, check_finite, cli_main


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", action="append", type=Path, default=[],
                    help="bundle folder to serve (repeatable; the first is the default model)")
    ap.add_argument("--model", action="append", default=[],
                    help="shipped model whose committed bundle to serve (repeatable; default "
                         "resnet18 when no bundle is named)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--fallback", default="out_of_range", choices=FALLBACKS,
                    help="as `python -m runtime decide --fallback` (default out_of_range)")
    ap.add_argument("--refine", action="store_true", help="refine each plan by a local search")
    ap.add_argument("--no-trivial-guard", action="store_true",
                    help="return the policy's guarded plan even where a fixed plan is cheaper")
    ap.add_argument("--pubkey", type=Path, default=None,
                    help=f"Ed25519 public key (PEM): refuse a bundle it did not sign (default: "
                         f"${PUBKEY_ENV} if set, else no signature check)")
    ap.add_argument("--max-body-bytes", type=int, default=1 << 20,
                    help="larger bodies get 413 (default 1048576)")
    ap.add_argument("--max-batch", type=int, default=4096,
                    help="larger batches get 413 (default 4096)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS threads per worker (default 1: the workers are the parallelism)")
    ap.add_argument("--graceful-timeout", type=float, default=30.0,
                    help="seconds to finish requests in flight after SIGTERM (default 30)")
    ap.add_argument("--access-log", action="store_true", help="log every request (slower)")
    return ap


def _check(args: argparse.Namespace) -> ServiceConfig:
    """The config, with every number checked and every bundle verified (one-line errors)."""
    for name, value, lo, hi in (("--port", args.port, 0, 65535), ("--workers", args.workers, 1, 256),
                                ("--max-body-bytes", args.max_body_bytes, 1, 1 << 30),
                                ("--max-batch", args.max_batch, 1, 1 << 20),
                                ("--blas-threads", args.blas_threads, 1, 256)):
        check_finite(name, value, lo=lo, hi=hi)
    check_finite("--graceful-timeout", args.graceful_timeout, lo=0.0, unit="s")
    cfg = ServiceConfig(bundles=tuple(str(p) for p in args.bundle), models=tuple(args.model),
                        fallback=args.fallback, refine=args.refine,
                        trivial_guard=not args.no_trivial_guard,
                        public_key=str(args.pubkey) if args.pubkey else None,
                        max_body_bytes=args.max_body_bytes, max_batch=args.max_batch,
                        blas_threads=args.blas_threads)
    if cfg.public_key is not None and not Path(cfg.public_key).is_file():
        raise QsplitInputError(f"--pubkey: {cfg.public_key} is not a file")
    load_all(cfg)
    return cfg


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    import uvicorn

    args = _parser().parse_args(argv)
    cfg = _check(args)
    common = {"host": args.host, "port": args.port, "access_log": args.access_log,
              "timeout_graceful_shutdown": args.graceful_timeout, "log_level": "info"}
    if args.workers == 1:
        uvicorn.run(create_app(cfg), **common)
        return 0
    os.environ[CONFIG_ENV] = cfg.to_env()
    own_dir = not os.environ.get(MULTIPROC_ENV)
    if own_dir:
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="qsplit-metrics-")
    try:
        uvicorn.run("service.app:app_from_env", factory=True, workers=args.workers, **common)
    finally:
        if own_dir:
            shutil.rmtree(os.environ[MULTIPROC_ENV], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
