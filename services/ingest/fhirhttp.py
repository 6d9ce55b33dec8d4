"""FHIR over HTTP: JSON and XML bodies, format negotiation, OperationOutcome for every error."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from herald.core.errors import (
    FhirError,
    InvalidResource,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from herald.core.fhir import (
    FHIR_JSON,
    FHIR_XML,
    format_instant,
    new_id,
    operation_outcome,
    utc_now,
)
from herald.core.types import JsonObject
from herald.runtime.packaged import fhir_xml

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
_JSON_TYPES = {FHIR_JSON, "application/json", "json", "application/json+fhir"}
_XML_TYPES = {"application/fhir+xml", "application/xml", "xml", "text/xml", "application/xml+fhir"}


# The format this request's answer is written in; set by check_accept, read by FhirResponse.
_answer_xml: ContextVar[bool] = ContextVar("answer_xml", default=False)


class FhirResponse(Response):
    """A FHIR response, in JSON or XML as the request negotiated."""

    def __init__(self, content: object, status_code: int = 200, **kwargs: Any) -> None:
        self.xml = _answer_xml.get()
        self.media_type = f"{FHIR_XML if self.xml else FHIR_JSON}; charset=utf-8"
        super().__init__(content, status_code, **kwargs)

    def render(self, content: object) -> bytes:
        """Serialise as FHIR XML (lxml) or FHIR JSON (orjson)."""
        if self.xml and isinstance(content, dict):
            return fhir_xml().to_xml(content)
        return orjson.dumps(content)


def versioned(
    fhir_base: str,
    resource: JsonObject,
    status_code: int,
    *,
    headers: dict[str, str] | None = None,
) -> FhirResponse:
    """A response carrying a resource version, with its ETag and its version's Location."""
    meta = resource["meta"]
    location = (
        f"{fhir_base}/{resource['resourceType']}/{resource['id']}/_history/{meta['versionId']}"
    )
    return FhirResponse(
        resource,
        status_code=status_code,
        headers={"ETag": f'W/"{meta["versionId"]}"', "Location": location, **(headers or {})},
    )


def _kind(media_type: str) -> str | None:
    media_type = media_type.split(";")[0].strip().lower()
    if media_type in _JSON_TYPES or media_type in ("*/*", "application/*"):
        return "json"
    if media_type in _XML_TYPES:
        return "xml"
    return None


async def check_accept(request: Request) -> None:
    """Choose the answer's format from `_format`, else from Accept (q-values honoured)."""
    wanted = request.query_params.get("_format")
    if wanted is not None:
        kind = _kind(wanted)
        if kind is None:
            raise NotAcceptable(f"unknown _format {wanted!r}; use json or xml")
        _answer_xml.set(kind == "xml")
        return
    ranges = []
    for position, part in enumerate(request.headers.get("accept", "").split(",")):
        media_type, _, params = part.partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type.strip():
            ranges.append((-quality, position, media_type))
    kinds = [_kind(media_type) for q, _, media_type in sorted(ranges) if q < 0]
    known = [k for k in kinds if k is not None]
    if ranges and not known and not any(m.strip().startswith("text/") for _, _, m in ranges):
        raise NotAcceptable(
            f"cannot answer in {request.headers.get('accept')!r}; use {FHIR_JSON} or {FHIR_XML}"
        )
    _answer_xml.set(bool(known) and known[0] == "xml")


async def read_body(request: Request) -> bytes:
    """The raw request body, refused with 413 when it is over MAX_BODY_BYTES."""
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes")
    return body


def searchset(base: str, self_url: str, resources: list[JsonObject]) -> JsonObject:
    """A searchset Bundle of resources that all matched."""
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "searchset",
        "timestamp": format_instant(utc_now()),
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


async def read_resource(request: Request) -> JsonObject:
    """The request body as a JSON object, or a 4xx FhirError."""
    content_type = request.headers.get("content-type", FHIR_JSON).split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES and content_type not in _XML_TYPES:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}; send {FHIR_JSON} or {FHIR_XML}"
        )
    body = await read_body(request)
    if not body:
        raise InvalidResource("the request has no body")
    if content_type in _XML_TYPES:
        return fhir_xml().from_xml(body)
    try:
        resource = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidResource(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(resource, dict):
        raise InvalidResource("the body must be a JSON object")
    return resource


def outcome_response(
    status_code: int, diagnostics: str, code: str, expression: str | None = None
) -> FhirResponse:
    """An OperationOutcome response."""
    return FhirResponse(
        operation_outcome(diagnostics, code=code, expression=expression), status_code=status_code
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with an OperationOutcome."""

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        request.app.state.herald.metrics.rejected_requests.labels(str(exc.status_code)).inc()
        return outcome_response(exc.status_code, exc.diagnostics, exc.issue_code, exc.expression)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return outcome_response(400, f"invalid request: {exc.errors()}", "invalid")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        return outcome_response(exc.status_code, str(exc.detail), code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return outcome_response(500, "internal server error", "exception")
