"""The HTTP method of each logged event, so that a create by PUT is notified as PUT.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add event_log.method (empty for the events logged before: the interaction implies it)."""
    op.add_column("event_log", sa.Column("method", sa.String(8)))


def downgrade() -> None:
    """Drop event_log.method."""
    with op.batch_alter_table("event_log") as batch:
        batch.drop_column("method")
