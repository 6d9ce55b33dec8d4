"""The OpenAPI document describes bodies, search parameters and the OperationOutcome answers."""

from __future__ import annotations

from typing import Any

import httpx

from herald.ingest.app import create_app
from herald.ingest.context import IngestContext
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings


async def _no_readiness() -> dict[str, bool]:
    return {}


def _document() -> dict[str, Any]:
    settings = Settings()
    topics = load_topics(settings.topics_dir)
    app = create_app(IngestContext(settings, None, topics, Metrics()), _no_readiness)  # type: ignore[arg-type]
    return app.openapi()


def test_bodies_parameters_and_errors_are_described() -> None:
    paths = _document()["paths"]
    task_body = paths["/fhir/Task"]["post"]["requestBody"]["content"]
    assert set(task_body) == {"application/fhir+json", "application/fhir+xml"}
    assert "status" in task_body["application/fhir+json"]["schema"]["required"]
    names = {p["name"] for p in paths["/fhir/Task"]["get"]["parameters"]}
    assert {"owner", "status", "_lastUpdated", "_count", "_format"} <= names
    assert "requestBody" in paths["/fhir/Subscription"]["post"]
    operation_ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for operations in paths.values():
        for operation in operations.values():
            assert "4XX" in operation["responses"] and "422" not in operation["responses"]


async def test_cors_is_off_unless_origins_are_configured() -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    for origins, allowed in (("", False), ("https://app.example", True)):
        settings = Settings(cors_origins=origins)
        topics = load_topics(settings.topics_dir)
        app = create_app(IngestContext(settings, None, topics, Metrics()), _no_readiness)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
            answer = await client.options("/fhir/Task", headers=preflight)
        granted = answer.headers.get("access-control-allow-origin")
        assert (granted == "https://app.example") is allowed
