"""Discovery for R4 clients: SubscriptionTopics as Basic resources, and Subscription search."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import Request
from starlette.responses import Response

from herald.core.errors import ResourceNotFound, SearchParameterError
from herald.core.fhir import utc_now
from herald.core.search import SUBSCRIPTION_PARAMETERS, parse_query
from herald.core.topics import Topic
from herald.core.types import JsonObject
from herald.ingest.auth.access import CallerDep, owns, require
from herald.ingest.auth.server import Caller
from herald.ingest.context import Ctx, IngestContext
from herald.ingest.fhirhttp import FhirResponse, fhir_router, searchset
from herald.ingest.search import is_strict
from herald.runtime.store import subscriptions as registry

router = fhir_router()

FHIR_TYPES = "http://hl7.org/fhir/fhir-types"
CROSS_VERSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
# The IG's R4 example takes the complex elements from the R4B definitions.
COMPLEX = "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic."
# Result parameters every search accepts.
_RESULT_PARAMETERS = frozenset({"_format", "_count", "_total", "_summary", "_pretty"})


def _ext(element: str, value_type: str, value: Any) -> JsonObject:
    return {"url": CROSS_VERSION + element, value_type: value}


def topic_as_basic(topic: Topic) -> JsonObject:
    """A SubscriptionTopic as an R4 Basic resource, shaped as the Backport IG's R4 example
    (Basic/r4-encounter-complete): R5 cross-version extensions for the simple elements, `status`
    as a modifierExtension (a modifier in R5), R4B extensions for the complex elements."""
    source = topic.resource
    extensions = [_ext("url", "valueUri", topic.url)]
    for element, value_type in (
        ("version", "valueString"),
        ("name", "valueString"),
        ("title", "valueString"),
        ("date", "valueDateTime"),
        ("description", "valueMarkdown"),
    ):
        if source.get(element):
            extensions.append(_ext(element, value_type, source[element]))
    for trigger in source.get("resourceTrigger") or []:
        parts: list[JsonObject] = []
        if trigger.get("description"):
            parts.append({"url": "description", "valueMarkdown": trigger["description"]})
        parts.append({"url": "resource", "valueUri": trigger["resource"]})
        parts += [
            {"url": "supportedInteraction", "valueCode": code}
            for code in trigger.get("supportedInteraction") or []
        ]
        criteria = trigger.get("queryCriteria") or {}
        query = [
            {"url": key, "valueString" if key in ("previous", "current") else "valueCode": value}
            for key, value in criteria.items()
            if key in ("previous", "current", "resultForCreate", "resultForDelete")
        ]
        if "requireBoth" in criteria:
            query.append({"url": "requireBoth", "valueBoolean": bool(criteria["requireBoth"])})
        if query:
            parts.append({"url": "queryCriteria", "extension": query})
        extensions.append({"url": COMPLEX + "resourceTrigger", "extension": parts})
    for can_filter in source.get("canFilterBy") or []:
        parts = []
        if can_filter.get("description"):
            parts.append({"url": "description", "valueMarkdown": can_filter["description"]})
        parts += [
            {"url": "resource", "valueUri": can_filter.get("resource", "")},
            {"url": "filterParameter", "valueString": can_filter["filterParameter"]},
        ]
        if can_filter.get("filterDefinition"):
            parts.append({"url": "filterDefinition", "valueUri": can_filter["filterDefinition"]})
        parts += [{"url": "modifier", "valueCode": m} for m in can_filter.get("modifier") or []]
        extensions.append({"url": COMPLEX + "canFilterBy", "extension": parts})
    return {
        "resourceType": "Basic",
        "id": source.get("id") or topic.url.rstrip("/").rsplit("/", 1)[-1],
        "extension": extensions,
        "modifierExtension": [_ext("status", "valueCode", source.get("status", "active"))],
        "code": {"coding": [{"system": FHIR_TYPES, "code": "SubscriptionTopic"}]},
    }


def _searchset(ctx: IngestContext, request: Request, resources: list[JsonObject]) -> JsonObject:
    return searchset(ctx.settings.fhir_base, str(request.url), resources)


def _parameters(request: Request, allowed: set[str]) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    strict = is_strict(request.headers.get("prefer"))
    for name, value in request.query_params.multi_items():
        if name in _RESULT_PARAMETERS or (name not in allowed and not strict):
            continue
        if name not in allowed:
            raise SearchParameterError(
                f"unknown search parameter {name!r}; supported: {', '.join(sorted(allowed))}"
            )
        values.setdefault(name, set()).update(v for v in value.split(",") if v)
    return values


@router.get("/Basic")
async def search_topics(request: Request, ctx: Ctx) -> Response:
    """Basic?code=http://hl7.org/fhir/fhir-types|SubscriptionTopic: the topics Herald serves."""
    wanted = _parameters(request, {"code", "_id"})
    topics = [topic_as_basic(t) for t in ctx.topics.values()]
    if "code" in wanted:
        codes = {c.split("|")[-1] for c in wanted["code"]}
        systems = {c.split("|")[0] for c in wanted["code"] if "|" in c} - {""}
        keep = "SubscriptionTopic" in codes and systems <= {FHIR_TYPES}
        topics = topics if keep else []
    if "_id" in wanted:
        topics = [t for t in topics if t["id"] in wanted["_id"]]
    return FhirResponse(_searchset(ctx, request, topics))


@router.get("/Basic/{basic_id}")
async def read_topic(basic_id: str, ctx: Ctx) -> Response:
    """One topic as a Basic resource."""
    for topic in ctx.topics.values():
        basic = topic_as_basic(topic)
        if basic["id"] == basic_id:
            return FhirResponse(basic)
    raise ResourceNotFound(f"Basic/{basic_id} is not known")


@router.get("/Subscription", dependencies=[require("Subscription", "s")])
async def search_subscriptions(request: Request, ctx: Ctx, who: CallerDep) -> Response:
    """Subscription search by any of its search parameters (herald.core.search), in memory."""
    known = SUBSCRIPTION_PARAMETERS
    strict = is_strict(request.headers.get("prefer"))
    parts = []
    for segment in request.url.query.split("&"):
        name = unquote(segment.partition("=")[0]).split(":", 1)[0]
        if not segment or name in _RESULT_PARAMETERS:
            continue
        if name not in known and strict:
            raise SearchParameterError(
                f"unknown search parameter {name!r}; supported: {', '.join(sorted(known))}"
            )
        if name in known:
            parts.append(segment)
    criteria = parse_query("Subscription", "&".join(parts))
    now = utc_now()
    matches = [s for s in await _all_subscriptions(ctx, who) if criteria.matches(s, now=now)]
    return FhirResponse(_searchset(ctx, request, matches))


async def _all_subscriptions(ctx: IngestContext, who: Caller) -> list[JsonObject]:
    async with ctx.database.read() as connection:
        stored = await registry.changed_since(connection, 0)
    return [
        s.resource
        for s in sorted(stored, key=lambda s: s.id)
        if not s.deleted and owns(who, s.owner)
    ]
