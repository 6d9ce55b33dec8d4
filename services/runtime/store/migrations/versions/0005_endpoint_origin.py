"""The origin (scheme://host:port) of each subscription's endpoint as a column, for quotas.

Revision ID: 0005
Revises: 0004
"""

import orjson
import sqlalchemy as sa
from alembic import op

from herald.core.subscriptions import endpoint_origin

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column and fill it for the subscriptions already stored."""
    op.add_column("subscriptions", sa.Column("endpoint_origin", sa.String(300)))
    op.create_index("ix_subscriptions_endpoint_origin", "subscriptions", ["endpoint_origin"])
    connection = op.get_bind()
    table = sa.table(
        "subscriptions",
        sa.column("id", sa.String),
        sa.column("content", sa.Text),
        sa.column("endpoint_origin", sa.String),
    )
    for row in connection.execute(sa.select(table.c.id, table.c.content)).all():
        origin = endpoint_origin(orjson.loads(row.content))
        connection.execute(
            table.update().where(table.c.id == row.id).values(endpoint_origin=origin)
        )


def downgrade() -> None:
    """Drop the column."""
    op.drop_index("ix_subscriptions_endpoint_origin", "subscriptions")
    op.drop_column("subscriptions", "endpoint_origin")
