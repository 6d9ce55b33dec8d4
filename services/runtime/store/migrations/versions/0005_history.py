"""History: the HTTP method of each version and logged event, deletions as versions.

- event_log.method and resource_versions.method: the method of the interaction (a create by
  PUT is PUT); empty for rows written before (the interaction implies it).
- resource_versions.deleted: a deletion is a version too (content: the last content), so that
  history shows it.
- an index for type-level history (newest first).

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
    """Add the columns and the history index."""
    op.add_column("event_log", sa.Column("method", sa.String(8)))
    op.add_column("resource_versions", sa.Column("method", sa.String(8)))
    op.add_column(
        "resource_versions",
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_resource_versions_history",
        "resource_versions",
        ["resource_type", "last_updated", "id", "version_id"],
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_resource_versions_history", "resource_versions")
    with op.batch_alter_table("resource_versions") as batch:
        batch.drop_column("deleted")
        batch.drop_column("method")
    with op.batch_alter_table("event_log") as batch:
        batch.drop_column("method")
