"""The search index: the rows each resource version contributes, kept current on every write."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, Table, bindparam, delete, false, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.search import DATABASE_SEARCHED, PARAMETERS, IndexEntries, IndexPlan, index_entries
from herald.core.types import JsonObject
from herald.runtime.store import direct
from herald.runtime.store.direct import Prepared
from herald.runtime.store.tables import resources, search_dates, search_references, search_tokens

# The table of each parameter type (a uri is a token row without a system).
TABLES: dict[str, Table] = {
    "token": search_tokens,
    "uri": search_tokens,
    "reference": search_references,
    "date": search_dates,
}


_PLANS = {t: IndexPlan(PARAMETERS[t].values()) for t in DATABASE_SEARCHED}


def index_rows(resource: JsonObject) -> dict[Table, list[dict[str, Any]]]:
    """The index rows of one resource version, per table."""
    resource_type, resource_id = resource["resourceType"], resource["id"]
    entries: IndexEntries = index_entries(resource, _PLANS[resource_type])
    key = {"resource_type": resource_type, "resource_id": resource_id}
    return {
        search_tokens: [
            {**key, "param": e.param, "system": e.system, "code": e.code} for e in entries.tokens
        ],
        search_references: [
            {
                **key,
                "param": e.param,
                "literal": e.literal,
                "ref_type": e.type,
                "ref_id": e.id,
                "base": e.base,
            }
            for e in entries.references
        ],
        search_dates: [
            {**key, "param": e.param, "low": e.low, "high": e.high} for e in entries.dates
        ],
    }


_ALL_TABLES = (search_tokens, search_references, search_dates)
# Built once (see store/direct.py).
_UNINDEX = [
    Prepared(
        delete(table).where(
            table.c.resource_type == bindparam("type"), table.c.resource_id == bindparam("id")
        )
    )
    for table in _ALL_TABLES
]
_INSERT = {table: Prepared(insert(table)) for table in _ALL_TABLES}


# On PostgreSQL a write replaces the index rows inside its one statement (store/resources.py):
# the old rows deleted, the new ones inserted from one array per column.
UNINDEX_SQL = [
    f"DELETE FROM {table.name} WHERE resource_type = :type AND resource_id = :id"
    for table in _ALL_TABLES
]
_ARRAY_COLUMNS = {
    search_tokens: ("param", "system", "code"),
    search_references: ("param", "literal", "ref_type", "ref_id", "base"),
    search_dates: ("param", "low", "high"),
}
INDEX_SQL = [
    f"INSERT INTO {table.name} (resource_type, resource_id, {', '.join(columns)})"
    " SELECT :type, :id, * FROM unnest("
    + ", ".join(f"CAST(:{table.name}_{c} AS TEXT[])" for c in columns)
    + ")"
    for table, columns in _ARRAY_COLUMNS.items()
]


def index_arrays(resource: JsonObject) -> dict[str, list[str | None]]:
    """The parameters of INDEX_SQL for one resource version: each table's column values."""
    entries = index_entries(resource, _PLANS[resource["resourceType"]])
    return {
        "search_tokens_param": [e.param for e in entries.tokens],
        "search_tokens_system": [e.system for e in entries.tokens],
        "search_tokens_code": [e.code for e in entries.tokens],
        "search_references_param": [e.param for e in entries.references],
        "search_references_literal": [e.literal for e in entries.references],
        "search_references_ref_type": [e.type for e in entries.references],
        "search_references_ref_id": [e.id for e in entries.references],
        "search_references_base": [e.base for e in entries.references],
        "search_dates_param": [e.param for e in entries.dates],
        "search_dates_low": [e.low for e in entries.dates],
        "search_dates_high": [e.high for e in entries.dates],
    }


# On SQLite a write runs its statements on sqlite3 itself (store/resources.py): the rows as
# tuples straight from the entries (named tuples, fields in column order).
_SQLITE_INSERT = {
    table: f"INSERT INTO {table.name} (resource_type, resource_id, {', '.join(columns)})"
    f" VALUES (?, ?{', ?' * len(columns)})"
    for table, columns in _ARRAY_COLUMNS.items()
}
SQLITE_UNINDEX = [
    f"DELETE FROM {table.name} WHERE resource_type = ? AND resource_id = ?" for table in _ALL_TABLES
]
"""The statements that remove a resource's index rows, for its (type, id) (SQLite)."""


def index_batch(resource: JsonObject) -> list[tuple[str, list[tuple[str | None, ...]]]]:
    """The inserts of a resource version's index rows, as store/direct.run_batch takes them
    (SQLite); none for a type that is not searched in the database."""
    resource_type = resource["resourceType"]
    if resource_type not in DATABASE_SEARCHED:
        return []
    entries = index_entries(resource, _PLANS[resource_type])
    key = (resource_type, resource["id"])
    return [
        (_SQLITE_INSERT[table], [key + entry for entry in found])
        for table, found in (
            (search_tokens, entries.tokens),
            (search_references, entries.references),
            (search_dates, entries.dates),
        )
        if found
    ]


async def unindex(connection: AsyncConnection, resource_type: str, resource_id: str) -> None:
    """Remove a resource's index rows."""
    if resource_type not in DATABASE_SEARCHED:
        return
    for statement in _UNINDEX:
        await direct.run(connection, statement, {"type": resource_type, "id": resource_id})


async def reindex(connection: AsyncConnection, resource: JsonObject, *, fresh: bool) -> None:
    """Replace a resource's index rows with those of this (new current) version.

    `fresh`: the resource has no index rows yet (new, or deleted before), so none to remove.
    """
    if resource["resourceType"] not in DATABASE_SEARCHED:
        return
    if not fresh:
        await unindex(connection, resource["resourceType"], resource["id"])
    for table, rows in index_rows(resource).items():
        if rows:
            await direct.run_many(connection, _INSERT[table], rows)


def backfill(connection: Connection, batch: int = 500) -> int:
    """Rebuild the index of every live resource of a searched type (migrations); return how many.

    Existing rows are removed first, so that a migration that adds parameters re-indexes with
    today's extraction code.
    """
    for table in _ALL_TABLES:
        connection.execute(delete(table))
    done = 0
    for resource_type in sorted(DATABASE_SEARCHED):
        after = ""
        while True:
            rows = connection.execute(
                select(resources.c.id, resources.c.content)
                .where(
                    resources.c.resource_type == resource_type,
                    resources.c.deleted == false(),
                    resources.c.id > after,
                )
                .order_by(resources.c.id)
                .limit(batch)
            ).all()
            if not rows:
                break
            pending: dict[Table, list[dict[str, Any]]] = {table: [] for table in _ALL_TABLES}
            for row in rows:
                for table, table_rows in index_rows(orjson.loads(row.content)).items():
                    pending[table].extend(table_rows)
            for table, table_rows in pending.items():
                if table_rows:
                    connection.execute(insert(table), table_rows)
            done += len(rows)
            after = rows[-1].id
    return done
