"""The per-origin circuit breaker and concurrency limit of the dispatcher."""

from __future__ import annotations

import asyncio

from herald.core.states import CircuitState, DeliveryOutcome, DeliveryResult
from herald.dispatcher.circuit_breakers import CircuitBreakers, origin

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
OK = DeliveryOutcome(DeliveryResult.SUCCESS, 200, "HTTP 200")
DOWN = DeliveryOutcome(DeliveryResult.HTTP_ERROR, 503, "HTTP 503")
TIMEOUT = DeliveryOutcome(DeliveryResult.TIMEOUT, None, "no response")
REFUSED = DeliveryOutcome(DeliveryResult.HTTP_ERROR, 400, "HTTP 400")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_origin_keys_scheme_host_and_port() -> None:
    assert origin("https://Example.org/a/b") == "https://example.org:443"
    assert origin("http://example.org:8080/x") == "http://example.org:8080"
    assert origin("http://example.org/x") == origin("http://EXAMPLE.org:80/y")


def test_what_counts_as_failure() -> None:
    assert DOWN.is_failure and TIMEOUT.is_failure
    assert DeliveryOutcome(DeliveryResult.HTTP_ERROR, 429, "HTTP 429").is_failure
    assert DeliveryOutcome(DeliveryResult.CONNECTION_ERROR, None, "refused").is_failure
    assert not REFUSED.is_failure and not OK.is_failure
    assert not DeliveryOutcome(DeliveryResult.GONE, 410, "gone").is_failure


def test_what_is_tried_again() -> None:
    assert {r for r in DeliveryResult if r.retriable} == {
        DeliveryResult.HTTP_ERROR,
        DeliveryResult.TIMEOUT,
        DeliveryResult.CONNECTION_ERROR,
        DeliveryResult.CIRCUIT_OPEN,
        DeliveryResult.UNSENDABLE,
    }
    assert REFUSED.retriable and not OK.retriable
    # Never sent: they say nothing of the endpoint's health, so the breaker does not hear them.
    assert {r for r in DeliveryResult if not r.reached_endpoint} == {
        DeliveryResult.CIRCUIT_OPEN,
        DeliveryResult.REFUSED,
        DeliveryResult.UNSENDABLE,
    }


def test_opens_after_consecutive_failures_then_probes_once() -> None:
    clock = Clock()
    changes: list[int] = []
    endpoints = CircuitBreakers(failures=3, cooldown=10, clock=clock, on_change=changes.append)
    e = endpoints.get("http://a.example/x")
    for outcome in (DOWN, DOWN, OK, DOWN, DOWN):  # a success resets the count
        assert endpoints.admit(e)
        endpoints.report(e, outcome)
    assert e.state == CLOSED
    assert endpoints.admit(e)
    endpoints.report(e, TIMEOUT)
    assert e.state == OPEN and changes == [1] and not e.recovered.is_set()
    assert not endpoints.admit(e)
    assert endpoints.skipped(e).outcome is DeliveryResult.CIRCUIT_OPEN
    clock.now += 10
    assert endpoints.admit(e)  # the probe
    assert e.state == HALF_OPEN
    assert not endpoints.admit(e)  # only one probe at a time
    endpoints.report(e, DOWN, probe=True)
    assert e.state == OPEN and e.cooldown == 20  # backs off
    clock.now += 19
    assert not endpoints.admit(e)
    clock.now += 1
    assert endpoints.admit(e)
    endpoints.report(e, OK, probe=True)
    assert e.state == CLOSED and e.recovered.is_set() and changes == [1, 0] and not e.probing
    # Another origin is unaffected throughout.
    assert endpoints.admit(endpoints.get("http://b.example/x"))


async def test_concurrency_limit_per_origin() -> None:
    endpoints = CircuitBreakers(concurrency=2)
    busy = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    async def post(host: str) -> None:
        async with endpoints.slot(endpoints.get(f"http://{host}.example/hook")):
            busy[host] += 1
            peak[host] = max(peak[host], busy[host])
            await asyncio.sleep(0.01)
            busy[host] -= 1

    await asyncio.gather(*(post(h) for h in "ab" * 10))
    assert peak == {"a": 2, "b": 2}


def test_cooldown_never_coarser_than_the_first_retry_delay() -> None:
    from herald.runtime.settings import Settings

    assert Settings(retry_delays="5,30,120").circuit_cooldown_seconds == 5
    assert Settings(retry_delays="0.5,1", circuit_cooldown=30).circuit_cooldown_seconds == 0.5
    assert Settings(retry_delays="60,120", circuit_cooldown=30).circuit_cooldown_seconds == 30


async def test_an_open_circuit_marks_a_probe_due_for_one_waiting_worker() -> None:
    breakers = CircuitBreakers(failures=1, cooldown=0.05, max_cooldown=0.1)
    e = breakers.get("http://a.example/x")
    breakers.report(e, DOWN)
    assert e.state == OPEN and not e.probe_due.is_set()
    await asyncio.wait_for(e.probe_due.wait(), 10)
    assert breakers.take_probe(e) and e.state == HALF_OPEN
    assert not breakers.take_probe(e)  # one worker takes it
    assert breakers.admit(e) and not breakers.admit(e)  # its POST is the only probe
    breakers.report(e, DOWN, probe=True)
    assert e.state == OPEN and e.cooldown == 0.1  # backs off, up to max_cooldown
    await asyncio.wait_for(e.probe_due.wait(), 10)
    assert breakers.take_probe(e) and breakers.admit(e)
    breakers.report(e, OK, probe=True)
    assert e.state == CLOSED and e.recovered.is_set()
    assert not e.probe_due.is_set() and e.timer is None
