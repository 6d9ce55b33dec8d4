"""Polling Tasks through the FHIR API, as HRex pollers do, against Herald as OS processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from herald.runtime.store.database import Database
from herald.runtime.store.tables import resources
from tests.e2e.scenario import put, task
from tests.support.herald import herald_env, serving
from tests.support.services import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    """`herald run` on SQLite."""
    port = free_port()
    env = herald_env(database_url=f"sqlite:///{tmp_path / 'herald.db'}", port=str(port))
    with serving("run", env, tmp_path, port) as root:
        yield f"{root}/fhir"


@pytest.fixture
def ingest_on_postgres(kafka_bootstrap: str, postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """`herald ingest` on PostgreSQL (and Kafka, where its relay publishes)."""
    port = free_port()
    env = herald_env(
        database_url=postgres_url,
        kafka_bootstrap=kafka_bootstrap,
        kafka_topic_prefix=f"herald-poll-{uuid.uuid4().hex[:8]}.",
        port=str(port),
    )
    with serving("ingest", env, tmp_path, port) as root:
        yield f"{root}/fhir"


def _bundle(client: httpx.Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def _all_pages(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    """Every entry of a paged search, following next links."""
    entries: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        bundle = _bundle(client, next_url)
        entries.extend(bundle.get("entry", []))
        next_url = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
    return entries


def run_polling(base_url: str) -> None:
    """Write Tasks, poll by owner and _lastUpdated across pages, write more, poll again."""
    owner = f"Organization/{uuid.uuid4().hex[:8]}"
    other = f"Organization/{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for number in range(7):
            assert put(client, task(f"p{number}-{owner[-8:]}", owner)).status_code == 201
        assert put(client, task(f"x-{owner[-8:]}", other)).status_code == 201

        entries = _all_pages(client, f"{base_url}/Task?owner={owner}&_count=3")
        found = [e["resource"]["id"] for e in entries]
        assert sorted(found) == sorted(f"p{n}-{owner[-8:]}" for n in range(7))
        assert all(e["search"]["mode"] == "match" for e in entries)
        assert all(e["fullUrl"] == f"{base_url}/Task/{e['resource']['id']}" for e in entries)
        last_seen = max(e["resource"]["meta"]["lastUpdated"] for e in entries)

        time.sleep(0.01)  # lastUpdated has millisecond precision
        updated = task(f"p3-{owner[-8:]}", owner, "in-progress")
        assert put(client, updated).status_code == 200
        assert put(client, task(f"p9-{owner[-8:]}", owner)).status_code == 201
        assert put(client, task(f"y-{owner[-8:]}", other)).status_code == 201

        poll = _bundle(client, f"/Task?owner={owner}&_lastUpdated=gt{last_seen}")
        changed = sorted(e["resource"]["id"] for e in poll["entry"])
        assert changed == sorted([f"p3-{owner[-8:]}", f"p9-{owner[-8:]}"])
        assert poll["total"] == 2
        newest = _bundle(client, f"/Task?owner={owner}&_sort=-_lastUpdated&_count=1")
        assert newest["entry"][0]["resource"]["id"] in changed
        assert newest["total"] == 8

        bad = client.get(f"/Task?owner={owner}&unknown=1", headers={"Prefer": "handling=strict"})
        assert bad.status_code == 400
        assert bad.json()["resourceType"] == "OperationOutcome"
        lenient = _bundle(client, f"/Task?owner={owner}&unknown=1")
        assert lenient["total"] == 8 and "unknown" not in lenient["link"][0]["url"]
        assert client.get(f"/Task/p3-{owner[-8:]}").json()["status"] == "in-progress"


def test_polling_embedded(embedded: str) -> None:
    run_polling(embedded)


@pytest.mark.kafka
@pytest.mark.postgres
def test_polling_on_postgres(ingest_on_postgres: str) -> None:
    run_polling(ingest_on_postgres)


async def _database_before_search(url: str) -> None:
    """A database at the first schema revision holding one Task (as an older Herald left it)."""
    database = Database(url)
    try:
        await database.migrate("0001")
        async with database.transaction() as connection:
            stored = {
                "resourceType": "Task",
                "id": "old",
                "meta": {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00.000Z"},
                "status": "requested",
                "intent": "order",
                "owner": {"reference": "Organization/legacy"},
            }
            await connection.execute(
                resources.insert().values(
                    resource_type="Task",
                    id="old",
                    version_id=1,
                    last_updated="2025-01-01T00:00:00.000Z",
                    deleted=False,
                    content=orjson.dumps(stored).decode(),
                )
            )
    finally:
        await database.aclose()


def test_tasks_stored_before_the_search_index_are_found(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'herald.db'}"
    asyncio.run(_database_before_search(url))
    port = free_port()
    with (
        serving("run", herald_env(database_url=url, port=str(port)), tmp_path, port) as root,
        httpx.Client(base_url=f"{root}/fhir", timeout=10) as client,
    ):
        bundle = _bundle(client, "/Task?owner=Organization/legacy")
        assert [e["resource"]["id"] for e in bundle["entry"]] == ["old"]
        assert bundle["total"] == 1
