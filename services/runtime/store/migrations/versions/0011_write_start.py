"""A PostgreSQL function that starts a resource write in one round trip: the type's write lock,
then the current version, the newest stamp and the registry revision read after it.

Two statements in one call: a VOLATILE function takes a fresh snapshot for each statement it
runs, so the read sees every commit of the lock's earlier holders (one statement holding both
would read with the snapshot taken before it waited for the lock). See
herald.runtime.store.resources.begin_write. SQLite has one writer and needs none.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Versioned by its name: a later change to what it returns gets a new name, so that processes of
# the previous release keep theirs during a rolling upgrade.
FUNCTION = "herald_write_start_v1"


def upgrade() -> None:
    """Create the function (PostgreSQL)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION {FUNCTION}(lock_class integer, lock_key integer, of_type text, of_id text)
        RETURNS TABLE (
            newest text, registry bigint, version_id integer, last_updated text,
            deleted boolean, content text
        )
        LANGUAGE sql VOLATILE AS $body$
            SELECT pg_advisory_xact_lock(lock_class, lock_key);
            WITH cur AS (
                SELECT r.version_id, r.last_updated, r.deleted, r.content FROM resources AS r
                WHERE r.resource_type = of_type AND r.id = of_id FOR UPDATE
            )
            SELECT
                (SELECT max(n.last_updated) FROM resources AS n
                 WHERE n.resource_type = of_type AND n.deleted = false)::text,
                (SELECT c.value FROM counters AS c WHERE c.name = 'registry'),
                cur.version_id, cur.last_updated::text, cur.deleted, cur.content
            FROM (SELECT 1 AS one) AS one LEFT JOIN cur ON true;
        $body$
        """
    )


def downgrade() -> None:
    """Drop the function (PostgreSQL)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {FUNCTION}(integer, integer, text, text)")
