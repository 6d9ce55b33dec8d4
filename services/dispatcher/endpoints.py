"""Per-endpoint back-pressure: a concurrency limit and a circuit breaker per endpoint origin.

Subscriptions that name the same origin (scheme, host and port) share one `Endpoint`:

- at most `concurrency` POSTs to that origin are in flight at once. The per-endpoint slot is
  taken *before* a slot of the global in-flight bound, so a slow origin holds at most
  `concurrency` global slots and everyone else keeps the rest;
- after `failures` consecutive failed POSTs (time-out, connection error, 5xx, 429) the circuit
  opens: POSTs to the origin are not made for `cooldown` seconds. Then it is half-open: one
  POST (the probe) goes out, the others are still skipped; a success closes the circuit, a
  failure opens it again for twice the previous cool-down (up to `max_cooldown`).
- while the circuit is open, a timer marks a probe due when the cool-down is over
  (`probe_due`): one worker waiting out a retry for that origin takes it and makes its POST
  then, instead of when its own retry would be due. So an origin that comes back is found
  within about `max_cooldown` seconds (HERALD_CIRCUIT_MAX_COOLDOWN), whatever the retry
  schedules of its subscriptions say, and a dead origin still gets one POST per cool-down.

A skipped POST is reported as the outcome `circuit_open`; the subscription's worker treats it as
a failed attempt *at the time its retry was due*. Each subscription keeps its own retry schedule,
so an open circuit never uses up the schedule faster than time passes; and the attempt after
which a subscription would move to `error` is always made, open circuit or not, so a subscription
never ends in `error` without a real failed POST (nor misses a recovery the breaker has not
seen). When a probe closes the circuit, the workers waiting out a retry for that origin wake
and deliver at once. Workers are one task per subscription and only wait on their own origin's
slots, so a dead endpoint never delays other subscriptions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from herald.runtime.sender import DeliveryOutcome

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


def origin(url: str) -> str:
    """scheme://host:port of an endpoint URL (the key of its limits)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def is_failure(outcome: DeliveryOutcome) -> bool:
    """Whether an outcome says the endpoint is unwell (not a client-side refusal)."""
    if outcome.outcome in ("timeout", "connection_error"):
        return True
    code = outcome.status_code
    return outcome.outcome == "http_error" and code is not None and (code >= 500 or code == 429)


@dataclass
class Endpoint:
    """The state of one origin."""

    slots: asyncio.Semaphore
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    cooldown: float = 0.0
    probing: bool = False
    last_failure: str = ""
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the circuit is closed; workers waiting out a retry wake when it closes."""
    probe_due: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when an open circuit's cool-down is over and no worker has taken the probe yet."""
    timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.recovered.set()


@dataclass
class Endpoints:
    """Every origin one dispatcher talks to."""

    concurrency: int = 4
    failures: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[int], None] | None = None
    """Called with the number of open (or half-open) circuits when it changes."""
    _endpoints: dict[str, Endpoint] = field(default_factory=dict)
    _by_url: dict[str, Endpoint] = field(default_factory=dict)
    """Endpoint URLs already seen (every POST asks; parsing the URL each time is wasted)."""

    def get(self, url: str) -> Endpoint:
        """The state of the origin of `url`."""
        endpoint = self._by_url.get(url)
        if endpoint is None:
            key = origin(url)
            endpoint = self._endpoints.get(key)
            if endpoint is None:
                endpoint = self._endpoints[key] = Endpoint(asyncio.Semaphore(self.concurrency))
            self._by_url[url] = endpoint
        return endpoint

    def open_count(self) -> int:
        """Origins whose circuit is not closed."""
        return sum(1 for e in self._endpoints.values() if e.state != CLOSED)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.open_count())

    def admit(self, endpoint: Endpoint) -> bool:
        """Whether a POST may go out now; a half-open circuit admits one probe at a time."""
        if endpoint.state == CLOSED:
            return True
        if endpoint.state == OPEN:
            if self.clock() - endpoint.opened_at < endpoint.cooldown:
                return False
            endpoint.state = HALF_OPEN
            endpoint.probe_due.clear()  # this POST is the probe
        if endpoint.probing:
            return False
        endpoint.probing = True
        return True

    def report(self, endpoint: Endpoint, outcome: DeliveryOutcome, *, probe: bool = False) -> None:
        """Feed the outcome of a POST into the breaker; `probe`: it was the half-open probe."""
        if probe:
            endpoint.probing = False
        if not is_failure(outcome):
            endpoint.failures = 0
            if endpoint.state != CLOSED:
                endpoint.state = CLOSED
                endpoint.cooldown = 0.0
                self._schedule_probe(endpoint, None)
                endpoint.recovered.set()
                self._changed()
            return
        endpoint.failures += 1
        endpoint.last_failure = outcome.detail
        if endpoint.state == CLOSED and endpoint.failures >= self.failures:
            endpoint.state = OPEN
            endpoint.opened_at = self.clock()
            endpoint.cooldown = min(self.cooldown, self.max_cooldown)
            self._schedule_probe(endpoint, endpoint.cooldown)
            endpoint.recovered.clear()
            self._changed()
        elif endpoint.state == HALF_OPEN and probe:
            endpoint.state = OPEN
            endpoint.opened_at = self.clock()
            endpoint.cooldown = min(max(endpoint.cooldown, self.cooldown) * 2, self.max_cooldown)
            self._schedule_probe(endpoint, endpoint.cooldown)

    def _schedule_probe(self, endpoint: Endpoint, after: float | None) -> None:
        """Mark a probe due `after` seconds from now (None: no probe is wanted)."""
        endpoint.probe_due.clear()
        if endpoint.timer is not None:
            endpoint.timer.cancel()
            endpoint.timer = None
        if after is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop, so nobody is waiting for a probe
            return
        endpoint.timer = loop.call_later(after, endpoint.probe_due.set)

    def take_probe(self, endpoint: Endpoint) -> bool:
        """Whether the caller, a worker woken by `probe_due`, makes the probe (one of them does)."""
        if not endpoint.probe_due.is_set():
            return False
        endpoint.probe_due.clear()
        if endpoint.state != OPEN:  # a worker whose retry was due is probing already
            return False
        endpoint.state = HALF_OPEN  # the timer may fire a hair before the clock says so
        return True

    def skipped(self, endpoint: Endpoint) -> DeliveryOutcome:
        """The outcome of a POST the open circuit did not make."""
        reason = f"; last failure: {endpoint.last_failure}" if endpoint.last_failure else ""
        return DeliveryOutcome(
            "circuit_open", None, f"the endpoint's circuit breaker is open{reason}"
        )

    @asynccontextmanager
    async def slot(self, endpoint: Endpoint) -> AsyncIterator[None]:
        """Hold one of the origin's concurrency slots."""
        async with endpoint.slots:
            yield
