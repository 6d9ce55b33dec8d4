"""Task search: `GET /fhir/Task?...`, run in the database (herald.runtime.store.search).

The query's search parameters are parsed by herald.core.search.parse_query, the same parser
and semantics as subscription filters; result parameters: `_count` (default 50, at most 1000),
`_sort` (`_lastUpdated` or `-_lastUpdated`; ties by id), `_total` (`accurate`, `estimate`: the
exact count; `none`), `_summary=count`, `_include=Task:output`, and `_cursor` (only as written
in a next link). `POST /Task/_search` takes the same parameters as a form body.
Anything else is a 400 OperationOutcome.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote, unquote

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from herald.core.errors import SearchParameterError
from herald.core.fhir import format_instant, utc_now
from herald.core.search import parse_query
from herald.core.types import JsonObject
from herald.ingest.auth.access import CallerDep, require
from herald.ingest.auth.server import Caller
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import FhirResponse, check_accept
from herald.runtime.store.search import INDEXED, Cursor, SearchPage, SearchRequest, search

router = APIRouter(dependencies=[Depends(check_accept)])

DEFAULT_COUNT = 50
MAX_COUNT = 1000
RESULT_PARAMETERS = frozenset({"_count", "_sort", "_total", "_include", "_cursor", "_summary"})
IGNORED = frozenset({"_format", "_pretty"})
_ALIASES = {"_lastupdated": "_lastUpdated"}


def _single(name: str, values: list[str]) -> str:
    if len(values) != 1:
        raise SearchParameterError(f"'{name}' may be given once")
    return values[0]


def parse_search(resource_type: str, query: str) -> SearchRequest:
    """Split a raw query string into criteria and result parameters, rejecting unknown ones."""
    supported = INDEXED.get(resource_type, ())
    criteria_parts: list[str] = []
    result: dict[str, list[str]] = {}
    for segment in query.split("&"):
        if not segment:
            continue
        raw_name, _, raw_value = segment.partition("=")
        name = unquote(raw_name)
        if name in RESULT_PARAMETERS:
            result.setdefault(name, []).append(unquote(raw_value))
            continue
        if name in IGNORED:
            continue
        base = name.split(":", 1)[0]
        if _ALIASES.get(base, base) not in supported:
            raise SearchParameterError(
                f"Unknown or unsupported search parameter '{name}' for {resource_type}; "
                f"supported: {', '.join(supported)}, {', '.join(sorted(RESULT_PARAMETERS))}"
            )
        criteria_parts.append(segment)
    criteria = parse_query(resource_type, "&".join(criteria_parts))

    count = DEFAULT_COUNT
    if "_count" in result:
        text = _single("_count", result["_count"])
        if not text.isdigit():
            raise SearchParameterError(f"_count must be a whole number, not {text!r}")
        count = min(int(text), MAX_COUNT)
    descending = False
    if "_sort" in result:
        sort = _single("_sort", result["_sort"])
        if sort not in ("_lastUpdated", "-_lastUpdated"):
            raise SearchParameterError(
                f"_sort={sort!r} is not supported; use _lastUpdated or -_lastUpdated"
            )
        descending = sort.startswith("-")
    total = True
    if "_total" in result:
        mode = _single("_total", result["_total"])
        if mode not in ("accurate", "estimate", "none"):
            raise SearchParameterError(f"_total={mode!r}: use accurate, estimate or none")
        total = mode != "none"
    include_output = False
    for include in result.get("_include", []):
        if include != f"{resource_type}:output":
            raise SearchParameterError(
                f"_include={include!r} is not supported; supported: {resource_type}:output"
            )
        include_output = True
    if "_summary" in result:
        summary = _single("_summary", result["_summary"])
        if summary != "count":
            raise SearchParameterError(f"_summary={summary!r} is not supported; use count")
        count, total = 0, True
    cursor = None
    if "_cursor" in result:
        cursor = Cursor.decode(_single("_cursor", result["_cursor"]))
    return SearchRequest(criteria, count, descending, total, include_output, cursor)


def _query_without_cursor(query: str) -> str:
    return "&".join(
        part for part in query.split("&") if part and unquote(part.partition("=")[0]) != "_cursor"
    )


def searchset(base: str, resource_type: str, query: str, page: SearchPage) -> JsonObject:
    """The searchset Bundle of one page."""
    own = _query_without_cursor(query)
    self_url = f"{base}/{resource_type}" + (f"?{own}" if own else "")
    links = [{"relation": "self", "url": self_url}]
    if page.next_cursor is not None:
        separator = "&" if own else ""
        cursor = quote(page.next_cursor.encode(), safe="")
        links.append(
            {
                "relation": "next",
                "url": f"{base}/{resource_type}?{own}{separator}_cursor={cursor}",
            }
        )
    entries = [
        {
            "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
            "resource": resource,
            "search": {"mode": mode},
        }
        for mode, resources in (("match", page.matches), ("include", page.included))
        for resource in resources
    ]
    bundle: JsonObject = {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": format_instant(utc_now())},
    }
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    bundle["entry"] = entries
    return bundle


@router.get("/Task", dependencies=[require("Task", "s")])
async def search_tasks(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Search Tasks (the HRex polling query `Task?owner=...&_lastUpdated=gt...`)."""
    return await _search(ctx, request.url.query, who)


@router.post("/Task/_search", dependencies=[require("Task", "s")])
async def search_tasks_by_post(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Search Tasks with the parameters in a form body (and/or the URL), as FHIR allows."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise SearchParameterError(
            f"POST _search takes application/x-www-form-urlencoded parameters, not {content_type!r}"
        )
    body = (await request.body()).decode("utf-8", errors="replace").strip()
    return await _search(ctx, "&".join(part for part in (request.url.query, body) if part), who)


async def _search(ctx: IngestContext, query: str, who: Caller) -> Response:
    parsed = replace(parse_search("Task", query), organizations=who.organizations)
    base = ctx.settings.fhir_base
    async with ctx.database.read() as connection:
        page = await search(connection, parsed, now=utc_now(), base=base)
    return FhirResponse(searchset(base, "Task", query, page))
