"""Task search: `GET /fhir/Task?...`, run in the database (herald.runtime.store.search).

The query's search parameters are parsed by herald.core.search.parse_query, the same parser
and semantics as subscription filters; result parameters: `_count` (default 50, at most 1000),
`_sort` (a date parameter, `-` for descending; ties by id), `_total` (`accurate`, `estimate`:
the exact count; `none`), `_summary`, `_elements`, `_include=Task:output`, and `_cursor` (only
as written in a next link). `POST /Task/_search` takes the same parameters as a form body.
Unknown parameters are ignored, left out of the self link and reported in an OperationOutcome
entry (R4's lenient handling, the default), or a 400 with `Prefer: handling=strict`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote, unquote

from fastapi import Request
from starlette.responses import Response

from herald.core.elements import Elements
from herald.core.errors import PayloadTooLarge, SearchParameterError
from herald.core.fhir import format_instant, new_id, operation_outcome, utc_now, whole_number
from herald.core.search import PARAMETERS, parse_query
from herald.core.types import JsonObject
from herald.ingest.auth.access import CallerDep, require
from herald.ingest.auth.server import Caller
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import FhirResponse, fhir_router, preferences, read_body
from herald.runtime.store.search import Cursor, SearchPage, SearchRequest, Sort, search

router = fhir_router()

DEFAULT_COUNT = 50
MAX_COUNT = 1000
RESULT_PARAMETERS = frozenset(
    {"_count", "_sort", "_total", "_include", "_cursor", "_summary", "_elements"}
)
IGNORED = frozenset({"_format", "_pretty"})
_ALIASES = {"_lastupdated": "_lastUpdated"}
SUMMARIES = ("true", "false", "count", "data", "text")


def _single(name: str, values: list[str]) -> str:
    if len(values) != 1:
        raise SearchParameterError(f"'{name}' may be given once")
    return values[0]


def is_strict(prefer: str | None) -> bool:
    """Whether `Prefer: handling=strict` makes unknown parameters an error (default: lenient)."""
    return preferences(prefer).get("handling") == "strict"


@dataclass(frozen=True)
class ParsedSearch:
    """A search request plus what the answer shows: ignored parameters, element subsetting."""

    request: SearchRequest
    used_query: str  # the query without the ignored parameters and the cursor (the self link)
    ignored: tuple[str, ...] = ()
    elements: Elements | None = None


def _sort(resource_type: str, text: str) -> Sort:
    name = text.removeprefix("-")
    parameter = PARAMETERS[resource_type].get(_ALIASES.get(name, name))
    if parameter is None or parameter.type != "date":
        dates = [p.name for p in PARAMETERS[resource_type].values() if p.type == "date"]
        raise SearchParameterError(
            f"_sort={text!r} is not supported; sort by a date parameter: {', '.join(dates)} "
            "(- for descending)"
        )
    return Sort(parameter.name, text.startswith("-"))


def parse_search(resource_type: str, query: str, *, strict: bool = False) -> ParsedSearch:
    """Split a raw query string into criteria and result parameters.

    Unknown parameters are ignored and reported (FHIR's lenient handling), or a 400 when
    `strict`.
    """
    supported = PARAMETERS[resource_type]
    criteria_parts: list[str] = []
    used: list[str] = []
    ignored: list[str] = []
    result: dict[str, list[str]] = {}
    for segment in query.split("&"):
        if not segment:
            continue
        raw_name, _, raw_value = segment.partition("=")
        name = unquote(raw_name)
        if name in RESULT_PARAMETERS:
            result.setdefault(name, []).append(unquote(raw_value))
            if name != "_cursor":
                used.append(segment)
            continue
        if name in IGNORED:
            used.append(segment)
            continue
        base = name.split(":", 1)[0].split(".", 1)[0]  # a chain is refused by parse_query
        if _ALIASES.get(base, base) not in supported:
            if strict:
                raise SearchParameterError(
                    f"Unknown or unsupported search parameter '{name}' for {resource_type}; "
                    f"supported: {', '.join(supported)}, {', '.join(sorted(RESULT_PARAMETERS))}"
                )
            ignored.append(name)
            continue
        criteria_parts.append(segment)
        used.append(segment)
    criteria = parse_query(resource_type, "&".join(criteria_parts))

    count = DEFAULT_COUNT
    if "_count" in result:
        text = _single("_count", result["_count"])
        number = whole_number(text)
        if number is None:
            raise SearchParameterError(f"_count must be a whole number, not {text!r:.100}")
        count = min(number, MAX_COUNT)
    sort = Sort()
    if "_sort" in result:
        sort = _sort(resource_type, _single("_sort", result["_sort"]))
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
    elements = None
    if "_summary" in result:
        summary = _single("_summary", result["_summary"])
        if summary not in SUMMARIES:
            raise SearchParameterError(f"_summary={summary!r}: use {', '.join(SUMMARIES)}")
        if summary == "count":
            count, total = 0, True
        else:
            elements = Elements.summary(resource_type, summary)
    if "_elements" in result:
        if elements is not None:
            raise SearchParameterError("_elements and _summary cannot be combined")
        elements = Elements.listed(resource_type, ",".join(result["_elements"]))
    cursor = None
    if "_cursor" in result:
        cursor = Cursor.decode(_single("_cursor", result["_cursor"]))
    request = SearchRequest(criteria, count, sort, total, include_output, cursor)
    return ParsedSearch(request, "&".join(used), tuple(ignored), elements)


def searchset(base: str, resource_type: str, parsed: ParsedSearch, page: SearchPage) -> JsonObject:
    """The searchset Bundle of one page."""
    own = parsed.used_query
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
    shown = parsed.elements.apply if parsed.elements is not None else (lambda r: r)
    entries = [
        {
            "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
            "resource": shown(resource) if mode == "match" else resource,
            "search": {"mode": mode},
        }
        for mode, resources in (("match", page.matches), ("include", page.included))
        for resource in resources
    ]
    if parsed.ignored:
        names = ", ".join(parsed.ignored)
        outcome = operation_outcome(
            f"Ignored unknown search parameters: {names} (Prefer: handling=strict "
            "makes them an error)",
            severity="warning",
            code="not-supported",
        )
        outcome_id = new_id()
        entries.append(
            {
                "fullUrl": f"urn:uuid:{outcome_id}",
                "resource": {"resourceType": "OperationOutcome", "id": outcome_id, **outcome},
                "search": {"mode": "outcome"},
            }
        )
    bundle: JsonObject = {
        "resourceType": "Bundle",
        "type": "searchset",
        "meta": {"lastUpdated": format_instant(utc_now())},
    }
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    if entries:  # FHIR JSON never has empty arrays
        bundle["entry"] = entries
    return bundle


@router.get("/Task", dependencies=[require("Task", "s")])
async def search_tasks(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Search Tasks (the HRex polling query `Task?owner=...&_lastUpdated=gt...`)."""
    return await _search(ctx, request, request.url.query, who)


@router.post("/Task/_search", dependencies=[require("Task", "s")])
async def search_tasks_by_post(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Search Tasks with the parameters in a form body (and/or the URL), as FHIR allows."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise SearchParameterError(
            f"POST _search takes application/x-www-form-urlencoded parameters, not {content_type!r}"
        )
    body = (await read_body(request)).decode("utf-8", errors="replace").strip()
    query = "&".join(part for part in (request.url.query, body) if part)
    # The form body holds the same parameters as a query string: the same limits apply.
    settings = ctx.settings
    if len(query) > settings.max_query_bytes:
        raise PayloadTooLarge(
            f"the search parameters are longer than {settings.max_query_bytes} bytes"
        )
    if query.count("&") + 1 > settings.max_query_parameters:
        raise SearchParameterError(f"more than {settings.max_query_parameters} search parameters")
    return await _search(ctx, request, query, who)


async def _search(ctx: IngestContext, request: Request, query: str, who: Caller) -> Response:
    parsed = parse_search("Task", query, strict=is_strict(request.headers.get("prefer")))
    # A tenant searches its organizations' Tasks only.
    parsed = replace(parsed, request=replace(parsed.request, organizations=who.organizations))
    base = ctx.settings.fhir_base
    # The total, the page and what it includes must agree: one snapshot when there are two or
    # more statements (two round trips more on PostgreSQL), else a read of one.
    wanted = parsed.request
    several = (wanted.total and wanted.count > 0) or wanted.include_output
    reads = ctx.database.snapshot if several else ctx.database.read
    async with reads() as connection:
        page = await search(connection, parsed.request, now=utc_now(), base=base)
    return FhirResponse(searchset(base, "Task", parsed, page))
