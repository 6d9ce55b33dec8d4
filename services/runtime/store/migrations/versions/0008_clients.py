"""Clients, seen one-time ids (assertion jti, webhook ids), Herald's signing keys, and the
owner of each subscription.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables and the owner column (subscriptions stored before have no owner)."""
    op.create_table(
        "clients",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("jwks", sa.Text),
        sa.Column("jwks_url", sa.Text),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("organizations", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "seen_ids",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(100), primary_key=True),
        sa.Column("jwk", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.add_column("subscriptions", sa.Column("owner", sa.String(200)))
    op.create_index("ix_subscriptions_owner", "subscriptions", ["owner"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_subscriptions_owner", "subscriptions")
    op.drop_column("subscriptions", "owner")
    op.drop_table("signing_keys")
    op.drop_table("seen_ids")
    op.drop_table("clients")
