"""The CapabilityStatement Herald serves at /metadata."""

from __future__ import annotations

from herald import __version__
from herald.core.fhir import FHIR_VERSION
from herald.core.search import DATABASE_UNSUPPORTED_MODIFIERS, PARAMETERS
from herald.core.search._date import MODIFIERS as date_modifiers
from herald.core.search._reference import MODIFIERS as reference_modifiers
from herald.core.search._string import MODIFIERS as string_modifiers
from herald.core.search._token import MODIFIERS as token_modifiers
from herald.core.search._uri import MODIFIERS as uri_modifiers
from herald.core.subscriptions import SUBSCRIPTION_PROFILE
from herald.core.topics import TopicCatalog
from herald.core.types import JsonObject

SERVER_R4 = "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4"
BACKPORT_OPERATION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
TOPIC_CANONICAL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "capabilitystatement-subscriptiontopic-canonical"
)


def _param(name: str, kind: str, documentation: str) -> JsonObject:
    return {"name": name, "type": kind, "documentation": documentation}


SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def security(token_url: str) -> JsonObject:
    """rest.security of a server that takes SMART Backend Services tokens."""
    return {
        "cors": False,
        "service": [{"coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}]}],
        "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": token_url}]}],
        "description": "SMART Backend Services: client_credentials with a private_key_jwt "
        "client assertion (RS384 or ES384); system/ scopes; see "
        ".well-known/smart-configuration",
    }


_MODIFIERS = {
    "token": tuple(m for m in token_modifiers if m not in DATABASE_UNSUPPORTED_MODIFIERS),
    "reference": reference_modifiers,
    "date": date_modifiers,
    "uri": uri_modifiers,
    "string": string_modifiers,
}


def search_params(resource_type: str) -> list[JsonObject]:
    """searchParam entries for a type, from herald.core.search's parameter list."""
    params = []
    for parameter in PARAMETERS[resource_type].values():
        modifiers = " ".join(f":{m}" for m in _MODIFIERS[parameter.type])
        documentation = f"{resource_type}.{parameter.path}; modifiers {modifiers}"
        if parameter.type == "date":
            documentation += "; prefixes eq ne gt lt ge le sa eb ap"
        params.append(
            {
                "name": parameter.name,
                "definition": parameter.definition,
                "type": parameter.type,
                "documentation": documentation,
            }
        )
    return params


def capability_statement(
    base_url: str, topics: TopicCatalog, *, date: str, token_url: str | None = None
) -> JsonObject:
    """A CapabilityStatement describing this server."""
    subscription = {
        "type": "Subscription",
        "extension": [{"url": TOPIC_CANONICAL, "valueCanonical": url} for url in sorted(topics)],
        "supportedProfile": [SUBSCRIPTION_PROFILE],
        "interaction": [
            {"code": c}
            for c in (
                "read",
                "create",
                "update",
                "delete",
                "history-instance",
                "history-type",
                "search-type",
            )
        ],
        "versioning": "versioned",
        "readHistory": False,
        "updateCreate": False,
        "conditionalRead": "full-support",
        "searchParam": search_params("Subscription"),
        "operation": [
            {"name": "status", "definition": BACKPORT_OPERATION + "backport-subscription-status"},
            {"name": "events", "definition": BACKPORT_OPERATION + "backport-subscription-events"},
        ],
    }
    basic = {
        "type": "Basic",
        "documentation": "SubscriptionTopics as Basic resources (fhir-types|SubscriptionTopic)",
        "interaction": [{"code": c} for c in ("read", "search-type")],
        "searchParam": [
            _param("code", "token", "fhir-types|SubscriptionTopic"),
            _param("_id", "token", "topic id"),
        ],
    }
    task = {
        "type": "Task",
        "interaction": [
            {"code": c}
            for c in (
                "read",
                "vread",
                "create",
                "update",
                "patch",
                "delete",
                "history-instance",
                "history-type",
                "search-type",
            )
        ],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "searchInclude": ["Task:output"],
        "searchParam": [
            *search_params("Task"),
            _param("_count", "number", "page size: default 50, at most 1000"),
            _param("_sort", "string", "a date parameter (default _lastUpdated); - descending"),
            _param("_total", "token", "accurate (default), estimate or none"),
            _param("_summary", "token", "true, text, data, count or false"),
            _param("_elements", "string", "top-level elements to return"),
        ],
    }
    code_system = {
        "type": "CodeSystem",
        "documentation": "Herald's own CodeSystems (the Canvas IntegrationTask codes)",
        "interaction": [{"code": c} for c in ("read", "search-type")],
        "versioning": "no-version",
        "searchParam": [
            _param("_id", "token", "CodeSystem id"),
            _param("url", "uri", "canonical URL"),
            _param("name", "string", "computer-friendly name (starts with)"),
            _param("status", "token", "publication status"),
        ],
    }
    return {
        "resourceType": "CapabilityStatement",
        "id": "herald",
        "url": f"{base_url}/metadata",
        "name": "Herald",
        "title": "Herald FHIR Subscriptions broker",
        "status": "active",
        "date": date,
        "publisher": "Herald",
        "kind": "instance",
        "instantiates": [SERVER_R4],
        "software": {"name": "Herald", "version": __version__},
        "implementation": {"description": "Herald FHIR Subscriptions broker", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "xml"],
        "rest": [
            {
                "mode": "server",
                **({"security": security(token_url)} if token_url else {}),
                "resource": [subscription, task, basic, code_system],
            }
        ],
    }
