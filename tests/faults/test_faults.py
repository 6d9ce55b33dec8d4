"""Fault injection under steady load: real processes, real Kafka, real PostgreSQL.

Each test writes matching Tasks at a steady rate while it breaks something, then checks for each
subscription ("all" Tasks, the "even" owner's, and more where a test needs them) that every
acknowledged change got exactly one event number, numbers 1..N without gaps, each delivered at
least once and never before its predecessor; duplicates are printed (run with -s to see the
reports). test_embedded_faults.py does the same against `herald run`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack

import pytest
from aiokafka.partitioner import murmur2

from tests.faults.conftest import StartCluster
from tests.faults.harness import (
    OUTAGE_SETTINGS,
    Cluster,
    Load,
    Subscriber,
    check_load,
    endpoint_outage,
    local_script,
    metric,
    own_kafka,
    own_postgres,
    print_pauses,
    standard_subscriptions,
    subscribe,
)
from tests.support.services import unavailable

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(240)]

RATE = 30.0
SECONDS = 5.0


def under_load(
    cluster: Cluster,
    subscriber: Subscriber,
    fault_at: float,
    fault: Callable[[], None],
    seconds: float = SECONDS,
) -> Load:
    """Subscribe, run the load, call `fault()` `fault_at` seconds in, wait for the load (until
    a write after the fault is acknowledged, however long recovery takes), check; print how
    long notifications paused after each kill."""
    load = Load(cluster.base_url, rate=RATE, seconds=seconds, hold=True)
    subs = standard_subscriptions(cluster.base_url, subscriber, load)
    load.start()
    time.sleep(fault_at)
    fault()
    load.release_after(time.monotonic())
    load.join()
    check_load(cluster.base_url, subscriber, load, subs)
    print_pauses(cluster, subscriber, load)
    return load


def test_sigkill_dispatcher(
    start_cluster: StartCluster, kafka_bootstrap: str, postgres_url: str, subscriber: Subscriber
) -> None:
    cluster = start_cluster(kafka_bootstrap, postgres_url)

    def fault() -> None:
        cluster.kill("dispatcher")
        time.sleep(1.0)  # restarted 1 s after the kill, as a supervisor would
        cluster.start("dispatcher")

    under_load(cluster, subscriber, 2.0, fault)


def test_sigkill_matcher(
    start_cluster: StartCluster, kafka_bootstrap: str, postgres_url: str, subscriber: Subscriber
) -> None:
    cluster = start_cluster(kafka_bootstrap, postgres_url)

    def fault() -> None:
        cluster.kill("matcher")
        time.sleep(1.0)
        cluster.start("matcher")

    under_load(cluster, subscriber, 2.0, fault)


def test_sigkill_ingest_right_after_201(
    start_cluster: StartCluster, kafka_bootstrap: str, postgres_url: str, subscriber: Subscriber
) -> None:
    cluster = start_cluster(kafka_bootstrap, postgres_url)
    killed = threading.Event()

    def on_ack(i: int) -> None:
        # In the load's thread, right after the 201 of write 40: the outbox row of that write
        # (and of those before it) may not have reached Kafka yet.
        if i == 40:
            cluster.kill("ingest")
            killed.set()

    load = Load(cluster.base_url, rate=RATE, seconds=SECONDS, on_ack=on_ack, hold=True)
    subs = standard_subscriptions(cluster.base_url, subscriber, load)
    load.start()
    assert killed.wait(30)
    cluster.start("ingest")
    restarted = time.monotonic()
    load.release_after(restarted)
    load.join()
    assert cluster.kills == ["ingest"]
    assert load.acknowledged_after(restarted) > 0, "ingest took no writes again"
    check_load(cluster.base_url, subscriber, load, subs)


# Two partitions: with two members in a consumer group each owns one, whatever the assignor.
PARTITIONS = 2

Work = Callable[[Cluster, str], float]
"""How much work an instance did so far, read from its /metrics."""


def partition_of(key: str) -> int:
    """The partition of a record key (Kafka's default partitioner: murmur2, as in Java)."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def task_partitions(load: Load) -> list[int]:
    """The task-changes partition of each Task the load will write, in order."""
    return [partition_of(load.task_id(i)) for i in range(int(load.rate * load.seconds))]


def windows(items: list[int], size: int) -> Iterator[list[int]]:
    """Every run of `size` consecutive items."""
    return (items[i : i + size] for i in range(len(items) - size + 1))


def delivered(cluster: Cluster, name: str) -> float:
    """Event notifications a dispatcher instance delivered."""
    return metric(
        cluster.metrics(name), "herald_delivery_attempts_total", kind="event", outcome="success"
    )


def consumed(cluster: Cluster, name: str) -> float:
    """Task changes a matcher instance processed."""
    return metric(cluster.metrics(name), "herald_changes_consumed_total")


def wait_work(cluster: Cluster, name: str, work: Work, timeout: float) -> float:
    """Wait until an instance did some work; how much it did."""
    deadline = time.monotonic() + timeout
    while (count := work(cluster, name)) == 0:
        assert time.monotonic() < deadline, f"{name}: no {work.__name__} in {timeout} s"
        time.sleep(0.2)
    return count


def rebalance(
    cluster: Cluster,
    subscriber: Subscriber,
    load: Load,
    subs: dict[str, str],
    role: str,
    work: Work,
) -> None:
    """Instances of a role in one consumer group, under the load: `<role>-2` joins (rebalance),
    the first is SIGKILLed, `<role>-3` joins. Each must do some work; then the usual checks."""
    second, third = f"{role}-2", f"{role}-3"
    load.start()
    time.sleep(1.0)
    cluster.start(role, name=second)
    wait_work(cluster, second, work, timeout=40)  # the group has rebalanced
    first = work(cluster, role)
    cluster.kill(role)
    cluster.start(role, name=third)
    # The group waits for the killed member's session to expire before it rebalances again.
    wait_work(cluster, third, work, timeout=40)
    time.sleep(1.0)
    load.stop()
    load.join()
    check_load(cluster.base_url, subscriber, load, subs)
    print_pauses(cluster, subscriber, load)  # the partitions moved to the others
    print(
        f"{work.__name__}: {role} {first:.0f} (until killed), "
        f"{second} {work(cluster, second):.0f}, {third} {work(cluster, third):.0f}"
    )
    assert first > 0, f"the first {role} did no work"


def test_dispatchers_rebalance_join_sigkill_join(
    start_cluster: StartCluster, kafka_bootstrap: str, postgres_url: str, subscriber: Subscriber
) -> None:
    """Dispatchers in one consumer group under load: a second one joins (rebalance), the first
    is SIGKILLed, a third joins. Each of them delivers a share; nothing is lost or renumbered."""
    cluster = start_cluster(kafka_bootstrap, postgres_url, kafka_partitions=str(PARTITIONS))
    load = Load(cluster.base_url, rate=20.0, seconds=60.0)
    subs = standard_subscriptions(cluster.base_url, subscriber, load)
    # Subscriptions to every Task until each partition has one, so each member has work.
    while len({partition_of(s) for s in subs.values() if s != subs["even"]}) < PARTITIONS:
        assert len(subs) < 20
        subs[f"all-{len(subs)}"] = subscribe(cluster.base_url, subscriber, "Task?status=requested")
    rebalance(cluster, subscriber, load, subs, "dispatcher", delivered)


def test_matchers_rebalance_join_sigkill_join(
    start_cluster: StartCluster, kafka_bootstrap: str, postgres_url: str, subscriber: Subscriber
) -> None:
    """Matchers in one consumer group under load: a second one joins (rebalance), the first is
    SIGKILLed, a third joins. Each of them matches a share; nothing is lost or renumbered."""
    cluster = start_cluster(kafka_bootstrap, postgres_url, kafka_partitions=str(PARTITIONS))
    load = Load(cluster.base_url, rate=20.0, seconds=60.0)
    # Task ids are the keys of the changes: a run whose every second of load (20 writes) reaches
    # both partitions, so whichever partition a member owns, it has work.
    while not all(len(set(w)) == PARTITIONS for w in windows(task_partitions(load), 20)):
        load.run = uuid.uuid4().hex[:8]
    subs = standard_subscriptions(cluster.base_url, subscriber, load)
    rebalance(cluster, subscriber, load, subs, "matcher", consumed)
    per_partition = Counter(partition_of(t) for t in load.acknowledged)
    print(f"acknowledged changes by task-changes partition: {sorted(per_partition.items())}")


@pytest.fixture
def kafka_of_its_own() -> Iterator[dict[str, str]]:
    """A Kafka broker of this test only (the session's is shared)."""
    yield from _of_its_own(own_kafka, "Kafka broker")


@pytest.fixture
def postgres_of_its_own() -> Iterator[dict[str, str]]:
    """A PostgreSQL server of this test only."""
    yield from _of_its_own(own_postgres, "PostgreSQL server")


def _of_its_own(
    start: Callable[[], AbstractContextManager[dict[str, str]]], what: str
) -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        try:
            env = stack.enter_context(start())
        except AssertionError as exc:
            unavailable(f"a dedicated {what} could not start: {exc}")
        yield env


def test_restart_kafka(
    kafka_of_its_own: dict[str, str],  # first: set up before the cluster, torn down after it
    start_cluster: StartCluster,
    postgres_url: str,
    subscriber: Subscriber,
) -> None:
    kafka = kafka_of_its_own
    cluster = start_cluster(kafka["address"], postgres_url)

    def fault() -> None:
        local_script("kafka.sh", "stop", kafka)
        time.sleep(1.0)
        local_script("kafka.sh", "start", {**kafka, "KAFKA_KEEP_DATA": "1"})

    under_load(cluster, subscriber, 1.5, fault)


def test_restart_postgres(
    postgres_of_its_own: dict[str, str],  # first: set up before the cluster, torn down after it
    start_cluster: StartCluster,
    kafka_bootstrap: str,
    subscriber: Subscriber,
) -> None:
    postgres = postgres_of_its_own
    cluster = start_cluster(kafka_bootstrap, postgres["address"])
    restarted = 0.0

    def fault() -> None:
        nonlocal restarted
        local_script("postgres.sh", "stop", postgres)
        time.sleep(1.5)
        local_script("postgres.sh", "start", {**postgres, "PG_KEEP_DATA": "1"})
        restarted = time.monotonic()

    load = under_load(cluster, subscriber, 1.5, fault, seconds=7.0)
    # Writes fail while the database is down; once it is back, ingest takes them again.
    assert load.acknowledged_after(restarted) > 0


def test_failing_endpoint_recovers_and_never_delays_others(
    start_cluster: StartCluster, kafka_bootstrap: str, postgres_url: str, subscriber: Subscriber
) -> None:
    """500s, then time-outs, then 200s again; a healthy endpoint meanwhile is served as usual."""
    cluster = start_cluster(kafka_bootstrap, postgres_url, **OUTAGE_SETTINGS)
    endpoint_outage(cluster.base_url, subscriber, RATE, SECONDS)


def test_dispatcher_restarted_soon_after_start_serves_a_new_subscription(
    start_cluster: StartCluster, kafka_bootstrap: str, postgres_url: str, subscriber: Subscriber
) -> None:
    """A dispatcher stopped and started again a few seconds after the cluster came up (its group
    has committed nothing yet) handshakes a subscription created afterwards and delivers the
    event of a matching Task."""
    cluster = start_cluster(kafka_bootstrap, postgres_url)
    time.sleep(3.0)
    assert cluster.terminate("dispatcher") == 0
    cluster.start("dispatcher")
    load = Load(cluster.base_url, rate=1.0, seconds=1.0)  # one matching Task
    sub = subscribe(cluster.base_url, subscriber, f"Task?owner={load.owner(0)}")
    load.start()
    load.join()
    assert load.acknowledged == [load.task_id(0)]
    deadline = time.monotonic() + 30
    while not any(d.events for d in subscriber.of(sub)):
        assert time.monotonic() < deadline, cluster.metrics("dispatcher")
        time.sleep(0.2)
    assert next(d.events for d in subscriber.of(sub) if d.events) == ((1, load.task_id(0)),)
    assert metric(cluster.metrics("dispatcher"), "herald_events_recorded_total") == 1
