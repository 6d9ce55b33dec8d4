"""FHIR over HTTP: reading bodies, answering with FHIR JSON, OperationOutcome for every error."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from herald.core.errors import FhirError, InvalidResource, NotAcceptable, UnsupportedMediaType
from herald.core.fhir import FHIR_JSON, operation_outcome
from herald.core.types import JsonObject

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
_JSON_TYPES = {FHIR_JSON, "application/json", "json", "application/json+fhir"}
_XML_TYPES = {"application/fhir+xml", "application/xml", "xml", "text/xml", "application/xml+fhir"}


class FhirResponse(Response):
    """A FHIR JSON response."""

    media_type = f"{FHIR_JSON}; charset=utf-8"

    def render(self, content: object) -> bytes:
        """Serialise with orjson."""
        return orjson.dumps(content)


def check_accept(request: Request) -> None:
    """Refuse a response format Herald does not produce yet (XML comes with its own issue)."""
    wanted = request.query_params.get("_format")
    if wanted is not None:
        kind = wanted.split(";")[0].strip()
        if kind in _XML_TYPES:
            raise NotAcceptable("this server answers in application/fhir+json only")
        if kind not in _JSON_TYPES:
            raise NotAcceptable(f"unknown _format {wanted!r}")
        return
    accept = request.headers.get("accept", "")
    kinds = {part.split(";")[0].strip() for part in accept.split(",") if part.strip()}
    if kinds and kinds <= _XML_TYPES:
        raise NotAcceptable("this server answers in application/fhir+json only")


async def read_resource(request: Request) -> JsonObject:
    """The request body as a JSON object, or a 4xx FhirError."""
    content_type = request.headers.get("content-type", FHIR_JSON).split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}; send application/fhir+json"
        )
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise FhirError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if not body:
        raise InvalidResource("the request has no body")
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
