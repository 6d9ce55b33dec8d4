"""Configuration, from HERALD_* environment variables (twelve-factor)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald.core.subscriptions import EndpointPolicy


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Every setting of every Herald service; each service reads the ones it needs."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        "sqlite:///herald.db",
        description="sqlite:///path or postgresql://user@host:port/db",
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset in embedded mode (in-process bus)"
    )
    kafka_topic_prefix: str = Field(
        "herald.", description="prefix of Kafka topic and consumer group names"
    )
    kafka_partitions: int = Field(6, ge=1, description="partitions of topics Herald creates")
    kafka_replication_factor: int = Field(1, ge=1)

    host: str = Field("127.0.0.1", description="address the HTTP server binds")
    port: int = Field(8080, ge=0, le=65535, description="port of the FHIR API (ingest, run)")
    admin_port: int = Field(
        9100,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("HERALD_ADMIN_PORT", "HERALD_HEALTH_PORT", "admin_port"),
        description="port of /metrics, /healthz, /readyz: of matcher and dispatcher, and of "
        "ingest and run when authentication is on (HERALD_HEALTH_PORT is the older name)",
    )
    base_url: str | None = Field(
        None, description="public FHIR base URL; default http://HOST:PORT/fhir"
    )
    topics_dir: Path | None = Field(
        None, description="folder of SubscriptionTopic files; default: the topics Herald ships"
    )

    allow_http_endpoints: bool | None = Field(
        None, description="accept http:// endpoints; default: yes embedded, no distributed"
    )
    allow_private_endpoints: bool | None = Field(
        None, description="accept loopback/private endpoints; default: yes embedded, no distributed"
    )

    handshake_delay: float = Field(
        0.5, ge=0, description="seconds between answering a create and sending the handshake"
    )
    handshake_attempts: int = Field(3, ge=1, description="handshake tries before error")
    retry_delays: str = Field(
        "5,30,120,600,1800,3600,7200,14400,28800,43200",
        description="seconds between delivery attempts, comma-separated",
    )
    event_retention_days: float = Field(
        30, gt=0, description="days delivered events stay available to $events"
    )
    max_in_flight: int = Field(64, ge=1, description="concurrent notification POSTs, all endpoints")
    endpoint_concurrency: int = Field(
        4, ge=1, description="concurrent notification POSTs to one endpoint origin"
    )
    circuit_failures: int = Field(
        5, ge=1, description="consecutive failed POSTs to an origin that open its circuit"
    )
    circuit_cooldown: float = Field(
        30.0,
        gt=0,
        description="seconds an open circuit waits before a probe, at most (capped by the "
        "first retry delay; doubles after a failed probe, up to 10 minutes)",
    )
    relay_interval: float = Field(0.2, gt=0, description="seconds between outbox polls")
    registry_refresh: float = Field(
        1.0, gt=0, description="seconds between subscription registry polls (matcher, dispatcher)"
    )
    canvas_secret: str | None = Field(
        None,
        description="Standard Webhooks secret (whsec_<base64>) of POST /canvas/integration-tasks; "
        "required with HERALD_AUTH=smart; unset without authentication: no signature check",
    )
    auth: Literal["smart", "none"] | None = Field(
        None,
        description="smart (SMART Backend Services tokens) or none; default smart, except "
        "`herald run` bound to a loopback host",
    )
    auth_token_lifetime: int = Field(
        300, ge=30, le=3600, description="seconds an access token Herald issues stays valid"
    )
    auth_signing_key_file: Path | None = Field(
        None,
        description="JWK set (JSON, private keys) Herald signs access tokens with, first key "
        "signing; unset: keys kept in the database (`herald keys rotate`)",
    )
    auth_issuer: str | None = Field(
        None, description="issuer (iss) of an external authorization server's tokens"
    )
    auth_jwks_url: str | None = Field(
        None, description="JWKS URL of the external authorization server"
    )
    auth_audience: str | None = Field(
        None, description="audience (aud) external tokens must carry; default the FHIR base URL"
    )
    secrets_key: str | None = Field(
        None,
        description="Fernet keys (comma-separated, newest first) that encrypt channel.header "
        "values at rest; unset: stored as sent",
    )
    log_format: str = Field("json", description="json or text")
    log_level: str = Field("INFO")

    @field_validator("retry_delays")
    @classmethod
    def _check_delays(cls, value: str) -> str:
        delays = [float(v) for v in value.split(",") if v.strip()]
        if any(d < 0 for d in delays):
            raise ValueError("retry delays must be non-negative seconds")
        return value

    def auth_mode(self, role: str) -> str:
        """The authentication mode of a role: as set, else none for `run` on loopback, else
        smart."""
        if self.auth is not None:
            return self.auth
        return "none" if role == "run" and is_loopback(self.host) else "smart"

    @property
    def embedded(self) -> bool:
        """True without a Kafka bootstrap: all services in one process."""
        return not self.kafka_bootstrap

    @property
    def fhir_base(self) -> str:
        """The public FHIR base URL, without a trailing slash."""
        return (self.base_url or f"http://{self.host}:{self.port}/fhir").rstrip("/")

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
        return EndpointPolicy(allow_http=allow_http, allow_private=allow_private)

    def topic(self, name: str) -> str:
        """The Kafka topic name for a logical topic ('task-changes', 'notifications')."""
        return f"{self.kafka_topic_prefix}{name}"
