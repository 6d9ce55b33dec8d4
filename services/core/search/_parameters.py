"""Search parameter definitions: what each name searches, and how.

This is the one list of Herald's search parameters: the in-memory matcher, the database search
(every parameter of a type in `DATABASE_SEARCHED` is indexed) and the CapabilityStatement
(herald.core.capability) are all derived from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

SEARCH_TYPES = frozenset({"token", "reference", "date", "string", "uri"})

_FHIR = "http://hl7.org/fhir/"


@dataclass(frozen=True)
class SearchParameter:
    """A search parameter: its name, FHIR search type and the element path it searches."""

    name: str
    type: str
    path: str
    target_types: tuple[str, ...] = ()
    # The code system a bare `code` element is bound to (required bindings), so that
    # `status=http://hl7.org/fhir/task-status|completed` matches `"status": "completed"`.
    implied_system: str | None = None
    # The canonical SearchParameter this one implements (searchParam.definition in /metadata).
    definition: str = ""

    def __post_init__(self) -> None:
        if self.type not in SEARCH_TYPES:
            raise ValueError(f"search parameter {self.name!r} has unsupported type {self.type!r}")


def _by_name(resource_type: str, *parameters: SearchParameter) -> Mapping[str, SearchParameter]:
    def defined(parameter: SearchParameter) -> SearchParameter:
        if parameter.definition:
            return parameter
        if parameter.name.startswith("_"):
            canonical = f"{_FHIR}SearchParameter/Resource-{parameter.name[1:]}"
        else:
            canonical = f"{_FHIR}SearchParameter/{resource_type}-{parameter.name}"
        return replace(parameter, definition=canonical)

    return MappingProxyType({p.name: defined(p) for p in parameters})


_RESOURCE_PARAMETERS = (
    SearchParameter("_id", "token", "id"),
    SearchParameter("_lastUpdated", "date", "meta.lastUpdated"),
    SearchParameter("_profile", "uri", "meta.profile"),
    SearchParameter("_security", "token", "meta.security"),
    SearchParameter("_source", "uri", "meta.source"),
    SearchParameter("_tag", "token", "meta.tag"),
)

_TASK_OWNERS = (
    "CareTeam",
    "Device",
    "HealthcareService",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
)
_TASK_REQUESTERS = (
    "Device",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
)

# The R4 Task search parameters (http://hl7.org/fhir/R4/task.html#search).
TASK_PARAMETERS = _by_name(
    "Task",
    *_RESOURCE_PARAMETERS,
    SearchParameter("authored-on", "date", "authoredOn"),
    SearchParameter("based-on", "reference", "basedOn"),
    SearchParameter("business-status", "token", "businessStatus"),
    SearchParameter("code", "token", "code"),
    SearchParameter("encounter", "reference", "encounter", ("Encounter",)),
    SearchParameter("focus", "reference", "focus"),
    SearchParameter("group-identifier", "token", "groupIdentifier"),
    SearchParameter("identifier", "token", "identifier"),
    SearchParameter("intent", "token", "intent", implied_system=_FHIR + "task-intent"),
    SearchParameter("modified", "date", "lastModified"),
    SearchParameter("owner", "reference", "owner", _TASK_OWNERS),
    SearchParameter("part-of", "reference", "partOf", ("Task",)),
    SearchParameter("patient", "reference", "for", ("Patient",)),
    SearchParameter("performer", "token", "performerType"),
    SearchParameter("period", "date", "executionPeriod"),
    SearchParameter("priority", "token", "priority", implied_system=_FHIR + "request-priority"),
    SearchParameter("requester", "reference", "requester", _TASK_REQUESTERS),
    SearchParameter("status", "token", "status", implied_system=_FHIR + "task-status"),
    SearchParameter("subject", "reference", "for"),
)

# The R4 Subscription search parameters, plus the Backport IG's `topic` (uri in IG 1.1.0).
SUBSCRIPTION_PARAMETERS = _by_name(
    "Subscription",
    *_RESOURCE_PARAMETERS,
    SearchParameter("criteria", "string", "criteria"),
    SearchParameter("payload", "token", "channel.payload", implied_system="urn:ietf:bcp:13"),
    SearchParameter("status", "token", "status", implied_system=_FHIR + "subscription-status"),
    SearchParameter(
        "topic",
        "uri",
        "criteria",
        definition="http://hl7.org/fhir/uv/subscriptions-backport/SearchParameter/Subscription-topic",
    ),
    SearchParameter(
        "type", "token", "channel.type", implied_system=_FHIR + "subscription-channel-type"
    ),
    SearchParameter("url", "uri", "channel.endpoint"),
)

PARAMETERS: Mapping[str, Mapping[str, SearchParameter]] = MappingProxyType(
    {"Subscription": SUBSCRIPTION_PARAMETERS, "Task": TASK_PARAMETERS}
)

# The resource types searched in the database, through the index tables (every parameter of the
# type is indexed); other types' searches are evaluated in memory.
DATABASE_SEARCHED = frozenset({"Task"})
