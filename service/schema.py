"""The service's request models, derived from the one request schema (:mod:`system.fields`).

:data:`PlanRequest` is built with ``pydantic.create_model`` from
:data:`system.fields.REQUEST_FIELDS` and :data:`system.request.REQUEST_JSON_FIELDS`: the JSON
names, units, ranges, defaults and descriptions are read off the table, never written again,
so the OpenAPI page shows exactly what ``python -m system plan`` accepts.

:func:`parse_request` checks one item with that model, then builds the
:class:`system.request.Request` with :func:`system.request.request_from_json_dict`. Whichever
refuses it, the message is the project's one line (``up_mbps: -1 is outside the allowed
range (0, inf) Mbit/s``), and :class:`RequestInputError` carries the field as the user wrote it,
its unit and its range for the 422 body and the errors-by-field metric.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from system.bits import KERNEL_WIDTHS
from system.errors import QsplitInputError, interval_text
from system.fields import REQUEST_FIELDS, RequestField
from system.request import REQUEST_JSON_FIELDS, Request, request_from_json_dict

#: Request fields by the name a user writes.
FIELD_BY_JSON_KEY: dict[str, RequestField] = {f.json_key: f for f in REQUEST_FIELDS}
#: Every key a request JSON may hold: the table's fields and the JSON-only extras.
JSON_KEYS: tuple[str, ...] = tuple(REQUEST_JSON_FIELDS)
_WIDTH_KEYS = tuple(str(w) for w in KERNEL_WIDTHS)
_LABEL = re.compile(r"^(?:request(?:\[\d+\])?: )?([A-Za-z_][A-Za-z0-9_]*)")


def field_range(key: str) -> tuple[str, str]:
    """(unit, range) of a JSON key as a user writes it; ("", "") for a key with neither."""
    f = FIELD_BY_JSON_KEY.get(key)
    if f is None:
        return ("", "(0, inf)") if key == "dev_speed_factor" else ("", "")
    if f.per_width:
        return f.json_units, f"{interval_text(f.lo, f.hi, True, f.hi_open)} per width " \
                             f"{list(_WIDTH_KEYS)}, '32' = 1"
    return f.json_units, interval_text(f.to_json(f.lo), f.to_json(f.hi), f.lo_open, f.hi_open)


def _field(f: RequestField) -> tuple[Any, Any]:
    """The pydantic annotation and Field of one table row."""
    optional = f.default is not None or bool(f.catalog)
    default = f.default if f.default is not None else None
    if f.per_width:
        ann: Any = dict[Literal[_WIDTH_KEYS], _bounded(f)]  # type: ignore[valid-type]
        return (ann | None if optional else ann), Field(default, description=f.help())
    lo, hi = f.to_json(f.lo), f.to_json(f.hi)
    bounds: dict[str, float] = {("gt" if f.lo_open else "ge"): lo}
    if hi != float("inf"):
        bounds["lt" if f.hi_open else "le"] = hi
    ann = float | None if optional and f.default is None else float
    kw: dict[str, Any] = {"description": f.help(), "allow_inf_nan": False, **bounds}
    if f.json_units:
        kw["json_schema_extra"] = {"unit": f.json_units}
    return (ann, Field(default, **kw)) if optional else (ann, Field(..., **kw))


def _bounded(f: RequestField) -> Any:
    """A float annotation with the table's SI range; a per-width entry of 0 (no kernel) is
    written by leaving the width out, so the entries' lower end is open."""
    bounds: dict[str, float] = {"gt": f.lo}
    if f.hi != float("inf"):
        bounds["lt" if f.hi_open else "le"] = f.hi
    return Annotated[float, Field(allow_inf_nan=False, **bounds)]


def _extras() -> dict[str, tuple[Any, Any]]:
    """The JSON-only keys (catalog names, device speed factor), described by the same table."""
    doc = REQUEST_JSON_FIELDS
    return {"device": (str | None, Field(None, description=doc["device"])),
            "server": (str | None, Field(None, description=doc["server"])),
            "dev_speed_factor": (float, Field(1.0, gt=0.0, allow_inf_nan=False,
                                              description=doc["dev_speed_factor"]))}


_CONFIG = ConfigDict(extra="forbid", strict=True, title="PlanRequest")
#: One request in its user-facing JSON form (units in the names), derived from the table.
PlanRequest: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "PlanRequest", __config__=_CONFIG, __doc__="One planning request (the JSON form of "
    "`python -m system plan --request`); a catalog device and server fill in what is not given.",
    **_extras(), **{f.json_key: _field(f) for f in REQUEST_FIELDS})


class PlansRequest(BaseModel):
    """A batch: each item is answered on its own (its plan, or its own error)."""

    model_config = ConfigDict(extra="forbid")
    requests: list[PlanRequest] = Field(description="the requests, in order")  # type: ignore[valid-type]
    figures: bool = Field(False, description="give each plan its figures (latency_s, energy_j, "
                                             "cost, ...) as /v1/plan does; slower")


class RequestInputError(QsplitInputError):
    """Why an item was refused: the project's one line, the field as written, unit, range."""

    def __init__(self, message: str, field: str, unit: str = "", range_text: str = "",
                 status: int = 422) -> None:
        super().__init__(message)
        self.message, self.field, self.unit, self.range = message, field, unit, range_text
        self.status = status      # 422, or 413 for a request too large to take

    def to_json(self) -> dict[str, str]:
        """The error as the 422 body and batch items give it."""
        return {"msg": self.message, "field": self.field, "unit": self.unit, "range": self.range}


def problem(message: str, hint: str = "") -> RequestInputError:
    """A RequestInputError from a project message; the field is its label, else ``hint``."""
    m = _LABEL.match(message)
    label = m.group(1) if m else ""
    field = label if label in JSON_KEYS else (hint if hint in JSON_KEYS else "request")
    unit, rng = field_range(field)
    return RequestInputError(message, field, unit, rng)


def _pydantic_message(exc: ValidationError, where: str) -> tuple[str, str]:
    """(message, field) for a refusal the project's parser did not reproduce."""
    e = exc.errors(include_url=False)[0]
    loc = [str(x) for x in e["loc"]]
    key = loc[0] if loc else ""
    label = ".".join(loc) or where
    unit, rng = field_range(key)
    tail = f" (allowed range {rng}{f' {unit}' if unit else ''})" if rng else ""
    return f"{label}: {e['msg']}{tail}", key


def parse_request(raw: object, where: str = "request") -> Request:
    """One request from its JSON form, or a :class:`RequestInputError` naming the field."""
    try:
        PlanRequest.model_validate(raw)
    except ValidationError as exc:
        try:
            request_from_json_dict(raw, where=where)
        except QsplitInputError as qe:
            raise _located(str(qe), where, exc) from None
        msg, key = _pydantic_message(exc, where)
        raise problem(_prefixed(msg, where), key) from None
    try:
        return request_from_json_dict(raw, where=where)
    except QsplitInputError as exc:
        raise problem(_prefixed(str(exc), where)) from None


def _located(message: str, where: str, exc: ValidationError) -> RequestInputError:
    loc = exc.errors(include_url=False)[0]["loc"]
    return problem(_prefixed(message, where), str(loc[0]) if loc else "")


def _prefixed(message: str, where: str) -> str:
    """The message naming the item (``request[3]: ...``) when ``where`` is not plain."""
    return message if where == "request" or message.startswith(where) else f"{where}: {message}"


__all__ = ["FIELD_BY_JSON_KEY", "JSON_KEYS", "PlanRequest", "PlansRequest", "RequestInputError",
           "field_range", "parse_request", "problem"]
