"""Resource search in the database: index rows per resource, SQL from parsed `Criteria`.

Each write of a resource replaces its rows in `search_tokens`, `search_references` and
`search_dates` (herald.core.search.index_entries, the same element extraction the in-memory
matcher uses); a delete removes them. A search turns every `Condition` into
`id IN (SELECT resource_id ...)` (NOT IN for `:not` and `:missing=true`) over those rows, built
from herald.core.search.search_values, so it means what `Criteria.matches` means; only the
page asked for is loaded.

Paging is keyset paging on (last_updated, id): a next link carries the sort key of the last
entry, so writes between two pages neither shift nor repeat entries. A resource changed during
the paging moves to its new last_updated: in ascending order (the default) it appears again, as
its new version, later in the paging; in descending order its new version is before the cursor.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    delete,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.errors import SearchParameterError
from herald.core.search import (
    PARAMETERS,
    Condition,
    Criteria,
    DateValue,
    IndexEntries,
    ReferenceValue,
    SearchParameter,
    Token,
    index_entries,
    search_values,
)
from herald.core.types import JsonObject
from herald.runtime.store.tables import resources, search_dates, search_references, search_tokens

# The parameters indexed (and so searchable) per resource type.
INDEXED: dict[str, tuple[str, ...]] = {
    "Task": ("_id", "_lastUpdated", "code", "intent", "owner", "requester", "status"),
}

_TABLES = {"token": search_tokens, "reference": search_references, "date": search_dates}


def indexed_parameters(resource_type: str) -> tuple[SearchParameter, ...]:
    """The SearchParameters indexed for a resource type (none for unindexed types)."""
    known = PARAMETERS.get(resource_type, {})
    return tuple(known[name] for name in INDEXED.get(resource_type, ()))


def index_rows(resource: JsonObject) -> dict[Table, list[dict[str, Any]]]:
    """The index rows of one resource version, per table."""
    resource_type, resource_id = resource["resourceType"], resource["id"]
    entries: IndexEntries = index_entries(resource, indexed_parameters(resource_type))
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


async def unindex(connection: AsyncConnection, resource_type: str, resource_id: str) -> None:
    """Remove a resource's index rows."""
    if resource_type not in INDEXED:
        return
    for table in _TABLES.values():
        await connection.execute(
            delete(table).where(
                table.c.resource_type == resource_type, table.c.resource_id == resource_id
            )
        )


async def reindex(connection: AsyncConnection, resource: JsonObject, *, fresh: bool) -> None:
    """Replace a resource's index rows with those of this (new current) version.

    `fresh`: the resource has no index rows yet (new, or deleted before), so none to remove.
    """
    if resource["resourceType"] not in INDEXED:
        return
    if not fresh:
        await unindex(connection, resource["resourceType"], resource["id"])
    for table, rows in index_rows(resource).items():
        if rows:
            await connection.execute(insert(table), rows)


def backfill(connection: Connection, batch: int = 500) -> int:
    """Index every live resource of an indexed type (the 0002 migration); return how many."""
    done = 0
    for resource_type in INDEXED:
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
            pending: dict[Table, list[dict[str, Any]]] = {table: [] for table in _TABLES.values()}
            for row in rows:
                for table, table_rows in index_rows(orjson.loads(row.content)).items():
                    pending[table].extend(table_rows)
            for table, table_rows in pending.items():
                if table_rows:
                    connection.execute(insert(table), table_rows)
            done += len(rows)
            after = rows[-1].id
    return done


# --- SQL from criteria ------------------------------------------------------------------------


def _exists(
    table: Table, resource_type: str, param: str, clause: ColumnElement[bool]
) -> ColumnElement[bool]:
    """Whether the resource has an index row of `param` satisfying `clause`.

    Written as `id IN (SELECT resource_id ...)` rather than a correlated EXISTS: both engines
    then read the matching index rows once (SQLite cannot turn EXISTS into a semi-join).
    """
    return resources.c.id.in_(
        select(table.c.resource_id).where(
            table.c.resource_type == resource_type, table.c.param == param, clause
        )
    )


def _tenant_clause(resource_type: str, organizations: frozenset[str]) -> ColumnElement[bool]:
    """Owner or requester is one of the organizations (relative references, or under our base;
    absolute references elsewhere are another server's organizations)."""
    ids = [o.removeprefix("Organization/") for o in organizations]
    table = search_references
    return resources.c.id.in_(
        select(table.c.resource_id).where(
            table.c.resource_type == resource_type,
            table.c.param.in_(("owner", "requester")),
            table.c.ref_type == "Organization",
            table.c.ref_id.in_(ids),
            table.c.base.is_(None),
        )
    )


def _token(token: Token) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if token.code is not None:
        parts.append(search_tokens.c.code == token.code)
    if token.system == "":
        parts.append(or_(search_tokens.c.system.is_(None), search_tokens.c.system == ""))
    elif token.system is not None:
        parts.append(search_tokens.c.system == token.system)
    return and_(*parts)


def _reference(value: ReferenceValue) -> ColumnElement[bool]:
    table = search_references
    literal = table.c.literal == value.literal
    if value.id is None:
        return literal
    parts = [table.c.ref_id == value.id]
    if value.type is not None:
        parts.append(table.c.ref_type == value.type)
    if value.base is not None:
        parts.append(or_(table.c.base.is_(None), table.c.base == value.base))
    return or_(and_(*parts), and_(table.c.ref_id.is_(None), literal))


def _date(value: DateValue, now: datetime) -> ColumnElement[bool]:
    low, high = search_dates.c.low, search_dates.c.high
    present = and_(low.is_not(None), high.is_not(None))

    def eq() -> ColumnElement[bool]:
        return and_(low >= value.low, high <= value.high)

    def gt() -> ColumnElement[bool]:
        return high > value.high

    def lt() -> ColumnElement[bool]:
        return low < value.low

    prefix = value.prefix
    if prefix == "eq":
        clause = eq()
    elif prefix == "ne":
        clause = not_(eq())
    elif prefix == "gt":
        clause = gt()
    elif prefix == "lt":
        clause = lt()
    elif prefix == "ge":
        clause = or_(gt(), eq())
    elif prefix == "le":
        clause = or_(lt(), eq())
    elif prefix == "sa":
        clause = low >= value.high
    elif prefix == "eb":
        clause = high <= value.low
    else:  # ap
        wide_low, wide_high = value.approximate(now)
        clause = and_(low < wide_high, high > wide_low)
    return and_(present, clause)


def condition_clause(
    condition: Condition, now: datetime, resource_type: str = "Task"
) -> ColumnElement[bool]:
    """The SQL meaning of one condition on a `resources` row of that type."""
    values = search_values(condition)
    kind, param = values.kind, values.param
    if kind == "missing":
        found = _exists(_TABLES[values.table], resource_type, param, true())
        return not_(found) if values.negated else found
    if kind == "token":
        clause = or_(*(_token(t) for t in values.tokens))
        found = _exists(search_tokens, resource_type, param, clause)
    elif kind == "reference":
        clause = or_(*(_reference(r) for r in values.references))
        found = _exists(search_references, resource_type, param, clause)
    else:
        clause = or_(*(_date(d, now) for d in values.dates))
        found = _exists(search_dates, resource_type, param, clause)
    return not_(found) if values.negated else found


def criteria_clause(criteria: Criteria, now: datetime) -> ColumnElement[bool]:
    """Live resources of the criteria's type that satisfy every condition."""
    indexed = INDEXED.get(criteria.resource_type, ())
    for condition in criteria.conditions:
        if condition.parameter.name not in indexed:
            raise SearchParameterError(
                f"Search parameter '{condition.parameter.name}' is not supported when searching "
                f"{criteria.resource_type}; supported: {', '.join(indexed)}"
            )
    return and_(
        resources.c.resource_type == criteria.resource_type,
        resources.c.deleted == false(),
        *(
            condition_clause(condition, now, criteria.resource_type)
            for condition in criteria.conditions
        ),
    )


# --- paging -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after this (last_updated, id) in the sort order."""

    last_updated: str
    id: str

    def encode(self) -> str:
        """Opaque text for a next link."""
        raw = orjson.dumps([self.last_updated, self.id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Read a next link's cursor; SearchParameterError if it is not one."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            last_updated, resource_id = orjson.loads(raw)
            if not isinstance(last_updated, str) or not isinstance(resource_id, str):
                raise ValueError("not two strings")
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise SearchParameterError(f"Malformed paging cursor {text!r}") from None
        return cls(last_updated, resource_id)


@dataclass(frozen=True)
class SearchRequest:
    """A parsed search: criteria plus the result parameters."""

    criteria: Criteria
    count: int = 50
    descending: bool = False
    total: bool = True
    include_output: bool = False
    cursor: Cursor | None = None
    organizations: frozenset[str] | None = None
    """A tenant's organizations: only resources whose owner or requester is one of them."""


@dataclass(frozen=True)
class SearchPage:
    """One page of matches, the resources they include, the total and the next cursor."""

    matches: list[JsonObject]
    included: list[JsonObject]
    total: int | None
    next_cursor: Cursor | None


_RELATIVE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")


def _output_references(tasks: Sequence[JsonObject], base: str) -> list[tuple[str, str]]:
    """The (type, id) of Task.output.valueReference that point at this server."""
    found: dict[tuple[str, str], None] = {}
    for task in tasks:
        for output in task.get("output") or ():
            value = output.get("valueReference") if isinstance(output, dict) else None
            ref = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(ref, str):
                continue
            ref = ref.removeprefix(base.rstrip("/") + "/").split("/_history/", 1)[0]
            if match := _RELATIVE.fullmatch(ref):
                found[(match[1], match[2])] = None
    return list(found)


async def _included(
    connection: AsyncConnection, tasks: Sequence[JsonObject], base: str
) -> list[JsonObject]:
    wanted = _output_references(tasks, base)
    matched = {(t["resourceType"], t["id"]) for t in tasks}
    wanted = [key for key in wanted if key not in matched]
    if not wanted:
        return []
    rows = await connection.execute(
        select(resources.c.content)
        .where(
            resources.c.deleted == false(),
            or_(*(and_(resources.c.resource_type == t, resources.c.id == i) for t, i in wanted)),
        )
        .order_by(resources.c.resource_type, resources.c.id)
    )
    return [orjson.loads(row.content) for row in rows]


async def search(
    connection: AsyncConnection, request: SearchRequest, *, now: datetime, base: str = ""
) -> SearchPage:
    """Run a search: one page in (last_updated, id) order, optionally with the total."""
    where = criteria_clause(request.criteria, now)
    if request.organizations is not None:
        where = and_(where, _tenant_clause(request.criteria.resource_type, request.organizations))
    total = None
    if request.total:
        total = int(
            await connection.scalar(select(func.count()).select_from(resources).where(where)) or 0
        )
    if request.count == 0:
        return SearchPage([], [], total, None)
    last_updated, rid = resources.c.last_updated, resources.c.id
    query = select(resources.c.last_updated, resources.c.id, resources.c.content).where(where)
    if request.cursor is not None:
        at, after = request.cursor.last_updated, request.cursor.id
        if request.descending:
            query = query.where(or_(last_updated < at, and_(last_updated == at, rid < after)))
        else:
            query = query.where(or_(last_updated > at, and_(last_updated == at, rid > after)))
    order = (last_updated.desc(), rid.desc()) if request.descending else (last_updated, rid)
    rows = (await connection.execute(query.order_by(*order).limit(request.count + 1))).all()
    page = rows[: request.count]
    next_cursor = Cursor(page[-1].last_updated, page[-1].id) if len(rows) > request.count else None
    matches = [orjson.loads(row.content) for row in page]
    included = await _included(connection, matches, base) if request.include_output else []
    return SearchPage(matches, included, total, next_cursor)


async def search_ids(
    connection: AsyncConnection, criteria: Criteria, *, now: datetime
) -> list[str]:
    """The ids of every match, in (last_updated, id) order (for tests and small result sets)."""
    where = criteria_clause(criteria, now)
    rows = await connection.execute(
        select(resources.c.id).where(where).order_by(resources.c.last_updated, resources.c.id)
    )
    return [row.id for row in rows]
