"""Task search in the database, through the FHIR API, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.fhir import utc_now
from herald.core.resources import with_version
from herald.core.search import parse_query
from herald.ingest.app import create_app
from herald.ingest.context import IngestContext
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store import resources
from herald.runtime.store.database import MIGRATIONS, Database
from herald.runtime.store.search import search_ids
from herald.runtime.store.tables import resources as resource_table
from herald.runtime.store.tables import search_references, search_tokens

BASE = "http://herald.test/fhir"


async def _ready() -> dict[str, bool]:
    return {"database": True}


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url="sqlite://", base_url=BASE, allow_http_endpoints=True
    )  # the URL is unused: the app gets `database`
    ctx = IngestContext(settings, database, load_topics(), Metrics())
    app = create_app(ctx, _ready)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        yield http


def task(
    owner: str | None = "Organization/1",
    status: str = "requested",
    code: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Task", "status": status, "intent": "order"}
    if owner:
        resource["owner"] = {"reference": owner}
    if code:
        resource["code"] = {"coding": [{"system": "http://example.org/codes", "code": code}]}
    resource.update(extra)
    return resource


async def put(client: httpx.AsyncClient, tid: str, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.put(f"/fhir/Task/{tid}", json={**resource, "id": tid})
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def get(client: httpx.AsyncClient, url: str, status: int = 200) -> dict[str, Any]:
    if url.startswith(BASE):
        url = "/fhir" + url[len(BASE) :]
    response = await client.get(url)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle["link"] if x["relation"] == relation), None)


async def test_owner_status_code_intent_and_id(client: httpx.AsyncClient) -> None:
    await put(client, "a", task("Organization/1", "requested", "x"))
    await put(client, "b", task("Organization/2", "completed", "y"))
    await put(client, "c", task("http://elsewhere.example/fhir/Organization/1", "completed"))
    await put(client, "d", task(None, "draft", "x", intent="plan"))

    async def found(query: str) -> list[str]:
        return sorted(ids(await get(client, f"/fhir/Task?{query}")))

    assert await found("owner=Organization/1") == ["a", "c"]
    assert await found("owner=Organization/1&status=completed") == ["c"]
    assert await found("owner=Organization/1,Organization/2") == ["a", "b", "c"]
    assert await found("status:not=completed") == ["a", "d"]
    assert await found("code=x") == ["a", "d"]
    assert await found("code=http://example.org/codes|y") == ["b"]
    assert await found("code=|y") == []
    assert await found("intent=plan") == ["d"]
    assert await found("owner:missing=true") == ["d"]
    assert await found("_id=a,b") == ["a", "b"]
    assert await found("owner:Organization=1") == ["a", "c"]
    assert await found("owner=1") == ["a", "c"]
    assert await found("status=http://hl7.org/fhir/task-status|draft") == ["d"]
    assert await found("") == ["a", "b", "c", "d"]


async def test_the_bundle_is_a_searchset_with_full_urls(client: httpx.AsyncClient) -> None:
    await put(client, "a", task())
    bundle = await get(client, "/fhir/Task?owner=Organization/1")
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert link(bundle, "self") == f"{BASE}/Task?owner=Organization/1"
    assert link(bundle, "next") is None
    (entry,) = bundle["entry"]
    assert entry["fullUrl"] == f"{BASE}/Task/a"
    assert entry["search"] == {"mode": "match"}
    assert entry["resource"]["meta"]["versionId"] == "1"
    assert "total" not in await get(client, "/fhir/Task?_total=none")
    assert (await get(client, "/fhir/Task?_total=accurate"))["total"] == 1


async def test_last_updated_polling_and_sort(client: httpx.AsyncClient) -> None:
    first = await put(client, "a", task())
    second = await put(client, "b", task())
    third = await put(client, "a", task(status="in-progress"))
    assert first["meta"]["lastUpdated"] <= second["meta"]["lastUpdated"]
    since = second["meta"]["lastUpdated"]
    poll = await get(client, f"/fhir/Task?owner=Organization/1&_lastUpdated=ge{since}")
    assert sorted(ids(poll)) == sorted({"b", "a"})
    later = third["meta"]["lastUpdated"]
    assert ids(await get(client, f"/fhir/Task?_lastupdated=gt{later}")) == []
    assert ids(await get(client, "/fhir/Task?_sort=_lastUpdated")) == ["b", "a"]
    assert ids(await get(client, "/fhir/Task?_sort=-_lastUpdated")) == ["a", "b"]
    # '+' in a time zone survives the query string unencoded.
    assert sorted(ids(await get(client, "/fhir/Task?_lastUpdated=gt2000-01-01T00:00+02:00"))) == [
        "a",
        "b",
    ]


@pytest.mark.parametrize("sort", ["_lastUpdated", "-_lastUpdated"])
async def test_paging_neither_skips_nor_repeats_under_writes(
    client: httpx.AsyncClient, sort: str
) -> None:
    for number in range(7):
        await put(client, f"t{number}", task())
    url: str | None = f"/fhir/Task?owner=Organization/1&_count=3&_sort={sort}"
    seen: list[str] = []
    written = 0
    while url is not None:
        bundle = await get(client, url)
        seen.extend(ids(bundle))
        # Writes between pages: a new Task, and a Task that does not match the search.
        await put(client, f"new{written}", task())
        await put(client, f"other{written}", task("Organization/2"))
        written += 1
        url = link(bundle, "next")
    originals = [f"t{n}" for n in range(7)]
    assert len(seen) == len(set(seen)), seen
    assert set(originals) <= set(seen)
    if sort == "-_lastUpdated":
        assert seen[:7] == list(reversed(originals))
    else:
        assert seen[:7] == originals


async def test_count_limits_and_next_links_carry_the_query(client: httpx.AsyncClient) -> None:
    for number in range(5):
        await put(client, f"t{number}", task())
    bundle = await get(client, "/fhir/Task?status=requested&_count=2")
    assert len(ids(bundle)) == 2 and bundle["total"] == 5
    next_url = link(bundle, "next")
    assert next_url is not None and next_url.startswith(f"{BASE}/Task?status=requested&_count=2&")
    assert "_cursor=" in urlsplit(next_url).query
    empty = await get(client, "/fhir/Task?_count=0")
    assert empty["total"] == 5 and ids(empty) == []
    assert len(ids(await get(client, "/fhir/Task?_count=5000"))) == 5


async def test_include_task_output(client: httpx.AsyncClient) -> None:
    await put(client, "result", task(None, "completed"))
    output = [
        {"type": {"text": "r"}, "valueReference": {"reference": "Task/result"}},
        {"type": {"text": "r"}, "valueReference": {"reference": "Task/absent"}},
        {"type": {"text": "r"}, "valueReference": {"reference": f"{BASE}/Task/result"}},
    ]
    await put(client, "main", task("Organization/9", "completed", output=output))
    bundle = await get(client, "/fhir/Task?owner=Organization/9&_include=Task:output")
    assert ids(bundle) == ["main"]
    assert ids(bundle, "include") == ["result"]
    assert bundle["total"] == 1
    plain = await get(client, "/fhir/Task?owner=Organization/9")
    assert ids(plain, "include") == []


async def test_deleted_tasks_are_not_found(client: httpx.AsyncClient) -> None:
    await put(client, "a", task())
    await put(client, "b", task())
    assert (await client.delete("/fhir/Task/a")).status_code == 204
    assert ids(await get(client, "/fhir/Task?owner=Organization/1")) == ["b"]
    await put(client, "a", task("Organization/3"))
    assert ids(await get(client, "/fhir/Task?owner=Organization/3")) == ["a"]
    assert ids(await get(client, "/fhir/Task?owner=Organization/1")) == ["b"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("patient:Group=Patient/1", "patient"),
        ("owner.name=x", "'owner.name'"),
        ("status:in=http://vs", ":in"),
        ("code:text=abc", ":text"),
        ("_lastUpdated=xx2024", "prefix"),
        ("_lastUpdated=2024-13", "Malformed date"),
        ("_count=abc", "_count"),
        ("_sort=status", "_sort"),
        ("_summary=maybe", "_summary"),
        ("_elements=a&_summary=true", "_elements"),
        ("_total=sometimes", "_total"),
        ("_include=Task:owner", "_include"),
        ("_cursor=!!!", "cursor"),
        ("owner:Patient=Organization/1", "owner"),
    ],
)
async def test_bad_searches_get_400_with_an_operation_outcome(
    client: httpx.AsyncClient, query: str, words: str
) -> None:
    body = await get(client, f"/fhir/Task?{query}", status=400)
    assert body["resourceType"] == "OperationOutcome"
    assert words in body["issue"][0]["diagnostics"]


async def test_read_by_id_still_works_beside_search(client: httpx.AsyncClient) -> None:
    await put(client, "a", task())
    assert (await get(client, "/fhir/Task/a"))["id"] == "a"
    await get(client, "/fhir/Task/nope", status=404)


async def test_index_rows_follow_writes_and_deletes(database: Database) -> None:
    now = "2026-01-01T00:00:00.000Z"
    first = with_version(task("Organization/1", code="x"), "t1", 1, now)
    async with database.transaction() as connection:
        await resources.save(connection, first, previous=None)
    async with database.transaction() as connection:
        previous = (await resources.begin_write(connection, "Task", "t1")).previous
        second = with_version(task("Organization/2"), "t1", 2, now)
        await resources.save(connection, second, previous=previous)
    async with database.read() as connection:
        refs = (await connection.execute(select(search_references.c.ref_id))).scalars().all()
        assert sorted(r for r in refs if r) == ["2"]
        codes = await connection.scalar(select(func.count()).where(search_tokens.c.param == "code"))
        assert codes == 0
        stored = await resources.current(connection, "Task", "t1")
    assert stored is not None
    async with database.transaction() as connection:
        await resources.mark_deleted(connection, stored, 3, now)
    async with database.read() as connection:
        assert await connection.scalar(select(func.count()).select_from(search_tokens)) == 0
        assert await search_ids(connection, parse_query("Task", ""), now=_now()) == []


async def _store_unindexed(
    connection: AsyncConnection, stamped: dict[str, Any], *, deleted: bool = False
) -> None:
    """A Task row as an older revision stored it, without the index rows of today's code."""
    meta = stamped["meta"]
    await connection.execute(
        resource_table.insert().values(
            resource_type="Task",
            id=stamped["id"],
            version_id=int(meta["versionId"]),
            last_updated=meta["lastUpdated"],
            deleted=deleted,
            content=orjson.dumps(stamped).decode(),
        )
    )


def _downgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _now() -> datetime:
    return utc_now()


async def test_the_0002_migration_indexes_existing_tasks(database_url: str) -> None:
    database = Database(database_url)
    try:
        await database.migrate("0001")
        now = "2026-01-01T00:00:00.000Z"
        async with database.transaction() as connection:
            for number in range(3):
                stamped = with_version(task(f"Organization/{number}"), f"t{number}", 1, now)
                await _store_unindexed(connection, stamped, deleted=number == 2)
        await database.migrate()
        async with database.read() as connection:
            found = await search_ids(
                connection, parse_query("Task", "owner=Organization/1"), now=_now()
            )
            everything = await search_ids(connection, parse_query("Task", ""), now=_now())
        assert found == ["t1"]
        assert everything == ["t0", "t1"]
    finally:
        await database.aclose()


async def test_search_by_post_and_summary_count(client: httpx.AsyncClient) -> None:
    await put(client, "a", task("Organization/1"))
    await put(client, "b", task("Organization/2"))
    response = await client.post(
        "/fhir/Task/_search",
        content="owner=Organization%2F2&_lastUpdated=gt2000-01-01T00%3A00%2B02%3A00",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert ids(response.json()) == ["b"]
    counted = await get(client, "/fhir/Task?owner=Organization/1&_summary=count")
    assert counted["total"] == 1 and ids(counted) == []
    summary = await get(client, "/fhir/Task?_summary=true&owner=Organization/1")
    (resource,) = (e["resource"] for e in summary["entry"])
    assert resource["meta"]["tag"][-1]["code"] == "SUBSETTED"
    assert {"status", "intent", "owner"} <= resource.keys()


RICH = {
    "identifier": [{"system": "http://ids.example", "value": "id-1"}],
    "basedOn": [{"reference": "ServiceRequest/sr1"}],
    "groupIdentifier": {"system": "http://groups.example", "value": "g1"},
    "partOf": [{"reference": "Task/parent"}],
    "businessStatus": {
        "coding": [{"system": "http://canvas.example/bs", "code": "pending-review"}]
    },
    "priority": "urgent",
    "focus": {"reference": "DocumentReference/doc1"},
    "for": {"reference": "Patient/p1"},
    "encounter": {"reference": "Encounter/e1"},
    "executionPeriod": {"start": "2026-01-02T00:00:00Z", "end": "2026-01-03T00:00:00Z"},
    "authoredOn": "2026-01-01T10:00:00Z",
    "lastModified": "2026-01-04T10:00:00Z",
    "requester": {"reference": "Practitioner/dr1"},
    "performerType": [{"coding": [{"system": "http://perf.example", "code": "nurse"}]}],
}


async def test_every_r4_task_search_parameter(client: httpx.AsyncClient) -> None:
    rich = {**task(), **RICH}
    rich["meta"] = {
        "tag": [{"system": "http://tags.example", "code": "t1"}],
        "security": [{"system": "http://sec.example", "code": "R"}],
        "profile": ["http://profiles.example/fhir/StructureDefinition/task"],
        "source": "http://source.example/app",
    }
    await put(client, "rich", rich)
    await put(client, "plain", task("Organization/2"))

    async def found(query: str) -> list[str]:
        return sorted(ids(await get(client, f"/fhir/Task?{query}")))

    hits = {
        "_tag": "http://tags.example|t1",
        "_security": "R",
        "_profile": "http://profiles.example/fhir/StructureDefinition/task",
        "_profile:below": "http://profiles.example/fhir",
        "_profile:above": "http://profiles.example/fhir/StructureDefinition/task/extra",
        "_source": "http://source.example/app",
        "authored-on": "2026-01-01",
        "based-on": "ServiceRequest/sr1",
        "business-status": "pending-review",
        "encounter": "Encounter/e1",
        "focus": "DocumentReference/doc1",
        "group-identifier": "http://groups.example|g1",
        "identifier": "id-1",
        "modified": "gt2026-01-03",
        "part-of": "Task/parent",
        "patient": "Patient/p1",
        "subject": "Patient/p1",
        "performer": "nurse",
        "period": "sa2026-01-01",
        "priority": "urgent",
        "requester": "Practitioner/dr1",
    }
    for name, value in hits.items():
        assert await found(f"{name}={value}") == ["rich"], name
    assert await found("priority:missing=true") == ["plain"]
    assert await found("_profile:below=http://profiles.example/other") == []
    assert await found("_profile=http://PROFILES.example/fhir/StructureDefinition/task") == []
    assert await found("patient=Patient/p2") == []


async def test_unknown_parameters_are_ignored_unless_strict(client: httpx.AsyncClient) -> None:
    await put(client, "a", task())
    bundle = await get(client, "/fhir/Task?owner=Organization/1&foo=1&_count=5")
    assert ids(bundle) == ["a"]
    assert link(bundle, "self") == f"{BASE}/Task?owner=Organization/1&_count=5"
    (outcome,) = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["severity"] == "warning"
    assert "foo" in outcome["issue"][0]["diagnostics"]
    strict = await client.get("/fhir/Task?foo=1", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "'foo'" in strict.json()["issue"][0]["diagnostics"]
    # A chain on a known parameter is an error either way, never silently dropped.
    assert (await client.get("/fhir/Task?owner.name=x")).status_code == 400


async def test_an_empty_searchset_has_no_entry_array(client: httpx.AsyncClient) -> None:
    bundle = await get(client, "/fhir/Task?owner=Organization/404")
    assert bundle["total"] == 0 and "entry" not in bundle


async def test_elements_keeps_the_listed_and_mandatory_elements(client: httpx.AsyncClient) -> None:
    await put(client, "a", {**task(), **RICH})
    bundle = await get(client, "/fhir/Task?_elements=priority,for")
    (resource,) = (e["resource"] for e in bundle["entry"])
    assert set(resource) == {"resourceType", "id", "meta", "status", "intent", "priority", "for"}
    assert resource["meta"]["tag"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
    ]


@pytest.mark.parametrize("descending", [False, True])
async def test_sort_by_a_date_parameter_pages_through_every_task(
    client: httpx.AsyncClient, descending: bool
) -> None:
    days = {"a": "03", "b": "01", "c": None, "d": "02", "e": None, "f": "01"}
    for tid, day in days.items():
        extra = {"authoredOn": f"2026-01-{day}T00:00:00Z"} if day else {}
        await put(client, tid, task(**extra))
    sort = "-authored-on" if descending else "authored-on"
    url: str | None = f"/fhir/Task?_sort={sort}&_count=2"
    seen: list[str] = []
    while url is not None:
        bundle = await get(client, url)
        seen += ids(bundle)
        url = link(bundle, "next")
    dated = ["a", "d", "f", "b"] if descending else ["b", "f", "d", "a"]
    undated = ["e", "c"] if descending else ["c", "e"]
    assert seen == dated + undated


async def test_the_0006_migration_indexes_every_task_parameter(database_url: str) -> None:
    database = Database(database_url)
    try:
        await database.migrate("0005")
        now = "2026-01-01T00:00:00.000Z"
        stamped = with_version({**task(), **RICH}, "t1", 1, now)
        async with database.transaction() as connection:
            # A Task stored before 0006, without index rows for `patient`.
            await _store_unindexed(connection, stamped)
        await database.migrate()
        async with database.read() as connection:
            found = await search_ids(
                connection, parse_query("Task", "patient=Patient/p1"), now=_now()
            )
        assert found == ["t1"]
    finally:
        await database.aclose()


async def test_the_0009_migration_keeps_only_the_rows_searches_need(database_url: str) -> None:
    database = Database(database_url)
    try:
        await database.migrate("0008")
        now = "2026-01-01T00:00:00.000Z"
        stamped = with_version({**task(), "code": {"text": "no coding"}}, "t1", 1, now)
        key = {"resource_type": "Task", "resource_id": "t1"}
        status = "http://hl7.org/fhir/task-status"
        async with database.transaction() as connection:
            await _store_unindexed(connection, stamped)
            # The rows revision 0008's code wrote: `_id` rows and a present row per parameter.
            await connection.execute(
                search_tokens.insert(),
                [
                    {**key, "param": "_id", "system": None, "code": None},
                    {**key, "param": "_id", "system": None, "code": "t1"},
                    {**key, "param": "status", "system": None, "code": None},
                    {**key, "param": "status", "system": status, "code": "requested"},
                    {**key, "param": "code", "system": None, "code": None},
                ],
            )
            empty = {"literal": None, "ref_type": None, "ref_id": None, "base": None}
            await connection.execute(
                search_references.insert(),
                [
                    {**key, "param": "owner", **empty},
                    {
                        **key,
                        "param": "owner",
                        **empty,
                        "literal": "Organization/1",
                        "ref_type": "Organization",
                        "ref_id": "1",
                    },
                ],
            )
        await database.migrate()
        async with database.read() as connection:
            tokens = await connection.execute(
                select(search_tokens.c.param, search_tokens.c.system, search_tokens.c.code)
            )
            references = await connection.scalar(
                select(func.count()).select_from(search_references)
            )

            async def found(query: str) -> list[str]:
                return await search_ids(connection, parse_query("Task", query), now=_now())

            assert sorted(tokens, key=str) == [
                ("code", None, None),
                ("status", status, "requested"),
            ]
            assert references == 1
            for query in (
                "_id=t1",
                "code:missing=false",
                "owner:missing=false",
                "status=requested",
            ):
                assert await found(query) == ["t1"], query
            for query in ("_id=t2", "code:missing=true", "owner:missing=true", "_id:missing=true"):
                assert await found(query) == [], query
        async with database.transaction() as connection:
            await connection.run_sync(_downgrade, "0008")
        async with database.read() as connection:
            tokens = await connection.execute(
                select(search_tokens.c.param, search_tokens.c.system, search_tokens.c.code)
            )
            references = await connection.scalar(
                select(func.count()).select_from(search_references)
            )
        assert sorted(tokens, key=str) == [
            ("_id", None, "t1"),
            ("_id", None, None),
            ("code", None, None),
            ("status", status, "requested"),
            ("status", None, None),
        ]
        assert references == 2
    finally:
        await database.aclose()
