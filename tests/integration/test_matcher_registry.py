"""The matcher's registry on SQLite and PostgreSQL: loaded in pages, kept fresh by revision."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from herald.core.matching import SubscriptionIndex
from herald.core.resources import with_version
from herald.matcher.refresh import refresh
from herald.runtime.packaged import load_topics
from herald.runtime.store import header_secrets
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database
from herald.runtime.store.tables import subscriptions as table
from tests.support.fhir import backport_subscription
from tests.support.matching import HREX, change

NOW = "2026-01-01T00:00:00.000Z"


def stored(sub_id: str, *filters: str, version: int = 1, **channel: Any) -> dict[str, Any]:
    resource = backport_subscription("https://example.org/hook", *filters, **channel)
    return with_version(resource, sub_id, version, NOW)


def task(owner: str) -> dict[str, Any]:
    return {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order"} | {
        "owner": {"reference": owner}
    }


def matched(index: SubscriptionIndex, owner: str) -> list[str]:
    return index.match(change(task(owner)))


async def insert(database: Database, *resources: dict[str, Any], status: str = "active") -> None:
    async with database.transaction() as connection:
        for resource in resources:
            await registry.insert_new(connection, resource, status=status, topic=HREX)


@pytest.fixture
def sealed_headers() -> Iterator[None]:
    header_secrets.configure("A" * 43 + "=")
    yield
    header_secrets.configure(None)


async def test_the_registry_loads_in_pages_and_follows_changes(database: Database) -> None:
    await insert(database, *(stored(f"s{n}", f"owner=Organization/{n % 3}") for n in range(8)))
    await insert(database, stored("all"), stored("done", "Task?status=completed"))
    await insert(database, stored("late", "owner=Organization/0"), status="off")
    index = SubscriptionIndex(load_topics())
    assert await refresh(index, database, page=3) == 11
    async with database.read() as connection:
        assert index.revision == await registry.revision(connection)
    assert len(index) == 10
    assert matched(index, "Organization/0") == ["all", "s0", "s3", "s6"]

    async with database.transaction() as connection:
        await registry.replace(
            connection, stored("s0", "owner=Organization/9", version=2), status="active", topic=HREX
        )
        await registry.set_status(connection, "s3", "off")
        await registry.mark_deleted(connection, "s6")
        await registry.set_status(connection, "late", "requested")
    await insert(database, stored("new", "Task.owner=Organization/0"))
    assert await refresh(index, database, page=2) == 5
    assert matched(index, "Organization/0") == ["all", "late", "new"]
    assert matched(index, "Organization/9") == ["all", "s0"]
    assert await refresh(index, database, page=2) == 0


async def test_rows_sharing_a_revision_across_a_page_boundary_all_load(database: Database) -> None:
    await insert(database, *(stored(f"s{n}", "owner=Organization/1") for n in range(5)))
    async with database.transaction() as connection:
        await connection.execute(sa.update(table).values(revision=7))
    index = SubscriptionIndex(load_topics())
    await refresh(index, database, page=2)
    assert matched(index, "Organization/1") == [f"s{n}" for n in range(5)]


async def test_a_stored_subscription_no_longer_valid_is_not_matched(database: Database) -> None:
    unknown = stored("gone", "Task?owner=Organization/1")
    unknown["_criteria"]["extension"][0]["valueString"] = "Task?no-such-parameter=1"
    await insert(database, stored("kept", "owner=Organization/1"))
    async with database.transaction() as connection:
        await connection.execute(
            sa.insert(table).values(
                id="gone",
                status="active",
                topic=HREX,
                content=orjson.dumps(unknown).decode(),
                version_id=1,
                last_updated=NOW,
                revision=await registry.next_revision(connection),
                events_count=0,
                delivered_through=0,
                deleted=False,
            )
        )
    index = SubscriptionIndex(load_topics())
    assert await refresh(index, database) == 2
    assert matched(index, "Organization/1") == ["kept"]


@pytest.mark.usefixtures("sealed_headers")
async def test_sealed_headers_need_no_key_in_the_matcher(database: Database) -> None:
    await insert(database, stored("s1", "owner=Organization/1", headers=["Authorization: x"]))
    header_secrets.configure(None)
    index = SubscriptionIndex(load_topics())
    await refresh(index, database)
    assert matched(index, "Organization/1") == ["s1"]


async def test_the_0010_migration_fills_the_filters_and_rows_without_them_still_load(
    database_url: str,
) -> None:
    database = Database(database_url)
    names = [c.name for c in table.c if c.name not in ("filters", "owner")]
    before = sa.table("subscriptions", *(sa.column(name) for name in names))
    foreign = stored("foreign", "owner=Organization/1")
    foreign["_criteria"]["extension"][0]["url"] = "http://example.org/other-extension"
    try:
        await database.migrate("0009")
        async with database.transaction() as connection:
            for revision, resource in enumerate(
                [stored("s1", "owner=Organization/1"), stored("all"), foreign], start=1
            ):
                await connection.execute(
                    before.insert().values(
                        id=resource["id"],
                        status="active",
                        topic=HREX,
                        content=orjson.dumps(resource).decode(),
                        version_id=1,
                        last_updated=NOW,
                        revision=revision,
                        events_count=0,
                        delivered_through=0,
                        deleted=False,
                    )
                )
        await database.migrate()
        async with database.read() as connection:
            rows = await connection.execute(sa.select(table.c.id, table.c.filters))
            assert {row.id: row.filters for row in rows} == {
                "s1": '["owner=Organization/1"]',
                "all": "[]",
                "foreign": None,  # refused when loaded, with the reason from the resource
            }
        index = SubscriptionIndex(load_topics())
        assert await refresh(index, database) == 3
        assert matched(index, "Organization/1") == ["all", "s1"]

        # A row without filters is read from its resource.
        async with database.transaction() as connection:
            await connection.execute(
                sa.update(table).where(table.c.id == "s1").values(filters=None, revision=9)
            )
        index = SubscriptionIndex(load_topics())
        await refresh(index, database)
        assert matched(index, "Organization/1") == ["all", "s1"]
    finally:
        await database.aclose()
