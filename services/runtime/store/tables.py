"""The schema, as SQLAlchemy Core tables (the migrations in migrations/ create it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

# Generic counters; row "registry" is the subscription registry revision.
counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# The current version of each resource.
resources = Table(
    "resources",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", String(40), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=False),
)

# Every version of each resource (history, vread, full-resource notifications).
resource_versions = Table(
    "resource_versions",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", String(40), nullable=False),
    Column("content", Text, nullable=False),
    # The interaction's HTTP method, and whether the version is a deletion (its content: the
    # last content) (0006).
    Column("method", String(8)),
    Column("deleted", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_resource_versions_history", "resource_type", "last_updated", "id", "version_id"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("topic", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", String(40), nullable=False),
    Column("revision", BigInteger, nullable=False, index=True),
    Column("events_count", BigInteger, nullable=False, default=0),
    Column("delivered_through", BigInteger, nullable=False, default=0),
    Column("error", Text),
    Column("deleted", Boolean, nullable=False, default=False),
    # Read from the resource when it is written, so that the dispatcher's periodic scan does
    # not parse every subscription (0003).
    Column("heartbeat_seconds", Integer),
    Column("ends_at", String(40), index=True),
    # The client that created it (0008); None without authentication.
    Column("owner", String(200), index=True),
    # The endpoint's scheme://host:port, for the per-origin quota (0005).
    Column("endpoint_origin", String(300), index=True),
    # The filter-criteria strings as a JSON array (0010): what the matcher's registry load
    # reads instead of the resource; None only for rows whose filters no longer passed then.
    Column("filters", Text),
)

# Clients registered by operators (`herald clients`): key set, scopes, organizations (0008).
clients = Table(
    "clients",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("jwks", Text),
    Column("jwks_url", Text),
    Column("scopes", Text, nullable=False),
    Column("organizations", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
)

# One-time ids seen within their lifetime: client assertion jti, Canvas webhook-id (0008).
seen_ids = Table(
    "seen_ids",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("id", String(200), primary_key=True),
    Column("expires_at", BigInteger, nullable=False, index=True),
)

# Herald's own keys that sign access tokens; the newest signs, all verify (0008).
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(100), primary_key=True),
    Column("jwk", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
)

# Numbered events per subscription: the source of $events and of deliveries.
event_log = Table(
    "event_log",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("number", BigInteger, primary_key=True),
    Column("request_id", String(200), nullable=False, unique=True),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", String(32), nullable=False),
    Column("interaction", String(16), nullable=False),
    Column("occurred_at", String(40), nullable=False),
    Column("recorded_at", String(40), nullable=False),
    # The id of the FHIR request that wrote the change (0004); sent with the notification.
    Column("origin_request_id", String(128)),
    # The HTTP method when the interaction does not imply it (create by PUT) (0006).
    Column("method", String(8)),
)

# The last delivery attempts of each subscription (handshakes and events, not heartbeats), for
# operators (`herald subscriptions show`); trimmed to the newest few per subscription.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("subscription_id", String(64), nullable=False),
    Column("attempted_at", String(40), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("first_event", BigInteger),
    Column("last_event", BigInteger),
    Column("outcome", String(32), nullable=False),
    Column("status_code", Integer),
    Column("detail", Text, nullable=False),
    Column("seconds", Float, nullable=False),
    Index("ix_delivery_attempts_subscription", "subscription_id", "id"),
)

# Transactional outbox: records to publish, written with the change that caused them.
outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("topic", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("request_id", String(128)),
)

# The embedded bus: a durable log and consumer-group offsets in the same database.
bus_log = Table(
    "bus_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("topic", String(200), nullable=False, index=True),
    Column("key", String(200), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("request_id", String(128)),
    # Ids must never be reused after the log is trimmed: consumers keep positions.
    sqlite_autoincrement=True,
)

bus_offsets = Table(
    "bus_offsets",
    metadata,
    Column("group_id", String(200), primary_key=True),
    Column("topic", String(200), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# Search index of the current version of each resource (see herald.core.search.index_entries):
# token pairs, references and date ranges of the searchable parameters. A row with every value
# column empty records that the parameter has an element (for `:missing`).
search_tokens = Table(
    "search_tokens",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", Text),
    Column("code", Text),
    Index("ix_search_tokens_code", "resource_type", "param", "code", "resource_id"),
    Index("ix_search_tokens_resource", "resource_type", "resource_id"),
)

search_references = Table(
    "search_references",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("literal", Text),
    Column("ref_type", String(64)),
    Column("ref_id", String(64)),
    Column("base", Text),
    Index("ix_search_references_target", "resource_type", "param", "ref_id", "resource_id"),
    Index("ix_search_references_literal", "resource_type", "param", "literal", "resource_id"),
    Index("ix_search_references_resource", "resource_type", "resource_id"),
)

search_dates = Table(
    "search_dates",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("low", String(32)),
    Column("high", String(32)),
    Index("ix_search_dates_low", "resource_type", "param", "low", "resource_id"),
    Index("ix_search_dates_resource", "resource_type", "resource_id"),
)

# Task search pages by (last_updated, id) among the live resources of a type.
Index(
    "ix_resources_search_order",
    resources.c.resource_type,
    resources.c.deleted,
    resources.c.last_updated,
    resources.c.id,
)
