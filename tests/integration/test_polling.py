"""Gap-free polling: `Task?_lastUpdated=gt<newest seen>` never misses a change (HRex polling).

Writers update Tasks concurrently (several PostgreSQL connections at once) while a poller walks
the HRex polling query the way the seed describes: keep the newest meta.lastUpdated seen, ask
for everything after it. After the writers stop and one last poll, the poller must hold the
latest version of every Task. (Without the write clock of herald.runtime.store.resources, this
fails on PostgreSQL: a write that commits after a later-stamped one hides behind the cursor.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.fhir import format_instant, utc_now
from herald.core.resources import with_version
from herald.core.search import parse_query
from herald.ingest.app import create_app
from herald.ingest.context import IngestContext
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store import resources
from herald.runtime.store.database import Database
from herald.runtime.store.search import SearchRequest, search

BASE = "http://herald.test/fhir"
WRITERS = 8
PER_WRITER = 8


async def _ready() -> dict[str, bool]:
    return {"database": True}


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url="sqlite://", base_url=BASE)
    ctx = IngestContext(settings, database, load_topics(), Metrics())
    transport = httpx.ASGITransport(app=create_app(ctx, _ready))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        yield http


async def _write(client: httpx.AsyncClient, writer: int) -> None:
    # Each Task is written once, so a missed version is a missed Task.
    for number in range(PER_WRITER):
        tid = f"w{writer}-{number}"
        task = {"resourceType": "Task", "id": tid, "status": "requested", "intent": "order"}
        response = await client.put(f"/fhir/Task/{tid}", json=task)
        assert response.status_code == 201, response.text


async def _poll(client: httpx.AsyncClient, seen: dict[str, int], cursor: str) -> str:
    """One HRex poll, paging to the end; returns the newest lastUpdated seen."""
    url: str | None = f"/fhir/Task?_lastUpdated=gt{quote(cursor)}&_count=5"
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        for entry in bundle.get("entry", []):
            task = entry["resource"]
            version = int(task["meta"]["versionId"])
            seen[task["id"]] = max(seen.get(task["id"], 0), version)
            cursor = max(cursor, task["meta"]["lastUpdated"])
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        url = url.removeprefix(BASE).join(("/fhir", "")) if url else None
    return cursor


async def test_a_poller_sees_the_latest_version_of_every_task(
    client: httpx.AsyncClient,
) -> None:
    seen: dict[str, int] = {}
    cursor = "2000-01-01T00:00:00.000Z"
    writers = [asyncio.create_task(_write(client, w)) for w in range(WRITERS)]
    while not all(w.done() for w in writers):
        cursor = await _poll(client, seen, cursor)
    await asyncio.gather(*writers)
    cursor = await _poll(client, seen, cursor)
    everything = (await client.get("/fhir/Task?_count=1000")).json()
    latest = {
        e["resource"]["id"]: int(e["resource"]["meta"]["versionId"]) for e in everything["entry"]
    }
    assert len(latest) == WRITERS * PER_WRITER
    assert seen == latest


async def _versions_after(database: Database, cursor: str) -> list[tuple[str, str]]:
    criteria = parse_query("Task", f"_lastUpdated=gt{quote(cursor)}")
    async with database.read() as connection:
        page = await search(connection, SearchRequest(criteria, count=100), now=utc_now())
    return [(t["id"], t["meta"]["lastUpdated"]) for t in page.matches]


async def _stamp_and_save(connection: AsyncConnection, tid: str) -> None:
    now = format_instant(await resources.write_clock(connection, "Task"))
    task = with_version({"resourceType": "Task", "status": "requested"}, tid, 1, now)
    await resources.save(connection, task, previous=None)


async def test_a_write_that_commits_late_is_not_hidden_behind_the_cursor(
    database: Database,
) -> None:
    # The interleaving that loses a change without the write clock: the first writer stamps,
    # a second stamps later and commits first, a poll moves the cursor past the second, then
    # the first commits with its earlier stamp.
    first_saved = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with database.transaction() as connection:
            await _stamp_and_save(connection, "first")
            first_saved.set()
            await release_first.wait()

    async def second() -> None:
        async with database.transaction() as connection:
            await _stamp_and_save(connection, "second")

    one = asyncio.create_task(first())
    await first_saved.wait()
    two = asyncio.create_task(second())
    # Give the second writer time to commit, as it would without the write clock.
    await asyncio.wait({two}, timeout=0.5)
    cursor = "2000-01-01T00:00:00.000Z"
    seen = await _versions_after(database, cursor)
    cursor = max([cursor, *(stamp for _, stamp in seen)])
    release_first.set()
    await asyncio.gather(one, two)
    seen += await _versions_after(database, cursor)
    assert sorted(tid for tid, _ in seen) == ["first", "second"]
