"""The states Herald keeps as types: subscription status, delivery outcome, circuit state.

Each is a StrEnum, so a member is the very string stored in the database, written on the wire
or used as a metric label, and a misspelt state is a type error instead of a silent mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SubscriptionStatus(StrEnum):
    """Subscription.status (R4 Subscription, as the Backport IG uses it)."""

    REQUESTED = "requested"
    """Registered; the handshake is still to be sent."""
    ACTIVE = "active"
    """Handshake answered; notifications are sent."""
    ERROR = "error"
    """Delivery failed for good; matching goes on, sending does not (until set to requested)."""
    OFF = "off"
    """Stopped by the client (or by a 410 Gone); nothing is matched or sent."""

    @property
    def live(self) -> bool:
        """Whether changes are still matched for the subscription (every status but off)."""
        return self is not SubscriptionStatus.OFF


CLIENT_STATUSES = frozenset({SubscriptionStatus.REQUESTED, SubscriptionStatus.OFF})
"""The statuses a client may set; active and error are the server's."""


class DeliveryResult(StrEnum):
    """What became of one notification POST (also the `outcome` label of its metric)."""

    SUCCESS = "success"
    """Any 2xx."""
    HTTP_ERROR = "http_error"
    """Any other status but 410."""
    GONE = "gone"
    """410 Gone: the subscriber wants no more; the subscription is turned off."""
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    CIRCUIT_OPEN = "circuit_open"
    """Not sent: the endpoint origin's circuit breaker is open."""
    REFUSED = "refused"
    """Not sent: the endpoint resolves only to addresses the endpoint policy refuses."""
    UNSENDABLE = "unsendable"
    """Not sent: the notification could not be encoded or written as an HTTP request."""

    @property
    def retriable(self) -> bool:
        """Whether the notification is tried again (on the subscription's retry schedule).

        A refused endpoint is not: retrying cannot change the policy.
        """
        return self not in (DeliveryResult.SUCCESS, DeliveryResult.GONE, DeliveryResult.REFUSED)

    @property
    def reached_endpoint(self) -> bool:
        """Whether a request went to the endpoint (only those feed its circuit breaker)."""
        return self not in (
            DeliveryResult.CIRCUIT_OPEN,
            DeliveryResult.REFUSED,
            DeliveryResult.UNSENDABLE,
        )


@dataclass(frozen=True)
class DeliveryOutcome:
    """What became of one POST, in Herald's words."""

    outcome: DeliveryResult
    status_code: int | None
    detail: str
    retry_after: float | None = None
    """Seconds the endpoint asked to wait (Retry-After), if it did."""

    @property
    def ok(self) -> bool:
        """Any 2xx."""
        return self.outcome is DeliveryResult.SUCCESS

    @property
    def retriable(self) -> bool:
        """Whether the notification is tried again."""
        return self.outcome.retriable

    @property
    def is_failure(self) -> bool:
        """Whether the outcome says the endpoint is unwell (not a client-side refusal).

        Time-outs, connection errors, 5xx and 429 count; other 4xx are the endpoint answering.
        """
        if self.outcome in (DeliveryResult.TIMEOUT, DeliveryResult.CONNECTION_ERROR):
            return True
        code = self.status_code
        return (
            self.outcome is DeliveryResult.HTTP_ERROR
            and code is not None
            and (code >= 500 or code == 429)
        )


class CircuitState(StrEnum):
    """The state of an endpoint origin's circuit breaker."""

    CLOSED = "closed"
    """POSTs go out."""
    OPEN = "open"
    """POSTs are skipped until the cool-down has passed."""
    HALF_OPEN = "half-open"
    """One probe POST goes out; its outcome closes or reopens the circuit."""
