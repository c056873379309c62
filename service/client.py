"""A small typed client of the planning service, over httpx.

    from service.client import PlanningClient
    with PlanningClient("http://127.0.0.1:8000") as c:
        c.health()["status"]                                   # 'ok'
        c.plan({"device": "jetson_nano", "server": "t4", "up_mbps": 5, "down_mbps": 20,
                "rtt_ms": 40, "eps_pp": 1.0})["cut"]
        c.plans([...])      # each item a plan dict, or a PlanItemError in its place

A request is its JSON form (a mapping, as ``python -m system plan`` reads) or a
:class:`system.request.Request`. A refused request raises :class:`ServiceError` with the
service's one-line message, the field, its unit and range; batch items are answered one by
one, as :meth:`runtime.Dispatcher.decide_batch` answers them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

import httpx

from system.request import Request


class Plan(TypedDict, total=False):
    """A plan as the service gives it (figures on /v1/plan, or on /v1/plans with figures)."""

    model: str
    path: str
    cut: int
    weight_bits: list[int]
    act_bits: int
    latency_s: float
    energy_j: float
    drop_pp: float
    cost: float
    payload_reduction: float
    feasible: bool
    out_of_range: bool


class ServiceError(Exception):
    """A request the service refused (4xx) or failed (5xx): status, message, field."""

    def __init__(self, status: int, message: str, field: str = "", unit: str = "",
                 range_text: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.unit, self.range = \
            status, message, field, unit, range_text


class PlanItemError(ServiceError):
    """The answer to a bad item of a batch, in its place."""

    def __init__(self, index: int, message: str, field: str = "", unit: str = "",
                 range_text: str = "") -> None:
        super().__init__(422, message, field, unit, range_text)
        self.index = index


def _body(request: Mapping[str, Any] | Request) -> Mapping[str, Any]:
    return request.to_json_dict() if isinstance(request, Request) else request


class PlanningClient:
    """Calls one service; ``client`` (an ``httpx.Client``, e.g. FastAPI's TestClient) replaces
    the connection this would open."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, timeout: float = 30.0,
                 client: httpx.Client | None = None) -> None:
        self._own = client is None
        self.http = client if client is not None else httpx.Client(base_url=base_url,
                                                                   timeout=timeout)

    def __enter__(self) -> PlanningClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection this client opened (not one it was given)."""
        if self._own:
            self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                d = r.json()["detail"][0]
                raise ServiceError(r.status_code, d["msg"], d.get("field", ""),
                                   d.get("unit", ""), d.get("range", ""))
            except (ValueError, KeyError, IndexError, TypeError):
                raise ServiceError(r.status_code, f"HTTP {r.status_code}: {r.text[:200]}") from None
        return r.json()

    def plan(self, request: Mapping[str, Any] | Request, model: str | None = None) -> Plan:
        """The plan and its figures for one request."""
        params = {"model": model} if model else None
        return self._call("POST", "/v1/plan", json=_body(request), params=params)

    def plans(self, requests: Iterable[Mapping[str, Any] | Request], model: str | None = None,
              figures: bool = False) -> list[Plan | PlanItemError]:
        """Plans for many requests, in order; a bad item gets a PlanItemError in its place."""
        params = {"model": model} if model else None
        out = self._call("POST", "/v1/plans", params=params,
                         json={"requests": [_body(r) for r in requests], "figures": figures})
        return [item["plan"] if "plan" in item else
                PlanItemError(i, item["error"]["msg"], item["error"]["field"],
                              item["error"]["unit"], item["error"]["range"])
                for i, item in enumerate(out["items"])]

    def models(self) -> list[dict[str, Any]]:
        """The served bundles: name, contract, SHA256SUMS digest, training support."""
        return self._call("GET", "/v1/models")["models"]

    def health(self) -> dict[str, Any]:
        """The worker's liveness answer."""
        return self._call("GET", "/healthz")


__all__ = ["Plan", "PlanItemError", "PlanningClient", "ServiceError"]
