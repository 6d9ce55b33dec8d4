"""Prometheus metrics of every service (herald_ prefix, base units, no per-subscription labels)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# The *_created series double the output and no dashboard of Herald's reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# One POST is bounded by backport-timeout (at most 120 s).
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Change committed -> delivered includes retries that may span a day.
LATENCY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    7200,
    36000,
    86400,
)


class _KnownChildren:
    """A labelled metric whose labels() keeps each child by the values it was given.

    prometheus_client's labels() converts the values, checks them and takes a lock on every
    call (about 3 µs); the hot paths call it with the same few values for every request and
    delivery. A child is the same object for the same values until it is removed, so the
    children given out are kept (by positional values only) and dropped with remove/clear.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._known: dict[tuple[Any, ...], Any] = {}
        super().__init__(*args, **kwargs)

    def labels(self, *values: Any, **named: Any) -> Any:
        """The child of these label values (see the class)."""
        if named or not values:
            return super().labels(*values, **named)  # type: ignore[misc]
        try:
            return self._known[values]
        except KeyError:
            child = self._known[values] = super().labels(*values)  # type: ignore[misc]
            return child
        except TypeError:  # an unhashable value: not kept
            return super().labels(*values)  # type: ignore[misc]

    def remove(self, *values: Any) -> None:
        """Remove a child (and forget every kept one)."""
        self._known = {}
        super().remove(*values)  # type: ignore[misc]

    def remove_by_labels(self, labels: dict[str, str]) -> None:
        """Remove the children of these label values (and forget every kept one)."""
        self._known = {}
        super().remove_by_labels(labels)  # type: ignore[misc]

    def clear(self) -> None:
        """Remove every child."""
        self._known = {}
        super().clear()  # type: ignore[misc]


class Counter(_KnownChildren, prometheus_client.Counter):
    """A Counter whose labelled children are kept (_KnownChildren)."""


class Gauge(_KnownChildren, prometheus_client.Gauge):
    """A Gauge whose labelled children are kept (_KnownChildren)."""


class Histogram(_KnownChildren, prometheus_client.Histogram):
    """A Histogram whose labelled children are kept (_KnownChildren)."""


class Metrics:
    """The metrics, registered on one registry (a fresh one per test if wanted)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.resource_writes = Counter(
            "herald_resource_writes",
            "Resource versions written",
            ["resource_type", "interaction"],
            registry=r,
        )
        self.write_group_size = Histogram(
            "herald_write_group_writes",
            "Resource writes committed together in one transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.rejected_requests = Counter(
            "herald_rejected_requests",
            "Requests answered with a 4xx OperationOutcome",
            ["status"],
            registry=r,
        )
        self.token_requests = Counter(
            "herald_auth_token_requests",
            "Token endpoint answers: issued, or the OAuth error (invalid_client, invalid_scope, …)",
            ["outcome"],
            registry=r,
        )
        self.canvas_snapshots = Counter(
            "herald_canvas_snapshots",
            "Canvas IntegrationTask snapshots applied, by outcome",
            ["outcome"],
            registry=r,
        )
        self.outbox_published = Counter(
            "herald_outbox_published_records", "Outbox records published to the bus", registry=r
        )
        self.outbox_batch_size = Histogram(
            "herald_outbox_relay_batch_records",
            "Outbox records the relay published together, per pass (one produce request)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
            registry=r,
        )
        self.changes_consumed = Counter(
            "herald_changes_consumed", "Resource changes the matcher processed", registry=r
        )
        self.match_duration = Histogram(
            "herald_match_duration_seconds",
            "Time to match one change against all subscriptions",
            buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
            registry=r,
        )
        self.notification_requests = Counter(
            "herald_notification_requests", "Notification requests produced", ["kind"], registry=r
        )
        self.events_recorded = Counter(
            "herald_events_recorded", "Events numbered and stored in the event log", registry=r
        )
        self.duplicates = Counter(
            "herald_duplicate_records",
            "Bus records seen again and ignored",
            ["service"],
            registry=r,
        )
        self.malformed = Counter(
            "herald_malformed_records",
            "Bus records that broke their contract, skipped",
            ["service"],
            registry=r,
        )
        self.delivery_attempts = Counter(
            "herald_delivery_attempts",
            "Notification POSTs by kind and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.attempt_duration = Histogram(
            "herald_delivery_attempt_duration_seconds",
            "Duration of one notification POST",
            ["kind"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "herald_notification_latency_seconds",
            "Time from a change being committed to its notification being accepted",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retry_backlog = Gauge(
            "herald_retry_backlog_subscriptions", "Subscriptions waiting for a retry", registry=r
        )
        self.attempts_skipped = Counter(
            "herald_delivery_attempts_skipped",
            "Notification POSTs not made because the endpoint's circuit breaker was open",
            ["kind"],
            registry=r,
        )
        self.worker_failures = Counter(
            "herald_dispatcher_worker_failures",
            "Subscription workers that stopped on an unexpected error (retried with back-off)",
            registry=r,
        )
        self.circuit_open = Gauge(
            "herald_circuit_open_endpoints",
            "Endpoint origins whose circuit breaker is open or half-open",
            registry=r,
        )
        self.in_flight = Gauge(
            "herald_deliveries_in_flight", "Notification POSTs in flight", registry=r
        )
        self.subscriptions = Gauge(
            "herald_subscriptions", "Subscriptions by status", ["status"], registry=r
        )
        self.ready = Gauge(
            "herald_ready",
            "1 when this process's /readyz would answer 200 (checked at each scrape), else 0",
            registry=r,
        )
        self.build_info = Gauge(
            "herald_build_info",
            "Always 1; the running version and role",
            ["version", "role"],
            registry=r,
        )
        self.outbox_age = Gauge(
            "herald_outbox_oldest_age_seconds",
            "Age of the oldest outbox record the relay last read (0 when the outbox was empty)",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "herald_consumer_lag_records",
            "Records not yet processed by this consumer",
            ["service"],
            registry=r,
        )

    def watch_database(self, database: DatabaseWork) -> None:
        """Export the statements and transactions a database handle has run."""
        self.registry.register(_DatabaseCollector(database))


class DatabaseWork(Protocol):
    """What a database handle counts (herald.runtime.store.database.Database)."""

    @property
    def statements(self) -> int:
        """SQL statements sent."""

    @property
    def transactions(self) -> int:
        """Transactions ended."""

    @property
    def round_trips(self) -> int:
        """Requests sent to PostgreSQL that waited for its answer."""


class _DatabaseCollector(Collector):
    def __init__(self, database: DatabaseWork) -> None:
        self.database = database

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "herald_database_statements",
            "SQL statements this process sent to the database (BEGIN not counted)",
            value=self.database.statements,
        )
        yield CounterMetricFamily(
            "herald_database_transactions",
            "Database transactions this process ended (commits and rollbacks)",
            value=self.database.transactions,
        )
        yield CounterMetricFamily(
            "herald_database_round_trips",
            "Requests this process sent to PostgreSQL that waited for the answer (asyncpg)",
            value=self.database.round_trips,
        )
