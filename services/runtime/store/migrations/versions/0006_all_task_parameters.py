"""Index every R4 Task search parameter: rebuild the search index of the stored Tasks.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from herald.runtime.store.search import backfill

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Re-index every live Task with all of its parameters (the tables are unchanged)."""
    backfill(op.get_bind())


def downgrade() -> None:
    """Nothing to undo: older code ignores the extra index rows."""
