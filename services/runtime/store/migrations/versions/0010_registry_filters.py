"""The filters of each subscription as a column, filled from the resources: the matcher's
registry load reads them instead of parsing every stored resource (on SQLite from an index that
holds every column it reads).

Revision ID: 0010
Revises: 0009
"""

import orjson
import sqlalchemy as sa
from alembic import op

from herald.runtime.store.subscriptions import REGISTRY_COLUMNS, filters_column

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PAGE_ROWS = 5_000


def upgrade() -> None:
    """Add the column and fill it for the subscriptions already stored (left empty for a
    resource whose filters no longer pass: the matcher then reads the resource and says why)."""
    op.add_column("subscriptions", sa.Column("filters", sa.Text))
    if op.get_bind().dialect.name == "sqlite":
        # Every column the load reads, so that it reads this index and not the table's rows
        # (which hold the whole resource): half the database work of a load on SQLite.
        # PostgreSQL limits an index entry to about 2.7 kB, less than filters may take.
        op.create_index("ix_subscriptions_registry", "subscriptions", REGISTRY_COLUMNS)
    connection = op.get_bind()
    table = sa.table(
        "subscriptions",
        sa.column("id", sa.String),
        sa.column("content", sa.Text),
        sa.column("filters", sa.Text),
    )
    fill = (
        table.update()
        .where(table.c.id == sa.bindparam("row_id"))
        .values(filters=sa.bindparam("row_filters"))
    )
    after = ""
    while True:  # in pages: a registry may hold a million subscriptions
        rows = connection.execute(
            sa.select(table.c.id, table.c.content)
            .where(table.c.id > after)
            .order_by(table.c.id)
            .limit(PAGE_ROWS)
        ).all()
        filled = [
            {"row_id": row.id, "row_filters": filters}
            for row in rows
            if (filters := filters_column(orjson.loads(row.content))) is not None
        ]
        if filled:
            connection.execute(fill, filled)
        if len(rows) < PAGE_ROWS:
            break
        after = rows[-1].id


def downgrade() -> None:
    """Drop the column (and the index)."""
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_subscriptions_registry", "subscriptions")
    op.drop_column("subscriptions", "filters")
