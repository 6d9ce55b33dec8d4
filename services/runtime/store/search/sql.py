"""SQL from parsed criteria: each condition as `id IN (SELECT resource_id ...)` over the index."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Table, and_, false, func, not_, or_, select, true

from herald.core.errors import SearchParameterError
from herald.core.search import (
    DATABASE_SEARCHED,
    ID,
    PARAMETERS,
    Condition,
    Criteria,
    DateValue,
    ReferenceValue,
    SearchValues,
    Token,
    UriValue,
    search_values,
)
from herald.runtime.store.search.index import TABLES
from herald.runtime.store.tables import resources, search_dates, search_references, search_tokens


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


def tenant_clause(resource_type: str, organizations: frozenset[str]) -> ColumnElement[bool]:
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


def _uri(value: UriValue) -> ColumnElement[bool]:
    code = search_tokens.c.code
    if value.above:
        return code.in_(value.above)
    if value.below:
        # substr, not LIKE: SQLite's LIKE ignores case, a uri does not.
        prefix = value.uri if value.uri.endswith("/") else value.uri + "/"
        return or_(code == value.uri, func.substr(code, 1, len(prefix)) == prefix)
    return code == value.uri


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


def _id(values: SearchValues) -> ColumnElement[bool]:
    """`_id` on the id column: a resource's one id is a token without a system."""
    if values.kind == "missing":
        return false() if values.negated else true()
    ids = [t.code for t in values.tokens if t.code is not None and t.system in (None, "")]
    found = resources.c.id.in_(ids) if ids else false()
    return not_(found) if values.negated else found


def condition_clause(
    condition: Condition, now: datetime, resource_type: str = "Task"
) -> ColumnElement[bool]:
    """The SQL meaning of one condition on a `resources` row of that type."""
    values = search_values(condition)
    kind, param = values.kind, values.param
    if param == ID:
        return _id(values)
    if kind == "missing":
        found = _exists(TABLES[values.table], resource_type, param, true())
        return not_(found) if values.negated else found
    if kind == "token":
        clause = or_(*(_token(t) for t in values.tokens))
        found = _exists(search_tokens, resource_type, param, clause)
    elif kind == "uri":
        clause = or_(*(_uri(u) for u in values.uris))
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
    if criteria.resource_type not in DATABASE_SEARCHED:
        raise SearchParameterError(f"{criteria.resource_type} is not searched in the database")
    indexed = PARAMETERS[criteria.resource_type]
    for condition in criteria.conditions:
        if indexed.get(condition.parameter.name) is not condition.parameter:
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
