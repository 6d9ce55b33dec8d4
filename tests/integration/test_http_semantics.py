"""HTTP semantics FHIR clients rely on, through the FHIR app on SQLite and PostgreSQL:
Last-Modified, conditional read/create/update/delete, Prefer, JSON Patch, history, 405."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from herald.ingest.app import create_app
from herald.ingest.context import IngestContext
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.settings import Settings
from herald.runtime.store.database import Database

BASE = "http://herald.test/fhir"


async def _ready() -> dict[str, bool]:
    return {"database": True}


@pytest.fixture
async def client(database: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url="sqlite://", base_url=BASE, allow_http_endpoints=True)
    ctx = IngestContext(settings, database, load_topics(), Metrics())
    transport = httpx.ASGITransport(app=create_app(ctx, _ready))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
        yield http


def task(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", **extra}


def empty_containers(value: Any, path: str = "$") -> list[str]:
    """Where a JSON value has an empty array or object (FHIR JSON never has them)."""
    found = []
    if isinstance(value, dict | list) and not value:
        found.append(path)
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found += empty_containers(item, f"{path}.{key}")
    return found


async def test_versioned_answers_carry_last_modified(client: httpx.AsyncClient) -> None:
    created = await client.put("/fhir/Task/a", json=task(id="a"))
    assert created.status_code == 201
    for response in (
        created,
        await client.get("/fhir/Task/a"),
        await client.get("/fhir/Task/a/_history/1"),
    ):
        stamp = parsedate_to_datetime(response.headers["Last-Modified"])
        assert stamp.isoformat()[:19] == response.json()["meta"]["lastUpdated"][:19]


async def test_conditional_read_answers_304(client: httpx.AsyncClient) -> None:
    first = await client.put("/fhir/Task/a", json=task(id="a"))
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    same = await client.get("/fhir/Task/a", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b"" and same.headers["ETag"] == etag
    for tag in ('"1"', "1"):  # fhirpy's refresh() sends the bare version id
        assert (await client.get("/fhir/Task/a", headers={"If-None-Match": tag})).status_code == 304
    assert (
        await client.get("/fhir/Task/a", headers={"If-Modified-Since": modified})
    ).status_code == 304
    await client.put("/fhir/Task/a", json=task(id="a", description="changed"))
    changed = await client.get("/fhir/Task/a", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["meta"]["versionId"] == "2"
    old = "Thu, 01 Jan 2015 00:00:00 GMT"
    assert (await client.get("/fhir/Task/a", headers={"If-Modified-Since": old})).status_code == 200


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    minimal = await client.put(
        "/fhir/Task/a", json=task(id="a"), headers={"Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["ETag"] == 'W/"1"' and minimal.headers["Location"].endswith(
        "/Task/a/_history/1"
    )
    assert (await client.get("/fhir/Task/a")).json()["meta"]["versionId"] == "1"
    outcome = await client.post(
        "/fhir/Task", json=task(), headers={"Prefer": "return=OperationOutcome"}
    )
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    assert outcome.json()["issue"][0]["severity"] == "information"
    stored = outcome.headers["Location"].split("/Task/")[1].split("/")[0]
    assert (await client.get(f"/fhir/Task/{stored}")).status_code == 200
    full = await client.post("/fhir/Task", json=task(), headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Task"
    assert (await client.get(f"/fhir/Task/{full.json()['id']}")).json() == full.json()


async def test_conditional_create_makes_no_duplicate(client: httpx.AsyncClient) -> None:
    body = task(identifier=[{"system": "http://ids.example", "value": "x1"}])
    condition = {"If-None-Exist": "identifier=http://ids.example|x1"}
    answers = await asyncio.gather(
        *(client.post("/fhir/Task", json=body, headers=condition) for _ in range(4))
    )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    found = (await client.get("/fhir/Task?identifier=x1")).json()
    assert found["total"] == 1
    bad = await client.post("/fhir/Task", json=body, headers={"If-None-Exist": "colour=red"})
    assert bad.status_code == 400
    # The criteria in the URL (fhirpy's get_or_create) work as If-None-Exist does.
    again = await client.post("/fhir/Task?identifier=http://ids.example|x1", json=body)
    assert again.status_code == 200 and again.json()["id"] == answers[0].json()["id"]


async def test_conditional_update_and_delete(client: httpx.AsyncClient) -> None:
    body = task(identifier=[{"value": "c1"}])
    created = await client.put("/fhir/Task?identifier=c1", json=body)
    assert created.status_code == 201
    tid = created.json()["id"]
    updated = await client.put("/fhir/Task?identifier=c1", json={**body, "description": "2"})
    assert updated.status_code == 200 and updated.json()["id"] == tid
    assert updated.json()["meta"]["versionId"] == "2"
    await client.post("/fhir/Task", json=body)
    assert (await client.put("/fhir/Task?identifier=c1", json=body)).status_code == 412
    assert (await client.delete("/fhir/Task?identifier=c1")).status_code == 412
    # The refused update and delete changed neither of the two matches.
    matches = (await client.get("/fhir/Task?identifier=c1")).json()
    assert matches["total"] == 2
    assert (await client.get(f"/fhir/Task/{tid}")).json()["meta"]["versionId"] == "2"
    assert (await client.delete(f"/fhir/Task?_id={tid}")).status_code == 204
    assert (await client.get(f"/fhir/Task/{tid}")).status_code == 410
    assert (await client.delete("/fhir/Task?identifier=nothing")).status_code == 204
    assert (await client.delete("/fhir/Task")).status_code == 400


async def test_json_patch(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Task/a", json=task(id="a"))
    patch = [{"op": "replace", "path": "/status", "value": "completed"}]
    headers = {"Content-Type": "application/json-patch+json"}
    patched = await client.patch("/fhir/Task/a", json=patch, headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "completed" and patched.json()["meta"]["versionId"] == "2"
    stale = await client.patch("/fhir/Task/a", json=patch, headers={**headers, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    broken = await client.patch(
        "/fhir/Task/a", json=[{"op": "remove", "path": "/nope"}], headers=headers
    )
    assert broken.status_code == 400
    invalid = await client.patch(
        "/fhir/Task/a", json=[{"op": "replace", "path": "/status", "value": "x"}], headers=headers
    )
    assert invalid.status_code == 400
    text = {"Content-Type": "text/plain"}
    assert (await client.patch("/fhir/Task/a", content=b"[]", headers=text)).status_code == 415
    # A JSON Merge Patch (an object), as fhirpy sends with application/json.
    merged = await client.patch("/fhir/Task/a", json={"description": "d", "status": "ready"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["description"] == "d" and merged.json()["status"] == "ready"
    removed = await client.patch("/fhir/Task/a", json={"description": None})
    assert "description" not in removed.json()


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        (
            "application/json-patch+json",
            b'[{"op":"replace","path":"/status","path":"/description","value":"x"}]',
            "holds the key 'path' more than once",
        ),
        ("application/json", b'{"status":"ready","status":"completed"}', "more than once"),
        ("application/json", b'{"note":' * 60 + b"1" + b"}" * 60, "deeper than"),
    ],
    ids=["key twice in a JSON Patch", "key twice in a merge patch", "too deep"],
)
async def test_a_hostile_patch_body_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, content_type: str, body: bytes, says: str
) -> None:
    await client.put("/fhir/Task/a", json=task(id="a"))
    refused = await client.patch(
        "/fhir/Task/a", content=body, headers={"Content-Type": content_type}
    )
    assert refused.status_code == 400
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert says in refused.text
    assert (await client.get("/fhir/Task/a")).json()["meta"]["versionId"] == "1"


async def test_history_of_a_task_and_of_all_tasks(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Task/a", json=task(id="a"))
    await client.put("/fhir/Task/a", json=task(id="a", description="2"))
    await client.post("/fhir/Task", json=task())
    await client.delete("/fhir/Task/a")
    instance = (await client.get("/fhir/Task/a/_history")).json()
    assert instance["type"] == "history"
    requests = [(e["request"]["method"], e["response"]["status"]) for e in instance["entry"]]
    assert requests == [("DELETE", "204"), ("PUT", "200"), ("PUT", "201")]
    assert "resource" not in instance["entry"][0]
    assert [e["resource"]["meta"]["versionId"] for e in instance["entry"][1:]] == ["2", "1"]
    pages, url = [], "/fhir/Task/_history?_count=2"
    while url:
        page = (await client.get(url)).json()
        pages.append(page)
        url = next((x["url"] for x in page["link"] if x["relation"] == "next"), "")
        url = url.removeprefix(BASE).join(("/fhir", "")) if url else ""
    entries = [e for page in pages for e in page["entry"]]
    assert len(pages) == 2 and len(entries) == 4
    assert [e["request"]["method"] for e in entries].count("POST") == 1
    newest = entries[0]["response"]["lastModified"]
    since = (await client.get("/fhir/Task/_history", params={"_since": newest})).json()
    assert [e["request"]["method"] for e in since["entry"]] == ["DELETE"]
    assert (await client.get("/fhir/Task/nope/_history")).status_code == 404
    assert (await client.get("/fhir/Task/_history?_since=soon")).status_code == 400


async def test_history_of_a_subscription(client: httpx.AsyncClient) -> None:
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "history",
        "criteria": "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task",
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://127.0.0.1:9/notify",
            "payload": "application/fhir+json",
        },
    }
    created = (await client.post("/fhir/Subscription", json=body)).json()
    sid = created["id"]
    off = await client.put(f"/fhir/Subscription/{sid}", json={**created, "status": "off"})
    assert off.status_code == 200, off.text
    assert (await client.delete(f"/fhir/Subscription/{sid}")).status_code == 204
    entries = (await client.get(f"/fhir/Subscription/{sid}/_history")).json()["entry"]
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "POST"]
    assert [e["resource"]["status"] for e in entries[1:]] == ["off", "requested"]
    everything = (await client.get("/fhir/Subscription/_history")).json()
    assert len(everything["entry"]) == 3
    assert (await client.get("/fhir/Subscription/nope/_history")).status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/fhir/Subscription/x/_history/1"),
        ("POST", "/fhir"),
        ("POST", "/fhir/"),
        ("HEAD", "/fhir/Task/a"),
        ("PATCH", "/fhir/Subscription/x"),
        ("GET", "/fhir/_history"),
    ],
)
async def test_interactions_herald_does_not_offer_answer_405(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405, response.text
    if method != "HEAD":
        assert response.json()["issue"][0]["code"] == "not-supported"


async def test_an_unknown_resource_type_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/Patient/1")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_no_empty_arrays_or_objects(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Task/a", json=task(id="a"))
    for path in (
        "/fhir/Task?owner=Organization/none",
        "/fhir/Task?_id=a",
        "/fhir/Task/a/_history",
        "/fhir/Task/_history?_since=2999-01-01",
        "/fhir/Subscription?status=active",
        "/fhir/Basic?code=http://x|y",
        "/fhir/CodeSystem?name=nothing",
        "/fhir/metadata",
        "/fhir/Task/a",
    ):
        response = await client.get(path)
        assert response.status_code == 200, response.text
        assert empty_containers(response.json()) == [], path
