"""Configuration, from HERALD_* environment variables (twelve-factor).

Each field says which commands read it (`roles`) and whether its value is a secret; the CLI's
help, `herald config` and the one-line settings errors are generated from these fields, so they
cannot drift from what the code reads.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald.core.addresses import parse_networks
from herald.core.subscriptions import EndpointPolicy
from herald.runtime.limits import Limits

ENV_PREFIX = "HERALD_"

# The commands that serve (and read most settings), and groups of them.
SERVE = ("run", "ingest", "matcher", "dispatcher")
FHIR_API = ("run", "ingest")
DELIVERY = ("run", "dispatcher")
CONSUMERS = ("matcher", "dispatcher")  # Kafka consumer-group members
ALL = (*SERVE, "migrate", "subscriptions")

# Default port of each role's HTTP server (FHIR API or /metrics, /healthz, /readyz): distinct,
# so that every role can run on one host at once. `herald receive` listens on 9000.
DEFAULT_PORTS = {"run": 8080, "ingest": 8080, "matcher": 9101, "dispatcher": 9102}

# /metrics, /healthz, /readyz of run and ingest when authentication is on.
ADMIN_PORT = 9100

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LogFormat(StrEnum):
    """How log records are written: one JSON object or one key=value line per record."""

    JSON = "json"
    TEXT = "text"


class LogLevel(StrEnum):
    """The lowest level of the records written."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def setting(
    default: Any,
    description: str,
    *,
    roles: tuple[str, ...],
    secret: bool = False,
    allowed: str | None = None,
    **constraints: Any,
) -> Any:
    """A settings field with the commands that read it, whether it is secret, and (for values a
    type cannot describe) what is allowed."""
    extra: dict[str, Any] = {"roles": list(roles), "secret": secret}
    if allowed is not None:
        extra["allowed"] = allowed
    return Field(default, description=description, json_schema_extra=extra, **constraints)


def mask_url_password(url: str) -> str:
    """The URL with the password of its user part replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Settings(BaseSettings):
    """Every setting of every Herald service; each service reads the ones it needs."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = setting(
        "sqlite:///herald.db",
        "the store (SQLite file or PostgreSQL database)",
        roles=ALL,
        allowed="sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
    )
    kafka_bootstrap: str | None = setting(
        None,
        "Kafka bootstrap servers (host:port,...); unset: embedded mode, in-process bus",
        roles=(*SERVE, "subscriptions"),
    )
    kafka_topic_prefix: str = setting(
        "herald.",
        "prefix of Kafka topic and consumer group names",
        roles=(*SERVE, "subscriptions"),
    )
    kafka_partitions: int = setting(6, "partitions of the topics Herald creates", roles=SERVE, ge=1)
    kafka_replication_factor: int = setting(
        1, "replication factor of the topics Herald creates", roles=SERVE, ge=1
    )
    instance_id: str | None = setting(
        None,
        "stable name of this matcher or dispatcher in its Kafka consumer group (static "
        "membership, e.g. the pod name): restarted under the same name within the session "
        "timeout, it takes its partitions back at once; unique per running instance; unset: "
        "dynamic membership",
        roles=CONSUMERS,
        allowed="1 to 249 letters, digits, '.', '_' or '-' (e.g. the pod name), or unset",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
    )
    kafka_session_timeout: float = setting(
        6.0,
        "seconds without a heartbeat after which Kafka gives a dead matcher's or dispatcher's "
        "partitions to the others (within the broker's group.min/max.session.timeout.ms)",
        roles=CONSUMERS,
        gt=0,
    )
    kafka_commit_interval: float = setting(
        0.5,
        "seconds between Kafka offset commits of a matcher or dispatcher (0: after every "
        "batch); only offsets of durable work are committed, a crash re-reads at most this much",
        roles=CONSUMERS,
        ge=0,
    )
    kafka_heartbeat_interval: float = setting(
        1.0,
        "seconds between consumer-group heartbeats (also how soon a member notices a "
        "rebalance); below the session timeout",
        roles=CONSUMERS,
        gt=0,
    )

    host: str = setting("127.0.0.1", "address the HTTP servers bind", roles=SERVE)
    port: int = setting(
        DEFAULT_PORTS["run"], "port of the FHIR API (run, ingest)", roles=FHIR_API, ge=0, le=65535
    )
    health_port: int | None = setting(
        None,
        "port of /metrics, /healthz, /readyz of matcher (default 9101) and dispatcher "
        "(default 9102), and of run and ingest with authentication on (default 9100); "
        "HERALD_ADMIN_PORT is the same setting",
        roles=SERVE,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("HERALD_ADMIN_PORT", "HERALD_HEALTH_PORT", "health_port"),
    )
    base_url: str | None = setting(
        None,
        "public FHIR base URL, used in notifications and Location; default http://HOST:PORT/fhir",
        roles=(*FHIR_API, "dispatcher", "subscriptions"),
    )
    topics_dir: Path | None = setting(
        None,
        "folder of SubscriptionTopic JSON files; unset: the topics Herald ships",
        roles=(*SERVE, "subscriptions"),
    )

    allow_http_endpoints: bool | None = setting(
        None,
        "accept http:// subscriber endpoints; default: yes embedded, no distributed",
        roles=(*FHIR_API, "dispatcher", "subscriptions"),
    )
    allow_private_endpoints: bool | None = setting(
        None,
        "allow endpoints at loopback and private-network addresses (checked by resolved address "
        "at every connection); default: yes embedded, no distributed",
        roles=(*FHIR_API, "dispatcher", "subscriptions"),
    )

    handshake_delay: float = setting(
        0.5, "seconds between answering a create and sending the handshake", roles=DELIVERY, ge=0
    )
    handshake_attempts: int = setting(
        3, "handshake tries before the subscription goes to error", roles=DELIVERY, ge=1
    )
    retry_delays: str = setting(
        "5,30,120,600,1800,3600,7200,14400,28800,43200",
        "seconds between delivery attempts, comma-separated; +-20 % jitter",
        roles=DELIVERY,
        allowed="comma-separated non-negative numbers of seconds, e.g. 5,30,120",
    )
    event_retention_days: float = setting(
        30, "days delivered events stay available to $events", roles=DELIVERY, gt=0
    )
    max_in_flight: int = setting(
        64, "concurrent notification POSTs of one dispatcher", roles=DELIVERY, ge=1
    )
    endpoint_concurrency: int = setting(
        4, "concurrent notification POSTs to one endpoint origin", roles=DELIVERY, ge=1
    )
    circuit_failures: int = setting(
        5, "consecutive failed POSTs to an origin that open its circuit", roles=DELIVERY, ge=1
    )
    circuit_cooldown: float = setting(
        30.0,
        "seconds an open circuit waits before a probe, at most (capped by the first retry "
        "delay; doubles after a failed probe, up to HERALD_CIRCUIT_MAX_COOLDOWN)",
        roles=DELIVERY,
        gt=0,
    )
    circuit_max_cooldown: float = setting(
        8.0,
        "seconds, at most, between probes of an origin whose circuit is open (so delivery "
        "resumes within about this long after the endpoint comes back)",
        roles=DELIVERY,
        gt=0,
    )
    relay_interval: float = setting(
        0.2, "seconds between outbox polls when idle", roles=FHIR_API, gt=0
    )
    relay_linger: float = setting(
        0.01,
        "seconds, at least, between the starts of two outbox relay passes under load, so that "
        "writes of that interval travel the bus as one batch (0: a pass per write); a write "
        "after a quiet spell is relayed at once",
        roles=FHIR_API,
        ge=0,
        le=1,
    )
    registry_refresh: float = setting(
        1.0,
        "seconds between subscription registry polls",
        roles=("run", "matcher", "dispatcher"),
        gt=0,
    )
    endpoint_allow: str = setting(
        "",
        "comma-separated host names and CIDR networks endpoints may reach although they are not "
        "public (private partners), when private endpoints are not allowed",
        roles=(*FHIR_API, "dispatcher", "subscriptions"),
    )
    max_body_bytes: int = setting(
        1024 * 1024, "largest request body, on every route (413 beyond)", roles=FHIR_API, ge=1024
    )
    max_query_bytes: int = setting(
        8192, "longest query string or _search form (414/413 beyond)", roles=FHIR_API, ge=256
    )
    max_query_parameters: int = setting(
        100, "most query or _search parameters (400 beyond)", roles=FHIR_API, ge=1
    )
    rate_limit: float = setting(
        1000.0,
        "requests per second per client (client id, else address), on average; 0: no limit",
        roles=FHIR_API,
        ge=0,
    )
    rate_burst: int = setting(2000, "requests a client may make in one burst", roles=FHIR_API, ge=1)
    max_connections: int = setting(
        1000,
        "concurrent connections and requests an HTTP server takes (503 beyond)",
        roles=FHIR_API,
        ge=1,
    )
    header_timeout: float = setting(
        10.0,
        "seconds a connection has to send a complete request head (slow ones are closed)",
        roles=FHIR_API,
        gt=0,
    )
    keep_alive_timeout: float = setting(
        5.0, "seconds an idle keep-alive connection is kept open", roles=FHIR_API, gt=0
    )
    max_subscriptions_per_origin: int = setting(
        1000,
        "live subscriptions (not off, not deleted) one endpoint origin may have",
        roles=FHIR_API,
        ge=1,
    )
    max_subscriptions_per_client: int = setting(
        1000,
        "live subscriptions (not off, not deleted) one authenticated client may own",
        roles=FHIR_API,
        ge=1,
    )
    cors_origins: str = setting(
        "",
        "comma-separated origins whose browser scripts may call the FHIR API; empty: no CORS",
        roles=FHIR_API,
    )
    canvas_secret: str | None = setting(
        None,
        "Standard Webhooks secret (whsec_<base64>) of POST /canvas/integration-tasks; required "
        "with HERALD_AUTH=smart; unset without authentication: no signature check",
        roles=FHIR_API,
        secret=True,
    )
    auth: str | None = setting(
        None,
        "smart (SMART Backend Services tokens) or none; default smart, except `herald run` "
        "bound to a loopback host",
        roles=FHIR_API,
        allowed="smart or none",
        pattern="^(smart|none)$",
    )
    auth_token_lifetime: int = setting(
        300, "seconds an access token Herald issues stays valid", roles=FHIR_API, ge=30, le=3600
    )
    auth_signing_key_file: Path | None = setting(
        None,
        "JWK set (JSON, private keys) Herald signs access tokens with, first key signing; "
        "unset: keys kept in the database (`herald keys rotate`)",
        roles=FHIR_API,
    )
    auth_issuer: str | None = setting(
        None, "issuer (iss) of an external authorization server's tokens", roles=FHIR_API
    )
    auth_jwks_url: str | None = setting(
        None, "JWKS URL of the external authorization server", roles=FHIR_API
    )
    auth_audience: str | None = setting(
        None,
        "audience (aud) external tokens must carry; default the FHIR base URL",
        roles=FHIR_API,
    )
    secrets_key: str | None = setting(
        None,
        "Fernet keys (comma-separated, newest first) that encrypt channel.header values at "
        "rest; unset: stored as sent",
        roles=(*SERVE, "subscriptions"),
        secret=True,
    )
    log_format: LogFormat = setting(LogFormat.JSON, "log record format", roles=ALL)
    log_level: LogLevel = setting(LogLevel.INFO, "lowest level logged", roles=ALL)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object, info: Any) -> object:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.split("+", 1)[0]
        if scheme not in DATABASE_SCHEMES:
            raise ValueError(f"unsupported scheme {scheme or '(none)'!r}")
        return value

    @field_validator("kafka_heartbeat_interval")
    @classmethod
    def _check_heartbeat(cls, value: float, info: Any) -> float:
        session = info.data.get("kafka_session_timeout")
        if session is not None and value >= session:
            raise ValueError(f"must be below the session timeout ({session} s)")
        return value

    @field_validator("retry_delays")
    @classmethod
    def _check_delays(cls, value: str) -> str:
        try:
            delays = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError("not a list of numbers") from None
        if any(d < 0 for d in delays):
            raise ValueError("retry delays must be non-negative seconds")
        return value

    @property
    def embedded(self) -> bool:
        """True without a Kafka bootstrap: all services in one process."""
        return not self.kafka_bootstrap

    @property
    def fhir_base(self) -> str:
        """The public FHIR base URL, without a trailing slash."""
        return (self.base_url or f"http://{self.host}:{self.port}/fhir").rstrip("/")

    def health_port_of(self, role: str) -> int:
        """The port of a role's operational endpoints: HERALD_HEALTH_PORT, else its default
        (for run and ingest, which serve them on the FHIR port unless authentication is on:
        9100)."""
        if self.health_port is not None:
            return self.health_port
        return ADMIN_PORT if role in FHIR_API else DEFAULT_PORTS[role]

    def auth_mode(self, role: str) -> str:
        """The authentication mode of a role: as set, else none for `run` on loopback, else
        smart."""
        if self.auth is not None:
            return self.auth
        return "none" if role == "run" and is_loopback(self.host) else "smart"

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        """retry_delays as numbers."""
        return tuple(float(v) for v in self.retry_delays.split(",") if v.strip())

    @property
    def circuit_cooldown_seconds(self) -> float:
        """The first cool-down of an open circuit: never longer than the first retry delay, so
        the breaker does not make retries coarser than the schedule an operator chose."""
        schedule = self.retry_schedule
        if schedule and schedule[0] > 0:
            return min(self.circuit_cooldown, schedule[0])
        return self.circuit_cooldown

    @property
    def endpoint_policy(self) -> EndpointPolicy:
        """The endpoint policy of this mode."""
        allow_http = (
            self.embedded if self.allow_http_endpoints is None else self.allow_http_endpoints
        )
        allow_private = (
            self.embedded if self.allow_private_endpoints is None else self.allow_private_endpoints
        )
        hosts, networks = parse_networks(self.endpoint_allow.split(","))
        return EndpointPolicy(
            allow_http=allow_http,
            allow_private=allow_private,
            allow_hosts=hosts,
            allow_networks=networks,
        )

    @property
    def request_limits(self) -> Limits:
        """The request limits of the FHIR API."""
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_query_bytes=self.max_query_bytes,
            max_query_parameters=self.max_query_parameters,
            rate=self.rate_limit,
            burst=self.rate_burst,
        )

    def topic(self, name: str) -> str:
        """The Kafka topic name for a logical topic ('task-changes', 'notifications')."""
        return f"{self.kafka_topic_prefix}{name}"
