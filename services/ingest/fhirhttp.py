"""FHIR over HTTP: JSON and XML bodies, format negotiation, OperationOutcome for every error."""

from __future__ import annotations

import functools
import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from herald.core.errors import (
    FhirError,
    InvalidResource,
    NotAcceptable,
    NotSupported,
    ResourceNotFound,
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
from herald.core.structure import check_depth
from herald.core.types import JsonObject
from herald.ingest.direct_route import DirectRoute
from herald.runtime.packaged import fhir_xml

log = logging.getLogger(__name__)

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


RETURN_PREFERENCES = ("minimal", "representation", "OperationOutcome")


def http_date(instant: str) -> str:
    """A FHIR instant as an HTTP-date (RFC 9110), for Last-Modified."""
    if (
        len(instant) == 24
        and instant[19] == "."
        and instant[23] == "Z"
        and instant[20:23].isdigit()
    ):
        # Herald's own instants (milliseconds, UTC): the second's text is the key.
        return _http_date_of_second_text(instant[:19])
    moment = datetime.fromisoformat(instant)
    if moment.tzinfo is not UTC:
        return format_datetime(moment, usegmt=True)  # which refuses any other zone, as before
    return _http_date_of_second(moment.replace(microsecond=0))


@functools.lru_cache(maxsize=64)
def _http_date_of_second_text(second: str) -> str:
    return http_date(second + "Z")


@functools.lru_cache(maxsize=64)
def _http_date_of_second(moment: datetime) -> str:
    # An HTTP-date has whole seconds: instants of the same second share one text.
    return format_datetime(moment, usegmt=True)


def preferences(prefer: str | None) -> dict[str, str]:
    """The preferences of a Prefer header (RFC 7240): lower-case names, unquoted values; the
    first of a name counts. Parameters (after `;`) are read as preferences of their own."""
    found: dict[str, str] = {}
    for part in (prefer or "").replace(",", ";").split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            found.setdefault(key.strip().lower(), value.strip().strip('"'))
    return found


def return_preference(prefer: str | None) -> str:
    """The `return=` of a Prefer header (default: representation)."""
    value = preferences(prefer).get("return", "")
    return value if value in RETURN_PREFERENCES else "representation"


def _version(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def _not_modified(request: Request, etag: str, instant: str) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        # Clients send W/"2", "2" or (fhirpy) a bare 2: all name version 2.
        wanted = {_version(tag) for tag in if_none_match.split(",")}
        return "*" in wanted or _version(etag) in wanted
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since is not None:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False  # an unreadable date is ignored, as HTTP says
        if since.tzinfo is None:
            return False
        modified = datetime.fromisoformat(instant).replace(microsecond=0)
        return modified <= since
    return False


def versioned(
    fhir_base: str,
    resource: JsonObject,
    status_code: int,
    request: Request | None = None,
    *,
    write: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    """The one answer for a resource version: ETag, Last-Modified, its version's Location; a
    read is conditional when `request` asks (304), and with `write` (a create or update) the
    body follows `Prefer: return=`."""
    meta = resource["meta"]
    etag = f'W/"{meta["versionId"]}"'
    headers = {
        "ETag": etag,
        "Last-Modified": http_date(meta["lastUpdated"]),
        "Location": f"{fhir_base}/{resource['resourceType']}/{resource['id']}"
        f"/_history/{meta['versionId']}",
        **(headers or {}),
    }
    if request is not None and not write and _not_modified(request, etag, meta["lastUpdated"]):
        return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
    preference = return_preference(request.headers.get("prefer")) if write and request else None
    if preference == "minimal":
        return Response(status_code=status_code, headers=headers)
    if preference == "OperationOutcome":
        done = "created" if status_code == 201 else "updated"
        outcome = operation_outcome(
            f"{resource['resourceType']}/{resource['id']} {done} as version {meta['versionId']}",
            severity="information",
            code="informational",
        )
        return FhirResponse(outcome, status_code=status_code, headers=headers)
    return FhirResponse(resource, status_code=status_code, headers=headers)


def _kind(media_type: str) -> str | None:
    media_type = media_type.split(";")[0].strip().lower()
    if media_type in _JSON_TYPES or media_type in ("*/*", "application/*"):
        return "json"
    if media_type in _XML_TYPES:
        return "xml"
    return None


async def check_accept(request: Request) -> None:
    """Choose the answer's format from `_format`, else from Accept (q-values honoured)."""
    # Most requests carry no query string: `_format` cannot be there.
    wanted = request.query_params.get("_format") if request.scope["query_string"] else None
    if wanted is not None:
        kind = _kind(wanted)
        if kind is None:
            raise NotAcceptable(f"unknown _format {wanted!r}; use json or xml")
        _answer_xml.set(kind == "xml")
        return
    accept = request.headers.get("accept", "")
    answer_xml = _accepted_xml(accept)
    if answer_xml is None:
        raise NotAcceptable(f"cannot answer in {accept!r}; use {FHIR_JSON} or {FHIR_XML}")
    _answer_xml.set(answer_xml)


@functools.lru_cache(maxsize=256)
def _accepted_xml(accept: str) -> bool | None:
    """Whether an Accept header asks for XML (None: neither format is acceptable). Clients send
    the same few headers again and again, so each is read once."""
    ranges = []
    for position, part in enumerate(accept.split(",")):
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
        return None
    return bool(known) and known[0] == "xml"


async def read_body(request: Request) -> bytes:
    """The raw request body (RequestLimits refuses one over the limit while it streams in)."""
    return await request.body()


def searchset(base: str, self_url: str, resources: list[JsonObject]) -> JsonObject:
    """A searchset Bundle of resources that all matched."""
    bundle: JsonObject = {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "searchset",
        "timestamp": format_instant(utc_now()),
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
    }
    if resources:  # FHIR JSON never has empty arrays
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ]
    return bundle


async def read_resource(request: Request) -> JsonObject:
    """The request body as a JSON object, or a 4xx FhirError."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES and content_type not in _XML_TYPES:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}; send {FHIR_JSON} or {FHIR_XML}"
        )
    body = await read_body(request)
    if not body:
        raise InvalidResource("the request has no body")
    if content_type in _XML_TYPES:
        resource = fhir_xml().from_xml(body)
        check_depth(resource)
        return resource
    resource = parse_json(body)
    if not isinstance(resource, dict):
        raise InvalidResource("the body must be a JSON object")
    return resource


def parse_json(body: bytes) -> Any:
    """A JSON request body, or InvalidResource: too deep, or a key given twice in an object."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidResource(f"the body is not valid JSON: {exc}") from exc
    check_depth(value)
    # orjson keeps the last of duplicate keys; a proxy in front may keep the first and see
    # another resource. A body that is exactly what orjson writes for what it read has none
    # (orjson never writes a key twice): the common, compact body costs one more orjson call.
    # Any other body (spaces, escapes, other number forms) is read once more to find them.
    if orjson.dumps(value) != body:
        json.loads(body, object_pairs_hook=_without_duplicates)
    return value


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)
    if len(unique) != len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for key in keys if keys.count(key) > 1)
        raise InvalidResource(f"the JSON object holds the key {twice[:64]!r} more than once")
    return unique


def outcome_response(
    status_code: int, diagnostics: str, code: str, expression: str | None = None
) -> FhirResponse:
    """An OperationOutcome response."""
    return FhirResponse(
        operation_outcome(diagnostics, code=code, expression=expression), status_code=status_code
    )


# The resource types Herald serves; other types under /fhir are unknown (404).
SERVED_TYPES = frozenset({"Task", "Subscription", "Basic", "CodeSystem"})
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def fhir_router(prefix: str = "/fhir") -> APIRouter:
    """A router of FHIR routes: the answer's format negotiated first, each route served
    directly when FastAPI has nothing to solve for it (`herald.ingest.direct_route`)."""
    return APIRouter(prefix=prefix, dependencies=[Depends(check_accept)], route_class=DirectRoute)


def unsupported_router() -> APIRouter:
    """The last routes under /fhir: 405 for an interaction Herald does not offer on a type it
    serves (or at the system level: batch, transaction, history), else 404; each with an
    OperationOutcome."""
    router = fhir_router()

    @router.api_route("", methods=_METHODS, include_in_schema=False)
    @router.api_route("/{path:path}", methods=_METHODS, include_in_schema=False)
    async def unsupported(request: Request, path: str = "") -> Response:
        resource_type = path.split("/", 1)[0]
        if resource_type in SERVED_TYPES or resource_type in ("", "_history"):
            raise NotSupported(
                f"Herald does not offer {request.method} {request.url.path}; "
                "see /fhir/metadata for the interactions it supports"
            )
        raise ResourceNotFound(f"Herald does not serve {request.url.path}")

    return router


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with an OperationOutcome."""

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        request.app.state.herald.metrics.rejected_requests.labels(str(exc.status_code)).inc()
        response = outcome_response(
            exc.status_code, exc.diagnostics, exc.issue_code, exc.expression
        )
        if exc.status_code == 413:
            # The rest of the body is not wanted: closing beats reading it to the end.
            response.headers["Connection"] = "close"
        return response

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
