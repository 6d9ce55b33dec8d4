"""Prepared statements: the same rows, counts and errors whether sqlite3 or SQLAlchemy runs them."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from herald.runtime.store import direct
from herald.runtime.store.database import Database
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import outbox, resources

INSERT = Prepared(insert(resources))
BY_ID = Prepared(
    select(resources.c.id, resources.c.version_id, resources.c.deleted)
    .where(resources.c.resource_type == "Task", resources.c.id == bindparam("id"))
    .order_by(resources.c.id)
)
ADD = Prepared(insert(outbox))


def _row(resource_id: str, version: int = 1) -> dict[str, object]:
    return {
        "resource_type": "Task",
        "id": resource_id,
        "version_id": version,
        "last_updated": "2026-01-01T00:00:00.000Z",
        "deleted": False,
        "content": "{}",
    }


async def test_writes_and_reads_agree_inside_and_outside_write_transactions(
    database: Database,
) -> None:
    before = database.statements
    module = database._sqlite_module
    direct_before = 0 if module is None else module.direct_statements
    async with database.transaction() as connection:
        await direct.run(connection, INSERT, _row("a"))
        await direct.run_many(
            connection, ADD, [{"topic": "t", "key": k, "payload": b"\x00\xff"} for k in "xy"]
        )
        inside = await direct.rows(connection, BY_ID, {"id": "a"})
        assert await direct.scalar(connection, BY_ID, {"id": "missing"}) is None
    async with database.read() as connection:
        outside = await direct.rows(connection, BY_ID, {"id": "a"})
        payloads = (await connection.execute(select(outbox.c.payload))).scalars().all()
    assert [tuple(r) for r in inside] == [("a", 1, False)] == [tuple(r) for r in outside]
    assert [bytes(p) for p in payloads] == [b"\x00\xff", b"\x00\xff"]
    # Every statement is counted, whichever way it ran (the last read and the select above too).
    assert database.statements - before == 6
    if module is not None:  # SQLite: the four in the write transaction bypassed SQLAlchemy
        assert module.direct_statements - direct_before == 4


async def test_constraint_violations_raise_sqlalchemy_errors_and_roll_back(
    database: Database,
) -> None:
    async with database.transaction() as connection:
        await direct.run(connection, INSERT, _row("a"))
    with pytest.raises(IntegrityError):
        async with database.transaction() as connection:
            await direct.run(connection, INSERT, _row("b"))
            await direct.run(connection, INSERT, _row("a", 2))
    async with database.read() as connection:
        assert await direct.scalar(connection, BY_ID, {"id": "b"}) is None
