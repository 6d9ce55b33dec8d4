"""History: the HTTP method of each version and logged event, deletions as versions.

- event_log.method and resource_versions.method: the method of the interaction (a create by
  PUT is PUT); empty for rows written before (the interaction implies it).
- resource_versions.deleted: a deletion is a version too (content: the last content), so that
  history shows it.
- an index for type-level history (newest first).
- Subscriptions keep their versions in resource_versions too; the current one of each
  existing subscription is recorded here.

Revision ID: 0007
Revises: 0006
"""

import orjson
import sqlalchemy as sa
from alembic import op

from herald.runtime.store.subscriptions import from_row
from herald.runtime.store.tables import resource_versions, subscriptions

revision = "0007"
down_revision = "0006"
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
    connection = op.get_bind()
    # The columns of this revision only: later ones (owner 0008, filters 0010) do not exist yet.
    columns = [c for c in subscriptions.c if c.name not in ("owner", "filters")]
    for row in connection.execute(sa.select(*columns)):
        stored = from_row(row, open_headers=False)
        connection.execute(
            sa.insert(resource_versions).values(
                resource_type="Subscription",
                id=stored.id,
                version_id=stored.version_id,
                last_updated=stored.last_updated,
                content=orjson.dumps(stored.resource).decode(),
                deleted=stored.deleted,
            )
        )


def downgrade() -> None:
    """Drop them."""
    op.execute(
        sa.delete(resource_versions).where(resource_versions.c.resource_type == "Subscription")
    )
    op.drop_index("ix_resource_versions_history", "resource_versions")
    with op.batch_alter_table("resource_versions") as batch:
        batch.drop_column("deleted")
        batch.drop_column("method")
    with op.batch_alter_table("event_log") as batch:
        batch.drop_column("method")
