"""Fault injection under steady load against `herald run`: one process, a SQLite file, the
durable in-database bus.

The checks are those of test_faults.py: for each subscription, every acknowledged change got
exactly one event number, numbers 1..N without gaps, each delivered at least once and never
before its predecessor; duplicates are printed (run with -s to see the reports). Writes made
while Herald is down are attempted, not acknowledged.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.faults.conftest import StartEmbedded
from tests.faults.harness import (
    OUTAGE_SETTINGS,
    Load,
    Subscriber,
    check_load,
    check_subscription,
    endpoint_outage,
    events_count,
    metric,
    print_pauses,
    standard_subscriptions,
    subscribe,
)
from tests.support.fhir import FHIR_JSON

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

RATE = 30.0


def test_sigkill_right_after_201_and_during_catch_up(
    start_embedded: StartEmbedded, subscriber: Subscriber
) -> None:
    """SIGKILL right after a 201, restart on the same file and port, SIGKILL again while the
    backlog is being delivered, restart; the load goes on throughout."""
    herald = start_embedded()
    killed = threading.Event()

    def on_ack(i: int) -> None:
        # In the load's thread, right after the 201 of write 40: its bus record may not have
        # been consumed, nor its event numbered or delivered.
        if i == 40:
            herald.kill("run")
            killed.set()

    load = Load(herald.base_url, rate=RATE, seconds=10.0, on_ack=on_ack, hold=True)
    subs = standard_subscriptions(herald.base_url, subscriber, load)
    load.start()
    assert killed.wait(30)
    herald.start()
    time.sleep(1.0)
    herald.kill("run")
    herald.start()
    second_restart = time.monotonic()
    load.release_after(second_restart)
    load.join()
    assert herald.kills == ["run", "run"]
    assert load.acknowledged_after(second_restart) > 0, "Herald took no writes again"
    check_load(herald.base_url, subscriber, load, subs)
    print_pauses(herald, subscriber, load)


def test_sigkill_amid_grouped_writes_loses_no_acknowledged_write(
    start_embedded: StartEmbedded, subscriber: Subscriber
) -> None:
    """Sixteen writers at once, so that concurrent writes share a transaction (group commit);
    SIGKILL right after a 201 while others are in flight, restart on the same file: every
    write acknowledged before the kill is stored, numbered and delivered."""
    herald = start_embedded()
    killed = threading.Event()

    def on_ack(i: int) -> None:
        if i >= 120 and not killed.is_set():
            killed.set()
            herald.kill("run")

    load = Load(herald.base_url, rate=200.0, seconds=3.0, writers=16, on_ack=on_ack, hold=True)
    subs = standard_subscriptions(herald.base_url, subscriber, load)
    load.start()
    assert killed.wait(30)
    herald.start()
    restarted = time.monotonic()
    load.release_after(restarted)
    load.join()
    assert herald.kills == ["run"]
    assert load.acknowledged_after(restarted) > 0, "Herald took no writes again"
    check_load(herald.base_url, subscriber, load, subs)
    exposition = httpx.get(herald.base_url.removesuffix("/fhir") + "/metrics", timeout=10).text
    groups = metric(exposition, "herald_write_group_writes_count")
    writes = metric(exposition, "herald_write_group_writes_sum")
    print(f"after the restart: {writes:.0f} writes committed in {groups:.0f} transactions")
    assert writes > groups, "no two writes ever shared a transaction"


def test_sigterm_drains_and_restart_delivers_the_rest(
    start_embedded: StartEmbedded, subscriber: Subscriber
) -> None:
    """SIGTERM under load: exit 0 within the drain time; after a restart on the same file and
    port everything acknowledged is delivered."""
    herald = start_embedded()
    load = Load(herald.base_url, rate=RATE, seconds=8.0, hold=True)
    subs = standard_subscriptions(herald.base_url, subscriber, load)
    load.start()
    time.sleep(2.0)
    stopping = time.monotonic()
    code = herald.terminate("run")
    drained = time.monotonic() - stopping
    print(f"herald run exited {code} {drained:.1f} s after SIGTERM")
    assert code == 0, herald.logs()
    time.sleep(0.5)
    herald.start()
    restarted = time.monotonic()
    load.release_after(restarted)
    load.join()
    assert load.failures > 0, "the load never saw Herald down"
    assert load.acknowledged_after(restarted) > 0, "Herald took no writes again"
    check_load(herald.base_url, subscriber, load, subs)


def test_failing_endpoint_recovers_and_never_delays_others(
    start_embedded: StartEmbedded, subscriber: Subscriber
) -> None:
    """500s, then time-outs, then 200s again; a healthy endpoint meanwhile is served as usual."""
    herald = start_embedded(**OUTAGE_SETTINGS)
    endpoint_outage(herald.base_url, subscriber, RATE, 6.0)


def _wait_status(client: httpx.Client, subscription_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while client.get(f"/Subscription/{subscription_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"Subscription/{subscription_id} never {status}"
        time.sleep(0.05)


def _status_parameters(client: httpx.Client, subscription_id: str) -> dict[str, Any]:
    bundle = client.get(f"/Subscription/{subscription_id}/$status").json()
    return {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}


def test_retries_exhausted_then_reactivated_catches_up_with_events(
    start_embedded: StartEmbedded, subscriber: Subscriber
) -> None:
    """Under load an endpoint fails until its retries are exhausted: `error`, with the reason.
    Events are numbered meanwhile; the client re-activates, new events are pushed again and
    the skipped ones are read with $events. Other subscriptions are not disturbed."""
    herald = start_embedded(retry_delays="0.2,0.5", circuit_failures="3", circuit_cooldown="1")
    with Subscriber() as failing, httpx.Client(base_url=herald.base_url, timeout=10) as client:
        load = Load(herald.base_url, rate=RATE, seconds=8.0)
        subs = standard_subscriptions(herald.base_url, subscriber, load)
        failing_id = subscribe(herald.base_url, failing, "Task?status=requested")
        load.start()
        time.sleep(1.0)
        failing.mode = "error"
        _wait_status(client, failing_id, "error")
        read = client.get(f"/Subscription/{failing_id}").json()
        assert "delivery failed" in read["error"] and "500" in read["error"], read["error"]
        status = _status_parameters(client, failing_id)
        assert status["status"]["valueCode"] == "error"
        assert "500" in status["error"]["valueCodeableConcept"]["text"], status["error"]

        _, at_error = events_count(herald.base_url, failing_id)
        time.sleep(1.0)
        still, later = events_count(herald.base_url, failing_id)
        # Numbered while in error; the server does not re-activate by itself.
        assert still == "error"
        assert later > at_error, (at_error, later)

        failing.mode = "ok"
        read["status"] = "requested"
        response = client.put(
            f"/Subscription/{failing_id}", json=read, headers={"Content-Type": FHIR_JSON}
        )
        assert response.status_code == 200, response.text
        _wait_status(client, failing_id, "active")
        _, reactivated = events_count(herald.base_url, failing_id)
        load.join()

        check_load(herald.base_url, subscriber, load, subs)
        report = check_subscription(
            herald.base_url,
            failing,
            failing_id,
            set(load.acknowledged),
            set(load.attempted),
            refetched=True,
        )
        skipped = set(range(1, report.numbered + 1)) - report.pushed
        # What the re-activation skipped: at least the events numbered while in error, none
        # numbered after it; pushes resumed after them.
        assert set(range(at_error + 1, later + 1)) <= skipped, (at_error, later, skipped)
        assert max(skipped) <= reactivated, (reactivated, skipped)
        assert max(report.pushed) > reactivated, "no new event was pushed after re-activation"
        print(
            f"failing endpoint refused {failing.refused} POSTs; in error from event {at_error}, "
            f"re-activated at {reactivated} of {report.numbered}"
        )
