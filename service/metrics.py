"""The service's Prometheus metrics (``prometheus-client``), one set per app.

Several uvicorn workers each count their own requests; with ``PROMETHEUS_MULTIPROC_DIR`` set
(``python -m service --workers N`` sets it to a fresh folder) every worker writes its values
there and ``/metrics``, whichever worker answers it, adds them up
(:class:`prometheus_client.multiprocess.MultiProcessCollector`). Label values are drawn
from fixed sets (endpoints, status codes, decision paths, the request schema's field
names), never from what a client sent, so a client cannot grow the series without bound.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Latency buckets, seconds: a decision takes tens of microseconds, a batch tens of ms.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Request counts, a latency histogram, decisions by path and input errors by field."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("qsplit_http_requests", "HTTP requests answered",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("qsplit_http_request_seconds", "time to answer a request",
                                 ["endpoint"], buckets=BUCKETS, registry=r)
        self.plans = Counter("qsplit_plans", "plans decided, by model and by what decided "
                             "(policy, repaired, fallback, refined, trivial)", ["model", "path"],
                             registry=r)
        self.out_of_range = Counter("qsplit_out_of_range", "requests outside the policy's "
                                    "training support", ["model"], registry=r)
        self.input_errors = Counter("qsplit_input_errors", "requests or batch items refused, by "
                                    "the field named (as a user writes it)", ["field"], registry=r)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every worker's values (this one's alone without a shared folder)."""
        if os.environ.get(MULTIPROC_ENV):
            reg = CollectorRegistry()
            MultiProcessCollector(reg)
            return generate_latest(reg), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["BUCKETS", "MULTIPROC_ENV", "Metrics"]
