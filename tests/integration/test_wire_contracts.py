"""What the producers really write validates against schemas/kafka, and the consumers accept it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from herald.core.contracts import decode_change, decode_request, encode
from herald.core.matching import SubscriptionIndex
from herald.ingest import writes
from herald.ingest.context import IngestContext
from herald.matcher.refresh import refresh
from herald.matcher.service import notification_requests
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store import outbox
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "kafka"
HREX = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture
async def ctx(database: Database) -> IngestContext:
    settings = Settings(database_url="sqlite://", allow_http_endpoints=True)
    return IngestContext(settings, database, load_topics(), Metrics())


async def _outbox_payloads(database: Database) -> list[bytes]:
    async with database.read() as connection:
        return [r.payload for r in await outbox.claim(connection, 100)]


def _task(status: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "owner": {"reference": "Organization/1"},
    }


async def test_ingest_and_matcher_records_follow_their_schemas(ctx: IngestContext) -> None:
    stored = {
        "resourceType": "Subscription",
        "id": "s1",
        "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000Z"},
        "criteria": HREX,
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://127.0.0.1:9/",
            "payload": "application/fhir+json",
        },
    }
    async with ctx.database.transaction() as connection:
        await registry.insert_new(connection, stored, status="active", topic=HREX)

    await writes.write(ctx, _task("requested"), "t1")
    await writes.write(ctx, _task("in-progress"), "t1")
    await writes.delete(ctx, "Task", "t1")

    changes = validator("resource-change.v1.json")
    requests = validator("notification-request.v1.json")
    index = SubscriptionIndex(ctx.topics)
    await refresh(index, ctx.database)
    payloads = await _outbox_payloads(ctx.database)
    assert len(payloads) == 3
    produced = []
    for payload in payloads:
        changes.validate(json.loads(payload))
        change = decode_change(payload)
        assert change.registry_revision <= index.revision
        produced += notification_requests(change, index)
    assert [r.interaction for r in produced] == ["create", "update"]
    for request in produced:
        requests.validate(json.loads(encode(request)))
        assert decode_request(encode(request)) == request
