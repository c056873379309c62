"""The endpoints: /v1/plan, /v1/plans, /v1/models, /healthz and /metrics.

Each handler reads its body itself (:func:`service.app.read_json`) and checks every request
with :func:`service.schema.parse_request`, so a single request and a batch item pass one
validation and give one kind of error; the OpenAPI page shows the derived models
(:func:`service.app._openapi`).
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.requests import Request as HTTPRequest

from runtime.dispatcher import PATHS
from service.app import EXAMPLE, Loaded, _json, batch_items, parse_batch, read_json
from service.schema import RequestInputError, parse_request

#: The ``model`` query parameter, read from the URL by the handlers themselves (a declared
#: FastAPI parameter costs its dependency solving on every request: about 20 us of the 430
#: an in-process ``/v1/plan`` took here) and shown in the OpenAPI document from here.
_MODEL_PARAM = {"parameters": [{
    "name": "model", "in": "query", "required": False, "schema": {"type": "string"},
    "description": "the served model to decide with (default: the first served)"}]}


def _pick(app: FastAPI, request: HTTPRequest) -> Loaded:
    loaded: dict[str, Loaded] = app.state.loaded
    model = request.query_params.get("model")
    if model is None:
        return loaded[app.state.default]
    if model not in loaded:
        raise RequestInputError(f"model: {model[:80]!r} is not served; served: {sorted(loaded)}",
                                "model")
    return loaded[model]


def add_routes(app: FastAPI) -> None:
    """Attach the endpoints to ``app`` (state: cfg, loaded, metrics, default)."""
    metrics = app.state.metrics
    first = app.state.loaded[app.state.default].dispatcher
    example_out = first.report(parse_request(EXAMPLE))

    @app.post("/v1/plan", summary="Plan one request",
              responses={200: {"content": {"application/json": {"example": example_out}}},
                         413: {"description": "body too large"},
                         422: {"description": "a field out of its range, of the wrong type, "
                                              "missing or unknown: the body names it"}},
              openapi_extra=_MODEL_PARAM)
    async def plan(request: HTTPRequest) -> Response:
        """The plan and its figures for one request (the JSON of `python -m system plan`)."""
        served = _pick(app, request)
        req = parse_request(await read_json(request, "request"))
        out = served.dispatcher.report(req)
        metrics.plans.labels(served.name, out["path"]).inc()
        if out["out_of_range"]:
            metrics.out_of_range.labels(served.name).inc()
        return _json(out)

    @app.post("/v1/plans", summary="Plan a batch; each item its plan or its own error",
              responses={413: {"description": "body too large or too many items"}},
              openapi_extra=_MODEL_PARAM)
    async def plans(request: HTTPRequest) -> Response:
        """Plans for many requests, in order: ``{"plan": ...}`` or ``{"error": ...}`` each."""
        served = _pick(app, request)
        items, figures = parse_batch(await read_json(request, "body"))
        out, counts = batch_items(served.dispatcher, items, app.state.cfg.max_batch, figures)
        for path, n in zip(PATHS, counts.tolist(), strict=True):
            if n:
                metrics.plans.labels(served.name, path).inc(n)
        for item in out:
            if "error" in item:
                metrics.input_errors.labels(item["error"]["field"]).inc()
        return _json({"model": served.name, "items": out})

    @app.get("/v1/models", summary="The served bundles")
    async def models() -> Response:
        """Each served bundle: its contract, the digest of its SHA256SUMS, its training support."""
        out = []
        for s in app.state.loaded.values():
            b = s.dispatcher.bundle
            sup = None if b.support is None else {
                "features": list(b.encoder.names), "min": list(b.support[0]),
                "max": list(b.support[1])}
            out.append({"name": s.name, "default": s.name == app.state.default,
                        "bundle": str(s.path), "sha256sums_sha256": s.sums_sha256,
                        "signed": s.signed, "fallback": s.dispatcher.fallback,
                        "refine": s.dispatcher.refine,
                        "trivial_guard": s.dispatcher.trivial is not None,
                        "support": sup, "contract": b.contract})
        return _json({"models": out})

    @app.get("/healthz", summary="Liveness: the worker answers and its bundles are loaded")
    async def healthz() -> Response:
        return _json({"status": "ok", "models": list(app.state.loaded), "pid": os.getpid(),
                      "uptime_s": time.time() - app.state.cfg.started})

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def prometheus() -> Response:
        body, ctype = metrics.exposition()
        return Response(body, media_type=ctype)
