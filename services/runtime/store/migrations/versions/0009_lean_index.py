"""A leaner search index: no `_id` rows, and a "present" row only where no value row says so.

`_id` is searched on the resources' id column, and `:missing` asks whether a parameter has any
row at all, so these rows only cost writes (see herald.core.search.index_entries).

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# table: (its value columns, a condition true of a value row)
_TABLES = {
    "search_tokens": (("system", "code"), "system IS NOT NULL OR code IS NOT NULL"),
    "search_references": (
        ("literal", "ref_type", "ref_id", "base"),
        "literal IS NOT NULL OR ref_id IS NOT NULL",
    ),
    "search_dates": (("low", "high"), "low IS NOT NULL OR high IS NOT NULL"),
}


def _same(table: str) -> str:
    return (
        f"v.resource_type = {table}.resource_type AND v.resource_id = {table}.resource_id"
        f" AND v.param = {table}.param"
    )


def upgrade() -> None:
    """Remove the `_id` rows and every present row beside a value row of its parameter."""
    op.execute("DELETE FROM search_tokens WHERE param = '_id'")
    for table, (columns, valued) in _TABLES.items():
        empty = " AND ".join(f"{column} IS NULL" for column in columns)
        op.execute(
            f"DELETE FROM {table} WHERE {empty} AND EXISTS"
            f" (SELECT 1 FROM {table} v WHERE {_same(table)} AND ({valued}))"
        )


def downgrade() -> None:
    """Put the rows back, as the code of revision 0008 reads them."""
    for table, (columns, _valued) in _TABLES.items():
        empty = " AND ".join(f"{column} IS NULL" for column in columns)
        nulls = ", ".join("NULL" for _ in columns)
        op.execute(
            f"INSERT INTO {table} (resource_type, resource_id, param, {', '.join(columns)})"
            f" SELECT DISTINCT resource_type, resource_id, param, {nulls} FROM {table}"
            f" WHERE param NOT LIKE '%:%' AND NOT EXISTS"
            f" (SELECT 1 FROM {table} v WHERE {_same(table)} AND {empty})"
        )
    for code in ("NULL", "id"):
        op.execute(
            "INSERT INTO search_tokens (resource_type, resource_id, param, system, code)"
            f" SELECT resource_type, id, '_id', NULL, {code} FROM resources"
            " WHERE resource_type = 'Task' AND NOT deleted"
        )
