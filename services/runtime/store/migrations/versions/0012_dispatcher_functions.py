"""PostgreSQL: the dispatcher's two batched writes as functions, one call (one round trip) each.

herald_record_events numbers and stores a batch of events. The dispatcher records each consumed
batch with it (store/events.py, record_many): one round
trip, and none for BEGIN and COMMIT when the call is a transaction of its own, where the same
steps as separate statements took four round trips per event. Its first statement locks the
batch's live subscriptions in id order (as the progress writer locks them, so concurrent
transactions cannot deadlock): a concurrent record of the same subscription (a redelivery, a
rebalance between dispatchers) has then committed, and the second statement, which in a
VOLATILE function takes a snapshot of its own, sees its events. That statement takes the events
not recorded before (the first of each request id), advances each subscription's counter by
their count and inserts them numbered in the order given; it returns the request id and number
of each event it stored.

herald_store_progress stores delivery positions (never backwards) and delivery attempts, and
trims the attempts of the subscriptions concerned to the newest `p_keep`
(dispatcher/progress.py calls it every fraction of a second, in autocommit mode: one round trip
where BEGIN, three statements and COMMIT took five). It locks the subscriptions in id order
first, as herald_record_events does.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

RECORD_EVENTS = """
CREATE OR REPLACE FUNCTION herald_record_events(
    p_subscription_id text[], p_request_id text[], p_resource_type text[],
    p_resource_id text[], p_version_id text[], p_interaction text[], p_occurred_at text[],
    p_origin_request_id text[], p_method text[], p_recorded_at text
) RETURNS TABLE (request_id text, number bigint) LANGUAGE plpgsql VOLATILE AS $body$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM subscriptions s
    WHERE s.id = ANY(p_subscription_id) AND NOT s.deleted
    ORDER BY s.id FOR UPDATE;
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(
            p_subscription_id, p_request_id, p_resource_type, p_resource_id, p_version_id,
            p_interaction, p_occurred_at, p_origin_request_id, p_method
        ) WITH ORDINALITY AS i(
            i_subscription_id, i_request_id, i_resource_type, i_resource_id, i_version_id,
            i_interaction, i_occurred_at, i_origin_request_id, i_method, i_position
        )
    ), fresh AS (
        SELECT DISTINCT ON (i_request_id) * FROM input
        WHERE NOT EXISTS (SELECT 1 FROM event_log e WHERE e.request_id = input.i_request_id)
        ORDER BY i_request_id, i_position
    ), counted AS (
        SELECT i_subscription_id, count(*) AS n FROM fresh GROUP BY i_subscription_id
    ), bumped AS (
        UPDATE subscriptions s SET events_count = s.events_count + c.n
        FROM counted c WHERE s.id = c.i_subscription_id AND NOT s.deleted
        RETURNING s.id AS b_id, s.events_count - c.n AS b_base
    ), numbered AS (
        SELECT f.*, b.b_base + row_number() OVER (
            PARTITION BY f.i_subscription_id ORDER BY f.i_position
        ) AS i_number
        FROM fresh f JOIN bumped b ON b.b_id = f.i_subscription_id
    )
    INSERT INTO event_log AS e (
        subscription_id, request_id, resource_type, resource_id, version_id, interaction,
        occurred_at, origin_request_id, method, number, recorded_at
    )
    SELECT
        i_subscription_id, i_request_id, i_resource_type, i_resource_id, i_version_id,
        i_interaction, i_occurred_at, i_origin_request_id, i_method, i_number, p_recorded_at
    FROM numbered
    RETURNING e.request_id::text, e.number;
END
$body$
"""

STORE_PROGRESS = """
CREATE OR REPLACE FUNCTION herald_store_progress(
    p_positions_id text[], p_positions_through bigint[],
    p_subscription_id text[], p_attempted_at text[], p_kind text[], p_first_event bigint[],
    p_last_event bigint[], p_outcome text[], p_status_code integer[], p_detail text[],
    p_seconds double precision[], p_keep integer
) RETURNS void LANGUAGE plpgsql VOLATILE AS $body$
BEGIN
    PERFORM 1 FROM subscriptions s WHERE s.id = ANY(p_positions_id) ORDER BY s.id FOR UPDATE;
    UPDATE subscriptions s SET delivered_through = v.through
    FROM unnest(p_positions_id, p_positions_through) AS v(id, through)
    WHERE s.id = v.id AND s.delivered_through < v.through;
    INSERT INTO delivery_attempts (
        subscription_id, attempted_at, kind, first_event, last_event, outcome, status_code,
        detail, seconds
    )
    SELECT
        subscription_id, attempted_at, kind, first_event, last_event, outcome, status_code,
        detail, seconds
    FROM unnest(
        p_subscription_id, p_attempted_at, p_kind, p_first_event, p_last_event, p_outcome,
        p_status_code, p_detail, p_seconds
    ) WITH ORDINALITY AS a(
        subscription_id, attempted_at, kind, first_event, last_event, outcome, status_code,
        detail, seconds, position
    )
    ORDER BY position;
    DELETE FROM delivery_attempts d
    WHERE d.subscription_id = ANY(p_subscription_id) AND d.id < (
        SELECT k.id FROM delivery_attempts k WHERE k.subscription_id = d.subscription_id
        ORDER BY k.id DESC OFFSET p_keep - 1 LIMIT 1
    );
END
$body$
"""


def upgrade() -> None:
    """Create the functions (PostgreSQL only: on SQLite the same steps are statements)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RECORD_EVENTS)
        op.execute(STORE_PROGRESS)


def downgrade() -> None:
    """Drop the functions."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS herald_store_progress")
        op.execute("DROP FUNCTION IF EXISTS herald_record_events")
