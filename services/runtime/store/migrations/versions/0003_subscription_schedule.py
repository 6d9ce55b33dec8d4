"""Heartbeat period and effective end of each subscription as columns, filled from the resources.

Revision ID: 0003
Revises: 0002
"""

import orjson
import sqlalchemy as sa
from alembic import op

from herald.runtime.store.subscriptions import schedule_columns

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the columns and fill them for the subscriptions already stored."""
    op.add_column("subscriptions", sa.Column("heartbeat_seconds", sa.Integer))
    op.add_column("subscriptions", sa.Column("ends_at", sa.String(40)))
    op.create_index("ix_subscriptions_ends_at", "subscriptions", ["ends_at"])
    connection = op.get_bind()
    table = sa.table(
        "subscriptions",
        sa.column("id", sa.String),
        sa.column("content", sa.Text),
        sa.column("heartbeat_seconds", sa.Integer),
        sa.column("ends_at", sa.String),
    )
    rows = connection.execute(sa.select(table.c.id, table.c.content)).all()
    for row in rows:
        columns = schedule_columns(orjson.loads(row.content))
        if any(value is not None for value in columns.values()):
            connection.execute(table.update().where(table.c.id == row.id).values(**columns))


def downgrade() -> None:
    """Drop the columns."""
    op.drop_index("ix_subscriptions_ends_at", "subscriptions")
    op.drop_column("subscriptions", "ends_at")
    op.drop_column("subscriptions", "heartbeat_seconds")
