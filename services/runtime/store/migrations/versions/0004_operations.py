"""For operators: the last delivery attempts of each subscription, and the request id carried
from a FHIR request through the outbox and the embedded bus to the event log.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the attempts table; add the request id columns."""
    op.create_table(
        "delivery_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("attempted_at", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("first_event", sa.BigInteger),
        sa.Column("last_event", sa.BigInteger),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_delivery_attempts_subscription", "delivery_attempts", ["subscription_id", "id"]
    )
    op.add_column("outbox", sa.Column("request_id", sa.String(128)))
    op.add_column("bus_log", sa.Column("request_id", sa.String(128)))
    op.add_column("event_log", sa.Column("origin_request_id", sa.String(128)))


def downgrade() -> None:
    """Drop the table and the columns."""
    op.drop_column("event_log", "origin_request_id")
    op.drop_column("bus_log", "request_id")
    op.drop_column("outbox", "request_id")
    op.drop_table("delivery_attempts")
