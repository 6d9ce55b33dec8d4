"""POST /canvas/integration-tasks through the FHIR app, on SQLite and PostgreSQL.

Each case checks the stored Task (read back through the API), its version, and the change events
queued in the outbox (what the matcher will see): a snapshot that changes nothing queues nothing.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from herald.ingest.app import create_app
from herald.ingest.context import IngestContext
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store.database import Database
from herald.runtime.store.tables import outbox
from tests.support.matching import REPO
from tests.support.smart import CANVAS_SECRET, webhook_headers
from tests.unit.test_canvas_mapping import STAFF, TASK_ID, TEAM, example

BASE = "http://herald.test/fhir"
URL = "/canvas/integration-tasks"


async def _ready() -> dict[str, bool]:
    return {"database": True}


def _client(database: Database, secret: str | None = None) -> httpx.AsyncClient:
    settings = Settings(database_url="sqlite://", base_url=BASE, canvas_secret=secret)
    ctx = IngestContext(settings, database, load_topics(), Metrics())
    app = create_app(ctx, _ready)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://herald.test")


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(database) as http:
        yield http


async def changes(database: Database) -> list[dict[str, Any]]:
    """The change events queued so far, oldest first."""
    async with database.read() as connection:
        rows = await connection.execute(select(outbox.c.payload).order_by(outbox.c.id))
        return [orjson.loads(bytes(r.payload)) for r in rows]


async def post(client: httpx.AsyncClient, snapshot: Any, status: int, outcome: str | None) -> Any:
    response = await client.post(URL, json=snapshot)
    assert response.status_code == status, response.text
    if outcome is not None:
        assert response.headers["X-Herald-Canvas-Outcome"] == outcome
    return response.json()


def at(snapshot: dict[str, Any], modified: str, **task: Any) -> dict[str, Any]:
    changed = copy.deepcopy(snapshot)
    changed["integration_task"].update(modified=modified, **task)
    return changed


async def test_lifecycle_new_repeat_update_stale_junk_delete(
    client: httpx.AsyncClient, database: Database
) -> None:
    created = await post(client, example(), 201, "created")
    assert created["id"] == TASK_ID and created["meta"]["versionId"] == "1"
    assert created["status"] == "in-progress"
    read = (await client.get(f"/fhir/Task/{TASK_ID}")).json()
    assert read == created

    # Repeated: same content, no new version, no change event.
    again = await post(client, example(), 200, "unchanged")
    assert again["meta"]["versionId"] == "1"
    assert len(await changes(database)) == 1

    # Updated: processed.
    processed = await post(
        client, at(example(), "2026-08-20T16:00:00Z", status="PRO"), 200, "updated"
    )
    assert processed["meta"]["versionId"] == "2" and processed["status"] == "completed"

    # Stale: an older snapshot arriving late changes nothing.
    stale = await post(client, at(example(), "2026-08-20T15:30:00Z", status="UNR"), 200, "stale")
    assert stale["meta"]["versionId"] == "2" and stale["status"] == "completed"

    # Errored, then junked.
    errored = await post(client, at(example(), "2026-08-20T16:30:00Z", status="ERR"), 200, None)
    assert errored["status"] == "failed"
    assert errored["statusReason"] == {"text": "Integration processing error"}
    junked = await post(client, at(example(), "2026-08-20T17:00:00Z", status="JUN"), 200, None)
    assert junked["status"] == "cancelled"
    assert junked["businessStatus"]["coding"][0]["code"] == "JUN"

    # Deleted: entered-in-error, repeated deletion and later snapshots change nothing.
    deletion = {
        "schema": "canvas-integration-task-snapshot/1",
        "instance": "acme-clinic",
        "event": {"name": "DOCUMENT_DELETED", "target": TASK_ID},
        "integration_task": None,
        "deleted": True,
    }
    deleted = await post(client, deletion, 200, "updated")
    assert deleted["status"] == "entered-in-error" and deleted["meta"]["versionId"] == "5"
    await post(client, deletion, 200, "unchanged")
    late = await post(client, at(example(), "2026-08-30T00:00:00Z", status="REV"), 200, "stale")
    assert late["status"] == "entered-in-error"

    events = await changes(database)
    assert [(e["interaction"], e["version_id"]) for e in events] == [
        ("create", "1"),
        ("update", "2"),
        ("update", "3"),
        ("update", "4"),
        ("update", "5"),
    ]
    assert events[-1]["previous"]["status"] == "cancelled"
    assert events[-1]["current"]["status"] == "entered-in-error"
    history = (await client.get(f"/fhir/Task/{TASK_ID}/_history/2")).json()
    assert history["status"] == "completed"
    metrics = (await client.get("/metrics")).text
    for outcome, count in (("created", 1), ("updated", 4), ("unchanged", 2), ("stale", 2)):
        assert f'herald_canvas_snapshots_total{{outcome="{outcome}"}} {count}.0' in metrics


async def test_junked_review_drops_owner_without_moving_status(client: httpx.AsyncClient) -> None:
    await post(client, example(), 201, "created")
    snapshot = example()
    snapshot["reviews"][0].update(junked=True, modified="2026-08-20T15:10:00+00:00")
    task = await post(client, snapshot, 200, "updated")
    assert task["status"] == "in-progress"
    assert "owner" not in task and "input" not in task and "extension" not in task


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        orjson.dumps({**example(), "schema": "other/1"}),
        orjson.dumps(
            {**example(), "integration_task": {**example()["integration_task"], "status": "X"}}
        ),
        orjson.dumps({**example(), "reviews": [{"id": "nope"}]}),
    ],
)
async def test_malformed_snapshots_get_400_and_change_nothing(
    client: httpx.AsyncClient, database: Database, body: bytes
) -> None:
    response = await client.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error" and outcome["issue"][0]["diagnostics"]
    assert (await client.get(f"/fhir/Task/{TASK_ID}")).status_code == 404
    assert await changes(database) == []


async def test_standard_webhooks_signature_is_required_when_a_secret_is_set(
    database: Database,
) -> None:
    body = orjson.dumps(example())
    good = webhook_headers(body)
    async with _client(database, CANVAS_SECRET) as client:
        refused: list[dict[str, str]] = [
            {"Content-Type": "application/json"},
            {k: v for k, v in good.items() if k != "webhook-signature"},
            {**good, "webhook-signature": "v1," + base64.b64encode(b"0" * 32).decode()},
            {**good, "webhook-signature": "v1,not base64!"},
            {**good, "webhook-signature": "garbage"},
            # Signed with another secret, or for another id, or too old / too new (a minute past
            # the 5-minute window, so that the time these requests take cannot bring it back).
            webhook_headers(body, secret="whsec_" + base64.b64encode(b"x" * 32).decode()),
            {**good, "webhook-id": "msg_other"},
            webhook_headers(body, timestamp=time.time() - 360),
            webhook_headers(body, timestamp=time.time() + 360),
        ]
        for headers in refused:
            response = await client.post(URL, content=body, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.json()["issue"][0]["code"] == "security"
        # The signature covers the body: another body under the same headers is refused.
        other = orjson.dumps({**example(), "instance": "elsewhere"})
        assert (await client.post(URL, content=other, headers=good)).status_code == 401
        assert await changes(database) == []

        response = await client.post(URL, content=body, headers=good)
        assert response.status_code == 201, response.text
        # The same delivery again (same webhook-id): recognised, nothing changes.
        replayed = await client.post(URL, content=body, headers=good)
        assert replayed.status_code == 200
        assert replayed.headers["X-Herald-Canvas-Outcome"] == "replayed"
        assert len(await changes(database)) == 1


async def test_concurrent_snapshots_of_one_task_end_in_the_newest(database: Database) -> None:
    snapshots = [
        at(example(), f"2026-08-20T16:{minute:02d}:00Z", status="REA" if minute % 2 else "PRO")
        for minute in range(10)
    ]
    async with _client(database) as client:
        responses = await asyncio.gather(*(client.post(URL, json=s) for s in snapshots + snapshots))
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert sum(r.status_code == 201 for r in responses) == 1
    async with _client(database) as client:
        final = (await client.get(f"/fhir/Task/{TASK_ID}")).json()
    assert final["lastModified"] == "2026-08-20T16:09:00.000000+00:00"
    assert final["status"] == "in-progress"
    events = await changes(database)
    assert [e["version_id"] for e in events] == [str(n) for n in range(1, len(events) + 1)]
    assert events[-1]["current"] == final


async def test_code_systems_are_served(client: httpx.AsyncClient) -> None:
    read = await client.get("/fhir/CodeSystem/canvas-integration-task-status")
    assert read.status_code == 200
    assert read.json()["url"] == f"{BASE}/CodeSystem/canvas-integration-task-status"
    bundle = (await client.get("/fhir/CodeSystem")).json()
    assert bundle["type"] == "searchset" and bundle["total"] == 3
    by_url = (
        await client.get(
            "/fhir/CodeSystem", params={"url": f"{BASE}/CodeSystem/canvas-integration-task-channel"}
        )
    ).json()
    assert [e["resource"]["id"] for e in by_url["entry"]] == ["canvas-integration-task-channel"]
    assert (await client.get("/fhir/CodeSystem/nope")).status_code == 404
    assert (await client.get("/fhir/CodeSystem", params={"foo": "1"})).status_code == 400
    metadata = (await client.get("/fhir/metadata")).json()
    types = {r["type"] for r in metadata["rest"][0]["resource"]}
    assert "CodeSystem" in types


async def test_canvas_tasks_are_ordinary_searchable_tasks(client: httpx.AsyncClient) -> None:
    await post(client, example(), 201, "created")
    other = example()
    other["integration_task"].update(id="11111111-1111-4111-8111-111111111111", status="UNR")
    other["event"]["target"] = other["integration_task"]["id"]
    other["reviews"][0].update(reviewer_id=None, id="22222222-2222-4222-8222-222222222222")
    await post(client, other, 201, "created")

    async def ids(query: dict[str, str]) -> set[str]:
        response = await client.get("/fhir/Task", params=query)
        assert response.status_code == 200, response.text
        return {e["resource"]["id"] for e in response.json().get("entry", [])}

    both = {TASK_ID, other["integration_task"]["id"]}
    assert await ids({"status": "requested,in-progress"}) == both
    assert await ids({"status": "requested"}) == {other["integration_task"]["id"]}
    assert await ids({"owner": f"Practitioner/{STAFF}"}) == {TASK_ID}
    team_system = f"{BASE}/NamingSystem/canvas/acme-clinic/team"
    assert await ids({"owner:identifier": f"{team_system}|{TEAM}"}) == {
        other["integration_task"]["id"]
    }
    channel = f"{BASE}/CodeSystem/canvas-integration-task-channel"
    assert await ids({"code": f"{channel}|fax"}) == both
    assert await ids({"code": f"{channel}|document_upload"}) == set()


async def test_wrong_media_type_and_oversized_bodies(
    client: httpx.AsyncClient, database: Database
) -> None:
    body = orjson.dumps(example())
    xml = await client.post(URL, content=body, headers={"Content-Type": "application/fhir+xml"})
    assert xml.status_code == 415, xml.text
    big = orjson.dumps({**example(), "padding": "x" * (1024 * 1024)})
    oversized = await client.post(URL, content=big, headers={"Content-Type": "application/json"})
    assert oversized.status_code == 413, oversized.text
    assert await changes(database) == []
    # The answer follows Accept like every FHIR answer.
    as_xml = await client.post(
        URL,
        content=body,
        headers={"Content-Type": "application/json", "Accept": "application/fhir+xml"},
    )
    assert as_xml.status_code == 201
    assert as_xml.headers["content-type"].startswith("application/fhir+xml")
    assert b"<Task" in as_xml.content


async def test_the_document_type_code_system_resolves(client: httpx.AsyncClient) -> None:
    created = await post(client, example(), 201, "created")
    systems = {
        coding["system"]
        for item in created.get("input", [])
        for coding in item.get("valueCodeableConcept", {}).get("coding", [])
    }
    (document_type,) = systems
    response = await client.get("/fhir" + document_type.removeprefix(BASE))
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == "CodeSystem"
    assert response.json()["url"] == document_type
    assert (await client.get("/fhir/CodeSystem/canvas/x!y/document-type")).status_code == 404


def _helper_rows() -> list[tuple[str, str]]:
    """(helper, GET path) of every search in docs/canvas.md's queryset helper table."""
    text = (REPO / "docs" / "canvas.md").read_text(encoding="utf-8")
    section = text.split("## Canvas queryset helpers as Task searches", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        helper, search = line.strip("|").split(" | ", 1)
        for path in re.findall(r"`GET ([^`]+)`", search):
            rows.append((helper.strip(), path.replace("\\|", "|")))
    return rows


HELPER_ROWS = _helper_rows()


def test_the_helper_table_is_read() -> None:
    assert len(HELPER_ROWS) >= 15


@pytest.mark.parametrize(("helper", "path"), HELPER_ROWS, ids=[h for h, _ in HELPER_ROWS])
async def test_each_canvas_helper_search_runs_as_written(
    client: httpx.AsyncClient, helper: str, path: str
) -> None:
    await post(client, example(), 201, "created")
    snapshot = example()["integration_task"]
    names = {
        "CH": f"{BASE}/CodeSystem/canvas-integration-task-channel",
        "ST": f"{BASE}/CodeSystem/canvas-integration-task-status",
        "NS": f"{BASE}/NamingSystem/canvas/acme-clinic",
        "<key>": snapshot["patient_id"],
        "<staff key>": STAFF,
        "<team id>": TEAM,
        "<npi>": snapshot["service_provider"]["npi"],
    }
    url = path.removeprefix("/fhir")
    for name, value in names.items():
        url = re.sub(rf"(?<![A-Za-z]){re.escape(name)}(?=[/|&]|$)", value, url)
    response = await client.get("/fhir" + url, headers={"Prefer": "handling=strict"})
    assert response.status_code == 200, f"{helper}: {url}: {response.text}"
    assert response.json()["type"] == "searchset"
    if helper == "`for_patient(key).faxes().pending_review()`":
        assert [e["resource"]["id"] for e in response.json()["entry"]] == [TASK_ID]
