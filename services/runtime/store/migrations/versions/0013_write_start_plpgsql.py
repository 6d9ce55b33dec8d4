"""The write-start function again, in PL/pgSQL: PostgreSQL plans its statements once per session.

herald_write_start_v1 (migration 0011) is a LANGUAGE sql function of two statements. PostgreSQL
(before 18) parses and plans such a function's statements on every call; a PL/pgSQL function
keeps its plans for the session. Measured on this project's PostgreSQL 15: 0.07-0.09 ms of the
backend's CPU per call against 0.25-0.30 ms in a transaction of many writes (docs/performance.md,
"Distributed: the write-start function in PL/pgSQL"). Same arguments, same rows, same order of
steps: the type's write lock, then the read, in a statement of its own (a VOLATILE PL/pgSQL
function takes a fresh snapshot for each statement at READ COMMITTED, so the read sees every
commit of the lock's earlier holders). A new name: processes of the previous release keep calling
v1 during a rolling upgrade, so v1 stays.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FUNCTION = "herald_write_start_v2"


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
        LANGUAGE plpgsql VOLATILE AS $body$
        #variable_conflict use_column
        BEGIN
            PERFORM pg_advisory_xact_lock(lock_class, lock_key);
            RETURN QUERY
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
        END
        $body$
        """
    )


def downgrade() -> None:
    """Drop the function (PostgreSQL)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {FUNCTION}(integer, integer, text, text)")
