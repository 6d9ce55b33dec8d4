"""Circuit breakers: a concurrency limit and a circuit breaker per endpoint origin.

Subscriptions that name the same origin (scheme, host and port) share one `Circuit`:

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
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from herald.core.states import CircuitState, DeliveryOutcome, DeliveryResult
from herald.runtime.slots import Slots

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def origin(url: str) -> str:
    """scheme://host:port of an endpoint URL (the key of its limits)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass
class Circuit:
    """The state of one origin."""

    slots: Slots
    state: CircuitState = CLOSED
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
class CircuitBreakers:
    """Every origin one dispatcher talks to."""

    concurrency: int = 4
    failures: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[int], None] | None = None
    """Called with the number of open (or half-open) circuits when it changes."""
    _circuits: dict[str, Circuit] = field(default_factory=dict)
    _by_url: dict[str, Circuit] = field(default_factory=dict)
    """Endpoint URLs already seen (every POST asks; parsing the URL each time is wasted)."""

    def get(self, url: str) -> Circuit:
        """The state of the origin of `url`."""
        circuit = self._by_url.get(url)
        if circuit is None:
            key = origin(url)
            circuit = self._circuits.get(key)
            if circuit is None:
                circuit = self._circuits[key] = Circuit(Slots(self.concurrency))
            self._by_url[url] = circuit
        return circuit

    def open_count(self) -> int:
        """Origins whose circuit is not closed."""
        return sum(1 for e in self._circuits.values() if e.state != CLOSED)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.open_count())

    def admit(self, circuit: Circuit) -> bool:
        """Whether a POST may go out now; a half-open circuit admits one probe at a time."""
        if circuit.state == CLOSED:
            return True
        if circuit.state == OPEN:
            if self.clock() - circuit.opened_at < circuit.cooldown:
                return False
            circuit.state = HALF_OPEN
            circuit.probe_due.clear()  # this POST is the probe
        if circuit.probing:
            return False
        circuit.probing = True
        return True

    def report(self, circuit: Circuit, outcome: DeliveryOutcome, *, probe: bool = False) -> None:
        """Feed the outcome of a POST into the breaker; `probe`: it was the half-open probe."""
        if probe:
            circuit.probing = False
        if not outcome.is_failure:
            circuit.failures = 0
            if circuit.state != CLOSED:
                circuit.state = CLOSED
                circuit.cooldown = 0.0
                self._schedule_probe(circuit, None)
                circuit.recovered.set()
                self._changed()
            return
        circuit.failures += 1
        circuit.last_failure = outcome.detail
        if circuit.state == CLOSED and circuit.failures >= self.failures:
            circuit.state = OPEN
            circuit.opened_at = self.clock()
            circuit.cooldown = min(self.cooldown, self.max_cooldown)
            self._schedule_probe(circuit, circuit.cooldown)
            circuit.recovered.clear()
            self._changed()
        elif circuit.state == HALF_OPEN and probe:
            circuit.state = OPEN
            circuit.opened_at = self.clock()
            circuit.cooldown = min(max(circuit.cooldown, self.cooldown) * 2, self.max_cooldown)
            self._schedule_probe(circuit, circuit.cooldown)

    def _schedule_probe(self, circuit: Circuit, after: float | None) -> None:
        """Mark a probe due `after` seconds from now (None: no probe is wanted)."""
        circuit.probe_due.clear()
        if circuit.timer is not None:
            circuit.timer.cancel()
            circuit.timer = None
        if after is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop, so nobody is waiting for a probe
            return
        circuit.timer = loop.call_later(after, circuit.probe_due.set)

    def take_probe(self, circuit: Circuit) -> bool:
        """Whether the caller, a worker woken by `probe_due`, makes the probe (one of them does)."""
        if not circuit.probe_due.is_set():
            return False
        circuit.probe_due.clear()
        if circuit.state != OPEN:  # a worker whose retry was due is probing already
            return False
        circuit.state = HALF_OPEN  # the timer may fire a hair before the clock says so
        return True

    def skipped(self, circuit: Circuit) -> DeliveryOutcome:
        """The outcome of a POST the open circuit did not make."""
        reason = f"; last failure: {circuit.last_failure}" if circuit.last_failure else ""
        return DeliveryOutcome(
            DeliveryResult.CIRCUIT_OPEN, None, f"the circuit's circuit breaker is open{reason}"
        )

    def slot(self, circuit: Circuit) -> Slots:
        """The origin's concurrency slots, one to hold with `async with` (or take and
        release)."""
        return circuit.slots
