"""Search index tables for database search; backfill them for the resources already stored.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from herald.runtime.store.search import backfill

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _key_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
    ]


def upgrade() -> None:
    """Create the index tables and index every live resource."""
    op.create_table(
        "search_tokens",
        *_key_columns(),
        sa.Column("system", sa.Text),
        sa.Column("code", sa.Text),
    )
    op.create_index(
        "ix_search_tokens_code", "search_tokens", ["resource_type", "param", "code", "resource_id"]
    )
    op.create_index("ix_search_tokens_resource", "search_tokens", ["resource_type", "resource_id"])
    op.create_table(
        "search_references",
        *_key_columns(),
        sa.Column("literal", sa.Text),
        sa.Column("ref_type", sa.String(64)),
        sa.Column("ref_id", sa.String(64)),
        sa.Column("base", sa.Text),
    )
    op.create_index(
        "ix_search_references_target",
        "search_references",
        ["resource_type", "param", "ref_id", "resource_id"],
    )
    op.create_index(
        "ix_search_references_literal",
        "search_references",
        ["resource_type", "param", "literal", "resource_id"],
    )
    op.create_index(
        "ix_search_references_resource", "search_references", ["resource_type", "resource_id"]
    )
    op.create_table(
        "search_dates",
        *_key_columns(),
        sa.Column("low", sa.String(32)),
        sa.Column("high", sa.String(32)),
    )
    op.create_index(
        "ix_search_dates_low", "search_dates", ["resource_type", "param", "low", "resource_id"]
    )
    op.create_index("ix_search_dates_resource", "search_dates", ["resource_type", "resource_id"])
    op.create_index(
        "ix_resources_search_order",
        "resources",
        ["resource_type", "deleted", "last_updated", "id"],
    )
    # Uses today's extraction code: the index must describe resources as searches read them.
    backfill(op.get_bind())


def downgrade() -> None:
    """Drop the index tables."""
    op.drop_index("ix_resources_search_order", "resources")
    for name in ("search_dates", "search_references", "search_tokens"):
        op.drop_table(name)
