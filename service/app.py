"""The FastAPI app: the runtime dispatcher behind HTTP (see :mod:`service` for the endpoints).

Each worker's BLAS runs ``blas_threads`` threads (default 1, set with threadpoolctl when the
app is made): the workers are the parallelism, and a BLAS pool per worker spinning on
cores the other workers and the clients need cost the batch path two thirds of its
throughput on a 2-core machine (``benchmarks/bench_service.py``).

Every bundle is verified when the app is made (checksums; the signature when a public key
is configured), so a worker never serves from a bundle it could not trust. Decisions run
on the event loop's thread, one at a time per worker: the dispatcher is called as in a
single-threaded program, and a worker's throughput is bounded by its core either way.

A body over ``max_body_bytes`` is read to its end (so the connection stays in step) and
answered 413 before the app sees it; a batch of more than ``max_batch`` items gets 413 too.
Bad input gets 422 with the project's one-line message and the field as the user wrote
it, its unit and its range (:mod:`service.schema`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema
from starlette.requests import Request as HTTPRequest

from runtime.batch import unique_rows
from runtime.bundle import SIG_FILE, SUMS_FILE, sha256_file
from runtime.dispatcher import FALLBACKS, PATHS, Dispatcher, default_bundle_path
from runtime.features import from_request, to_request
from service.metrics import Metrics
from service.schema import PlanRequest, PlansRequest, RequestInputError, parse_request, problem
from system.accuracy import drop_pp
from system.cost import plan_report
from system.errors import QsplitInputError, check_keys
from system.json_batch import json_rows
from system.loaders import decode_text, parse_json
from system.plan import Plan
from system.request import Request

CONFIG_ENV = "QSPLIT_SERVICE_CONFIG"
ENDPOINTS = ("/v1/plan", "/v1/plans", "/v1/models", "/healthz", "/metrics")
EXAMPLE = {"device": "jetson_nano", "server": "t4", "up_mbps": 5.0, "down_mbps": 20.0,
           "rtt_ms": 40.0, "eps_pp": 1.0, "beta_s_per_j": 0.05, "reuse": 1}

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]


@dataclass(frozen=True)
class ServiceConfig:
    """What a worker serves; travels to uvicorn's worker processes as JSON in an env var."""

    bundles: tuple[str, ...] = ()        # bundle folders
    models: tuple[str, ...] = ()         # shipped models whose committed bundles to serve
    fallback: str = "out_of_range"
    refine: bool = False
    trivial_guard: bool = True
    public_key: str | None = None        # None: $QSPLIT_BUNDLE_PUBKEY if set, else unchecked
    max_body_bytes: int = 1 << 20
    max_batch: int = 4096
    blas_threads: int = 1                # per worker: the workers are the parallelism
    started: float = field(default_factory=time.time)

    def to_env(self) -> str:
        """The JSON text a worker reads back with :meth:`from_env`."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str | None = None) -> ServiceConfig:
        """The config the parent process wrote to :data:`CONFIG_ENV`."""
        d = json.loads(text if text is not None else os.environ[CONFIG_ENV])
        return cls(**{**d, "bundles": tuple(d["bundles"]), "models": tuple(d["models"])})


@dataclass(frozen=True)
class Loaded:
    """A served bundle: its dispatcher and what /v1/models says about it."""

    name: str
    path: Path
    dispatcher: Dispatcher
    sums_sha256: str
    signed: bool


def load_all(cfg: ServiceConfig) -> dict[str, Loaded]:
    """Verify and load every configured bundle (a BundleError, one line, on a bad one)."""
    if cfg.fallback not in FALLBACKS:
        raise QsplitInputError(f"--fallback: {cfg.fallback!r} is not one of {list(FALLBACKS)}")
    paths = [Path(p) for p in cfg.bundles] + [default_bundle_path(m) for m in cfg.models]
    out: dict[str, Loaded] = {}
    for p in paths or [default_bundle_path()]:
        d = Dispatcher.load(p, fallback=cfg.fallback, refine=cfg.refine,
                            trivial_guard=cfg.trivial_guard, public_key=cfg.public_key)
        name = d.profile.name
        if name in out:
            raise QsplitInputError(f"--bundle {p}: model {name!r} is already served from "
                                   f"{out[name].path}")
        out[name] = Loaded(name, p, d, sha256_file(p / SUMS_FILE), (p / SIG_FILE).is_file())
    return out


def _json(obj: object, status: int = 200) -> Response:
    return Response(json.dumps(obj, allow_nan=False), status_code=status,
                    media_type="application/json")


class BodyLimit:
    """413 for a body over ``limit`` bytes (read to its end first); counts and times requests."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if length is not None and length.isdigit() and int(length) <= self.limit:
                await self.app(scope, receive, send_)
            else:
                await self._buffered(scope, receive, send_)
        finally:
            path = scope["path"]
            ep = path if path in ENDPOINTS else "other"
            self.metrics.requests.labels(ep, str(status[0])).inc()
            self.metrics.latency.labels(ep).observe(time.perf_counter() - start)

    async def _buffered(self, scope: Scope, receive: Callable[[], Awaitable[dict]],
                        send: Callable[[dict], Awaitable[None]]) -> None:
        """Read the body here; past the limit, drain it and answer 413, else replay it."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            size += len(msg.get("body", b""))
            if size <= self.limit:
                chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        if size > self.limit:
            self.metrics.input_errors.labels("body").inc()
            err = {"msg": f"body: {size} bytes is more than the limit of {self.limit} bytes",
                   "field": "body", "unit": "bytes", "range": f"[0, {self.limit}]"}
            r = _json({"detail": [{"loc": ["body"], "type": "too_large", **err}]}, 413)
            await r(scope, receive, send)
            return
        body, sent = b"".join(chunks), [False]

        async def replay() -> dict:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _openapi(app: FastAPI) -> Callable[[], dict]:
    """The OpenAPI document, with the derived request models as its body schemas."""
    def build() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        _, defs = models_json_schema([(PlanRequest, "validation"), (PlansRequest, "validation")],
                                     ref_template="#/components/schemas/{model}")
        doc.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        for path, model in (("/v1/plan", "PlanRequest"), ("/v1/plans", "PlansRequest")):
            doc["paths"][path]["post"]["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}
        app.openapi_schema = doc
        return doc
    return build


def create_app(cfg: ServiceConfig | None = None) -> FastAPI:
    """The app serving ``cfg``'s bundles (verified here; refused with a one-line error)."""
    from threadpoolctl import threadpool_limits

    from service.routes import add_routes

    cfg = cfg or ServiceConfig()
    threadpool_limits(cfg.blas_threads, user_api="blas")     # for this process's lifetime
    loaded = load_all(cfg)
    metrics = Metrics()
    app = FastAPI(title="qsplit planning service", version=_version(),
                  description="Plans edge inference per request: where to cut the network and "
                              "how many bits each device-side unit and the cut tensor get.")
    app.state.cfg, app.state.loaded, app.state.metrics = cfg, loaded, metrics
    app.state.default = next(iter(loaded))

    @app.exception_handler(QsplitInputError)
    async def _bad_input(_: HTTPRequest, exc: QsplitInputError) -> Response:
        p = exc if isinstance(exc, RequestInputError) else problem(str(exc))
        metrics.input_errors.labels(p.field).inc()
        status = p.status
        where = "query" if p.field == "model" else "body"
        return _json({"detail": [{"loc": [where, p.field], "type": "value_error",
                                  **p.to_json()}]}, status)

    add_routes(app)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory in each worker process: the config the command line wrote."""
    return create_app(ServiceConfig.from_env())


def _version() -> str:
    from runtime.bundle import QSPLIT_VERSION
    return QSPLIT_VERSION


async def read_json(request: HTTPRequest, where: str) -> object:
    """The body as JSON, read strictly (:func:`system.loaders.parse_json`)."""
    body = await request.body()
    return parse_json(decode_text(body, where), where)


def batch_items(d: Dispatcher, raw: object, max_batch: int, figures: bool
                ) -> tuple[list[dict], np.ndarray]:
    """Each item's answer (its plan or its error) and the count of each decision path.

    The items are read in groups (:func:`system.json_batch.json_rows`); any item that
    intake does not take is parsed alone (:func:`service.schema.parse_request`), which
    gives the one error a single request would get. Answers are built once per distinct
    plan: a batch holds few.
    """
    items = raw
    if not isinstance(items, list):
        raise RequestInputError(f"requests: expected a list of requests, got "
                                f"{type(items).__name__}", "requests")
    if len(items) > max_batch:
        raise RequestInputError(f"requests: {len(items)} items is more than the limit of "
                                f"{max_batch}", "requests", "items", f"[0, {max_batch}]", 413)
    out: list[dict] = [{}] * len(items)
    fast = json_rows(items)
    where, labels, rows = list(fast.taken), list(fast.labels), [fast.rows]
    singles: dict[int, Request] = {}
    for i in fast.deferred:
        try:
            r = singles[i] = parse_request(items[i], f"request[{i}]")
        except RequestInputError as exc:
            out[i] = {"error": exc.to_json()}
            continue
        where.append(i)
        labels.append((r.device, r.server))
        rows.append(np.asarray([from_request(r)], dtype=np.float64))
    counts = np.zeros(len(PATHS), dtype=np.int64)
    if not where:
        return out, counts
    M = np.concatenate(rows)
    cuts, wbits, abits, paths = d.decide_rows(M, labels)
    counts += np.bincount(paths, minlength=len(PATHS))
    L = d.profile.n_units
    key = np.concatenate([cuts[:, None], abits[:, None], paths[:, None], wbits], axis=1)
    distinct, inverse = unique_rows(key)
    if figures:
        for j, k in enumerate(inverse.tolist()):
            c, a, p, *w = distinct[k].tolist()
            i = where[j]
            req = singles.get(i) or to_request(tuple(M[j].tolist()), *labels[j])
            out[i] = {"plan": {**plan_report(d.profile, req, Plan.canonical(c, w, a, L)),
                               "path": PATHS[p]}}
        return out, counts
    drops = drop_pp(d.profile, distinct[:, 0], distinct[:, 3:], distinct[:, 1]).tolist()
    answers = []
    for (c, a, p, *w), drop in zip(distinct.tolist(), drops, strict=True):
        answers.append({"plan": {**Plan.canonical(c, w, a, L).to_json_dict(), "drop_pp": drop,
                                 "path": PATHS[p]}})
    for i, k in zip(where, inverse.tolist(), strict=True):
        out[i] = answers[k]
    return out, counts


def parse_batch(raw: object) -> tuple[object, bool]:
    """The batch body's items and its ``figures`` flag."""
    d = check_keys("body", raw, ["requests"], ["figures"])
    figures = d.get("figures", False)
    if not isinstance(figures, bool):
        raise RequestInputError(f"figures: expected true or false, got {str(figures)[:40]!r}",
                                "figures")
    return d["requests"], figures


__all__ = ["CONFIG_ENV", "EXAMPLE", "ServiceConfig", "app_from_env", "create_app", "load_all"]
