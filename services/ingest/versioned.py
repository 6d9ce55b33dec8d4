"""Answers that carry one resource version: ETag, Last-Modified, Location, `Prefer: return=`,
and conditional reads (`If-None-Match`, `If-Modified-Since` → 304)."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response

from herald.core.fhir import operation_outcome
from herald.core.types import JsonObject
from herald.ingest.fhirhttp import FhirResponse

RETURN_PREFERENCES = ("minimal", "representation", "OperationOutcome")


def http_date(instant: str) -> str:
    """A FHIR instant as an HTTP-date (RFC 9110), for Last-Modified."""
    return format_datetime(datetime.fromisoformat(instant), usegmt=True)


def return_preference(prefer: str | None) -> str:
    """The `return=` of a Prefer header (default: representation)."""
    for part in (prefer or "").replace(",", ";").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "return" and value.strip('"') in RETURN_PREFERENCES:
            return value.strip('"')
    return "representation"


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
    base: str,
    resource: JsonObject,
    status_code: int,
    request: Request | None = None,
    *,
    write: bool = False,
) -> Response:
    """The answer for a resource version: a read (conditional when `request` asks) or, with
    `write`, the answer to a create or update honouring `Prefer: return=`."""
    meta = resource["meta"]
    etag = f'W/"{meta["versionId"]}"'
    headers = {
        "ETag": etag,
        "Last-Modified": http_date(meta["lastUpdated"]),
        "Location": f"{base}/{resource['resourceType']}/{resource['id']}"
        f"/_history/{meta['versionId']}",
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
