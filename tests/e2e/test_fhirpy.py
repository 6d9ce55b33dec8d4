"""A client session with fhirpy (sync and async) against `herald run`: what a real FHIR client
library does — create, read, refresh (conditional read), update, merge patch, search with paging,
count, elements, sort, get_or_create (conditional create), conditional update and delete — so
the next incompatibility with a client shows up here."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fhirpy import AsyncFHIRClient, SyncFHIRClient

from tests.e2e.conftest import StartHerald

pytestmark = pytest.mark.e2e


@pytest.fixture
def base_url(start_herald: StartHerald) -> str:
    client: httpx.Client = start_herald()
    return str(client.base_url).rstrip("/")


def _task(owner: str, **extra: Any) -> dict[str, Any]:
    return {"status": "requested", "intent": "order", "owner": {"reference": owner}, **extra}


def test_a_sync_fhirpy_session(base_url: str) -> None:
    client = SyncFHIRClient(base_url)
    owner = f"Organization/{uuid.uuid4().hex[:8]}"
    task = client.resource("Task", **_task(owner))
    task.save()
    assert task.id and task["meta"]["versionId"] == "1"
    read = client.reference("Task", task.id).to_resource()
    assert read["owner"]["reference"] == owner
    read.refresh()  # If-None-Match with the bare version id: 304, kept as is
    assert read["meta"]["versionId"] == "1"
    read["status"] = "in-progress"
    read.save()
    assert read["meta"]["versionId"] == "2"
    read.patch(description="merged")
    assert read["description"] == "merged" and read["meta"]["versionId"] == "3"

    for number in range(4):
        client.resource("Task", **_task(owner, description=f"n{number}")).save()
    tasks = client.resources("Task").search(owner=owner)
    assert tasks.count() == 5  # fhirpy adds _totalMethod=count: ignored, as R4 allows
    assert len(tasks.limit(2).fetch_all()) == 5  # follows the next links
    newest = tasks.sort("-_lastUpdated").first()
    assert newest is not None and newest["description"] == "n3"
    slim = tasks.elements("status").limit(1).fetch()[0]
    assert "owner" not in slim and "status" in slim

    identifier = {"system": "http://ids.example", "value": uuid.uuid4().hex}
    searched = client.resources("Task").search(
        identifier=f"{identifier['system']}|{identifier['value']}"
    )
    made, created = searched.get_or_create(
        client.resource("Task", **_task(owner, identifier=[identifier]))
    )
    again, created_again = searched.get_or_create(
        client.resource("Task", **_task(owner, identifier=[identifier]))
    )
    assert created and not created_again and again.id == made.id
    updated, created = searched.update(
        client.resource("Task", **_task(owner, identifier=[identifier], status="completed"))
    )
    assert not created and updated.id == made.id and updated["status"] == "completed"
    searched.delete()
    assert searched.count() == 0
    task.delete()  # type: ignore[no-untyped-call]
    assert client.resources("Task").search(_id=task.id).count() == 0


async def test_an_async_fhirpy_session(base_url: str) -> None:
    client = AsyncFHIRClient(base_url)
    owner = f"Organization/{uuid.uuid4().hex[:8]}"
    task = client.resource("Task", **_task(owner))
    await task.save()
    fetched = await client.reference("Task", task.id).to_resource()
    await fetched.refresh()
    await fetched.patch(status="completed")
    assert fetched["status"] == "completed" and fetched["meta"]["versionId"] == "2"
    for number in range(3):
        await client.resource("Task", **_task(owner, description=f"n{number}")).save()
    tasks = client.resources("Task").search(owner=owner)
    assert await tasks.count() == 4
    assert len(await tasks.limit(2).fetch_all()) == 4
    completed = await tasks.search(status="completed").fetch()
    assert [t.id for t in completed] == [task.id]
    subscriptions = await client.resources("Subscription").search(status="active").fetch()
    assert subscriptions == []
    await task.delete()  # type: ignore[no-untyped-call]
    assert await client.resources("Task").search(_id=task.id).count() == 0
