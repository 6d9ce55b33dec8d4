"""Paging a database search: keyset pages in a sort order, `_include=Task:output`, the total.

Paging is keyset paging on (sort key, id): a next link carries the sort key and id of the last
entry, so writes between two pages neither shift nor repeat entries. The default sort key is
`last_updated`; a resource changed during the paging moves to its new last_updated: in
ascending order it appears again, as its new version, later in the paging; in descending order
its new version is before the cursor. `_sort` on another date parameter orders by the earliest
start of its values (ascending) or the latest end (descending), as FHIR describes; resources
without a value come last in both orders.
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
from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.errors import SearchParameterError
from herald.core.search import Criteria
from herald.core.types import JsonObject
from herald.runtime.store.search.sql import criteria_clause, tenant_clause
from herald.runtime.store.tables import resources, search_dates


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after this (sort key, id) in the sort order.

    The key is None for a resource without a value of the sort parameter.
    """

    key: str | None
    id: str

    def encode(self) -> str:
        """Opaque text for a next link."""
        raw = orjson.dumps([self.key, self.id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Read a next link's cursor; SearchParameterError if it is not one."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            key, resource_id = orjson.loads(raw)
            if not isinstance(key, str | None) or not isinstance(resource_id, str):
                raise ValueError("not a key and an id")
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise SearchParameterError(f"Malformed paging cursor {text!r}") from None
        return cls(key, resource_id)


@dataclass(frozen=True)
class Sort:
    """A sort order: `_lastUpdated` or another date parameter, ascending or descending."""

    parameter: str = "_lastUpdated"
    descending: bool = False


@dataclass(frozen=True)
class SearchRequest:
    """A parsed search: criteria plus the result parameters."""

    criteria: Criteria
    count: int = 50
    sort: Sort = Sort()
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
    connection: AsyncConnection,
    tasks: Sequence[JsonObject],
    base: str,
    organizations: frozenset[str] | None,
) -> list[JsonObject]:
    """The Tasks that the page's Task.output references name, under the same tenancy as the
    search: never a resource of another type (a Subscription is its owner's alone)."""
    matched = {t["id"] for t in tasks}
    wanted = [i for t, i in _output_references(tasks, base) if t == "Task" and i not in matched]
    if not wanted:
        return []
    where = and_(
        resources.c.resource_type == "Task",
        resources.c.id.in_(wanted),
        resources.c.deleted == false(),
    )
    if organizations is not None:
        where = and_(where, tenant_clause("Task", organizations))
    rows = await connection.execute(
        select(resources.c.content).where(where).order_by(resources.c.id)
    )
    return [orjson.loads(row.content) for row in rows]


def _sort_key(sort: Sort, resource_type: str) -> ColumnElement[Any]:
    if sort.parameter == "_lastUpdated":
        return resources.c.last_updated
    bound = func.max(search_dates.c.high) if sort.descending else func.min(search_dates.c.low)
    return (
        select(bound)
        .where(
            search_dates.c.resource_type == resource_type,
            search_dates.c.resource_id == resources.c.id,
            search_dates.c.param == sort.parameter,
        )
        .scalar_subquery()
    )


def _page_query(request: SearchRequest, where: ColumnElement[bool]) -> Select[Any]:
    """The rows of one page (plus one, to know whether there is a next page)."""
    sort = request.sort
    key = _sort_key(sort, request.criteria.resource_type).label("sort_key")
    rows = select(resources.c.id, resources.c.content, key).where(where).subquery()
    sort_key, rid = rows.c.sort_key, rows.c.id
    query = select(rows.c.id, rows.c.content, sort_key)
    # last_updated is never empty; leaving out the NULL terms lets the index give the order.
    nullable = sort.parameter != "_lastUpdated"
    cursor = request.cursor
    if cursor is not None:
        beyond_key = sort_key < cursor.key if sort.descending else sort_key > cursor.key
        beyond_id = rid < cursor.id if sort.descending else rid > cursor.id
        if cursor.key is None:  # keyless resources come last, by id
            query = query.where(sort_key.is_(None), beyond_id)
        else:
            same = and_(sort_key == cursor.key, beyond_id)
            later = (sort_key.is_(None),) if nullable else ()
            query = query.where(or_(*later, beyond_key, same))
    order = (sort_key.desc(), rid.desc()) if sort.descending else (sort_key, rid)
    nulls_last = (sort_key.is_(None),) if nullable else ()
    return query.order_by(*nulls_last, *order).limit(request.count + 1)


async def search(
    connection: AsyncConnection, request: SearchRequest, *, now: datetime, base: str = ""
) -> SearchPage:
    """Run a search: one page in the sort order, optionally with the total."""
    where = criteria_clause(request.criteria, now)
    if request.organizations is not None:
        where = and_(where, tenant_clause(request.criteria.resource_type, request.organizations))
    total = None
    if request.total:
        total = int(
            await connection.scalar(select(func.count()).select_from(resources).where(where)) or 0
        )
    if request.count == 0:
        return SearchPage([], [], total, None)
    rows = (await connection.execute(_page_query(request, where))).all()
    page = rows[: request.count]
    next_cursor = Cursor(page[-1].sort_key, page[-1].id) if len(rows) > request.count else None
    matches = [orjson.loads(row.content) for row in page]
    included = []
    if request.include_output:
        included = await _included(connection, matches, base, request.organizations)
    return SearchPage(matches, included, total, next_cursor)


async def search_ids(
    connection: AsyncConnection,
    criteria: Criteria,
    *,
    now: datetime,
    organizations: frozenset[str] | None = None,
) -> list[str]:
    """The ids of every match, in (last_updated, id) order (for tests and small result sets);
    `organizations`: a tenant's, as in SearchRequest."""
    where = criteria_clause(criteria, now)
    if organizations is not None:
        where = and_(where, tenant_clause(criteria.resource_type, organizations))
    rows = await connection.execute(
        select(resources.c.id).where(where).order_by(resources.c.last_updated, resources.c.id)
    )
    return [row.id for row in rows]
