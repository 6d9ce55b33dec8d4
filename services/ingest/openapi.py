"""The OpenAPI document of the FHIR API: what FastAPI derives from the routes, completed with what
the handlers read themselves (FHIR bodies in JSON and XML, search parameters, operation
parameters) and what every route may answer (an OperationOutcome for any 4xx).

The handlers read raw requests (FHIR content negotiation, XML), so FastAPI sees no body and no
query parameters; this module says what they are, in one place, for clients and for
schema-driven fuzzing (schemathesis in the test suite).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from herald.core.fhir import FHIR_JSON, FHIR_XML, TASK_INTENT_CODES, TASK_STATUS_CODES
from herald.core.search import PARAMETERS
from herald.core.subscriptions import CONTENT_CODES, STATUSES
from herald.core.topics import TopicCatalog

Schema = dict[str, Any]

_ID: Schema = {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"}
_REFERENCE: Schema = {"type": "object", "properties": {"reference": {"type": "string"}}}
_RESOURCE: Schema = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
}
_OUTCOME: Schema = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {"type": "array", "items": {"type": "object"}},
    },
}
_RESULT_PARAMETERS: list[Schema] = [
    {"name": "_count", "schema": {"type": "integer", "minimum": 0}},
    {"name": "_sort", "schema": {"type": "string"}},
    {"name": "_total", "schema": {"enum": ["accurate", "estimate", "none"]}},
    {"name": "_summary", "schema": {"enum": ["true", "text", "data", "count", "false"]}},
    {"name": "_elements", "schema": {"type": "string"}},
    {"name": "_include", "schema": {"enum": ["Task:output"]}},
]
_FORMAT: Schema = {"name": "_format", "schema": {"enum": ["json", "xml", FHIR_JSON, FHIR_XML]}}


def _task_schema() -> Schema:
    return {
        "type": "object",
        "required": ["resourceType", "status", "intent"],
        "properties": {
            "resourceType": {"const": "Task"},
            "id": _ID,
            "status": {"enum": sorted(TASK_STATUS_CODES)},
            "intent": {"enum": sorted(TASK_INTENT_CODES)},
            "description": {"type": "string"},
            "owner": _REFERENCE,
            "requester": _REFERENCE,
            "code": {"type": "object"},
            "input": {"type": "array", "items": {"type": "object"}},
        },
    }


def _subscription_schema(topics: TopicCatalog) -> Schema:
    return {
        "type": "object",
        "required": ["resourceType", "criteria", "channel"],
        "properties": {
            "resourceType": {"const": "Subscription"},
            "id": _ID,
            "status": {"enum": sorted(STATUSES)},
            "reason": {"type": "string"},
            "criteria": {"enum": sorted(topics)},
            "end": {"type": "string", "format": "date-time"},
            "channel": {
                "type": "object",
                "required": ["type", "endpoint", "payload"],
                "properties": {
                    "type": {"const": "rest-hook"},
                    "endpoint": {"type": "string", "format": "uri"},
                    "payload": {"enum": [FHIR_JSON, FHIR_XML]},
                    "header": {"type": "array", "items": {"type": "string"}, "maxItems": 25},
                },
            },
        },
    }


_PARAMETERS_SCHEMA: Schema = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"const": "Parameters"},
        "parameter": {"type": "array", "items": {"type": "object"}},
    },
}


def _body(schema: Schema, *, required: bool = True) -> Schema:
    return {
        "required": required,
        "content": {FHIR_JSON: {"schema": schema}, FHIR_XML: {"schema": {"type": "string"}}},
    }


def _query(names: list[str] | tuple[str, ...]) -> list[Schema]:
    return [{"name": n, "in": "query", "schema": {"type": "string"}} for n in names]


def _task_search_parameters() -> list[Schema]:
    criteria = _query(tuple(PARAMETERS["Task"]))
    return criteria + [{**p, "in": "query"} for p in _RESULT_PARAMETERS]


def _completions(topics: TopicCatalog) -> dict[tuple[str, str], dict[str, Any]]:
    """What each operation adds to FastAPI's description: (method, path) -> fields."""
    task_body = {"requestBody": _body(_task_schema())}
    subscription_body = {"requestBody": _body(_subscription_schema(topics))}
    parameters_body = {"requestBody": _body(_PARAMETERS_SCHEMA, required=False)}
    events = _query(["eventsSinceNumber", "eventsUntilNumber"])
    for parameter in events:
        parameter["schema"] = {"type": "integer", "minimum": 0}
    events.append({"name": "content", "in": "query", "schema": {"enum": list(CONTENT_CODES)}})
    search_form = {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {p["name"]: p["schema"] for p in _task_search_parameters()},
                }
            }
        },
    }
    return {
        ("post", "/fhir/Task"): task_body,
        ("put", "/fhir/Task/{task_id}"): task_body,
        ("get", "/fhir/Task"): {"parameters": _task_search_parameters()},
        ("post", "/fhir/Task/_search"): {"requestBody": search_form},
        ("post", "/fhir/Subscription"): subscription_body,
        ("put", "/fhir/Subscription/{subscription_id}"): subscription_body,
        ("get", "/fhir/Subscription"): {"parameters": _query(["_id", "status", "url", "topic"])},
        ("get", "/fhir/Basic"): {"parameters": _query(["code", "_id"])},
        ("get", "/fhir/Subscription/$status"): {"parameters": _query(["id", "status"])},
        ("post", "/fhir/Subscription/$status"): parameters_body,
        ("post", "/fhir/Subscription/{subscription_id}/$status"): parameters_body,
        ("get", "/fhir/Subscription/{subscription_id}/$events"): {"parameters": events},
        ("post", "/fhir/Subscription/{subscription_id}/$events"): parameters_body,
        ("post", "/canvas/integration-tasks"): {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }


def _complete(path: str, method: str, operation: dict[str, Any], extra: dict[str, Any]) -> None:
    operation["operationId"] = re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_")
    parameters = [p for p in operation.get("parameters", []) if p.get("in") == "path"]
    for parameter in parameters:
        parameter["schema"] = dict(_ID)
    parameters += extra.get("parameters", [])
    if method == "get" and path.startswith("/fhir"):
        parameters.append({**_FORMAT, "in": "query"})
    if parameters:
        operation["parameters"] = parameters
    else:
        operation.pop("parameters", None)
    if "requestBody" in extra:
        operation["requestBody"] = extra["requestBody"]
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    for code, response in responses.items():
        if code != "204":
            response["content"] = {
                FHIR_JSON: {"schema": _RESOURCE},
                FHIR_XML: {"schema": {"type": "string"}},
            }
    responses["4XX"] = {
        "description": "The request is refused; the OperationOutcome says why",
        "content": {FHIR_JSON: {"schema": _OUTCOME}, FHIR_XML: {"schema": {"type": "string"}}},
    }
    responses["503"] = {"description": "The server is at its connection limit"}


def openapi_document(app: FastAPI, topics: TopicCatalog) -> dict[str, Any]:
    """The OpenAPI document of the app (built once, then cached on the app)."""
    if app.openapi_schema is None:
        with warnings.catch_warnings():
            # Routes serving GET and POST share FastAPI's generated operationId; each gets its
            # own below.
            warnings.simplefilter("ignore", UserWarning)
            document = get_openapi(
                title=app.title, version=app.version, description=__doc__, routes=app.routes
            )
        document.get("components", {}).pop("schemas", None)  # FastAPI's 422 models, unused
        completions = _completions(topics)
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                _complete(path, method, operation, completions.get((method, path), {}))
        app.openapi_schema = document
    return app.openapi_schema
