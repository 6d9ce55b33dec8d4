"""Failover benchmark: how long a consumer group leaves partitions idle after a member is SIGKILLed.

Not a test. Against a Kafka broker of its own (deploy/local), members are OS processes holding a
Herald `KafkaConsumer` in one group over a topic of 2 partitions:

- **restart**: one member owns both partitions, is SIGKILLed, and a new process starts 1 s later
  (as a supervisor would restart it); printed: the time from the kill until the new process owns
  both partitions, and from its consumer's start until then.
- **survivor**: two members, one is SIGKILLed and not restarted; printed: the time from the kill
  until the survivor owns both partitions.

Each scenario runs with the consumer settings before static membership (dynamic members, 10 s
session timeout, 3 s heartbeats: aiokafka's defaults) and with Herald's defaults now (static
members named by HERALD_INSTANCE_ID, 6 s session, 1 s heartbeats).

Then the whole failover (`--herald`, on by default): `herald ingest`, `matcher` and `dispatcher`
on that broker and a PostgreSQL server of its own, Tasks written at a steady rate to two
subscriptions of a loopback subscriber; the matcher or the dispatcher is SIGKILLed and started
again under its name 1 s later. Printed per kill: when the new process was ready, and when
notifications of writes made after the kill had reached every subscription again (the pause a
subscriber sees: process start, rejoining the group, catching up). Herald's modules are
byte-compiled first, as the container image does at build time.

    .venv/bin/python bench/failover.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.faults.harness: a Kafka broker of its own

from aiokafka.partitioner import murmur2  # noqa: E402

import herald  # noqa: E402
from herald.runtime.bus.kafka import KafkaConsumer, Membership, ensure_topics  # noqa: E402

PARTITIONS = 2
CONFIGURATIONS = {
    "before: dynamic, session 10 s, heartbeat 3 s": (False, 10.0, 3.0),
    "now: static, session 6 s, heartbeat 1 s": (True, 6.0, 1.0),
}


def keys_of_every_partition() -> list[str]:
    """One record key per partition (Kafka's default partitioner)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < PARTITIONS:
        key = f"k{n}"
        found.setdefault((murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS, key)
        n += 1
    return list(found.values())


async def member(bootstrap: str, group: str, topic: str, membership: Membership) -> None:
    """A group member that prints `started <t>` and then `owns <n> <t>` whenever the number of
    partitions it owns changes (t: time.monotonic(), one clock for all processes)."""
    keys = keys_of_every_partition()
    consumer = KafkaConsumer(bootstrap, group, topic, membership)
    print(f"started {time.monotonic()}", flush=True)
    await consumer.start()
    owned = -1
    while True:
        now = sum(consumer.owns(k) for k in keys)
        if now != owned:
            owned = now
            print(f"owns {owned} {time.monotonic()}", flush=True)
        await consumer.fetch(timeout=0.05, max_records=10)


class Member:
    """A member process and what it printed."""

    def __init__(
        self, bootstrap: str, group: str, topic: str, name: str, static: bool, *timing: float
    ) -> None:
        instance = name if static else "-"
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "_member",
                bootstrap,
                group,
                topic,
                instance,
                *map(str, timing),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started = 0.0

    def wait_owns(self, count: int, timeout: float = 120) -> float:
        """Wait until the member owns `count` partitions; when that happened."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            word, *rest = line.split()
            if word == "started":
                self.started = float(rest[0])
            elif word == "owns" and int(rest[0]) == count:
                return float(rest[1])
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"the member never owned {count} partitions")

    def kill(self) -> float:
        """SIGKILL; when it died."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return time.monotonic()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def restart(
    bootstrap: str, topic: str, static: bool, session: float, heartbeat: float
) -> tuple[float, float]:
    """Kill to the restarted member owning both partitions, and its consumer's start to then."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    first = Member(bootstrap, group, topic, "m0", static, session, heartbeat)
    first.wait_owns(PARTITIONS)
    time.sleep(1.0)  # a steady member
    killed = first.kill()
    time.sleep(1.0)
    again = Member(bootstrap, group, topic, "m0", static, session, heartbeat)
    try:
        owns = again.wait_owns(PARTITIONS)
    finally:
        again.stop()
    return owns - killed, owns - again.started


def survivor(bootstrap: str, topic: str, static: bool, session: float, heartbeat: float) -> float:
    """Kill to the survivor owning both partitions."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    first = Member(bootstrap, group, topic, "m0", static, session, heartbeat)
    first.wait_owns(PARTITIONS)
    second = Member(bootstrap, group, topic, "m1", static, session, heartbeat)
    try:
        second.wait_owns(1)
        time.sleep(2.0)  # both steady
        killed = first.kill()
        return second.wait_owns(PARTITIONS) - killed
    finally:
        second.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def herald_failover(
    bootstrap: str, postgres: str, role: str, folder: Path
) -> tuple[float, float, float]:
    """SIGKILL `role` under load, start it again 1 s later: (ready, notifications resumed)
    seconds after the kill, and the CPU seconds the new process spent until it was ready."""
    from tests.faults.harness import Cluster, Load, Subscriber, resumed, standard_subscriptions
    from tests.support.services import create_database

    database = asyncio.run(create_database(postgres, f"failover_{uuid.uuid4().hex[:8]}"))
    cluster = Cluster(bootstrap, database, folder / uuid.uuid4().hex[:8], log_level="WARNING")
    with Subscriber() as subscriber:
        cluster.start()
        try:
            load = Load(cluster.base_url, rate=30.0, seconds=6.0, hold=True)
            standard_subscriptions(cluster.base_url, subscriber, load)
            load.start()
            time.sleep(3.0)  # steady
            cluster.kill(role)
            killed = cluster.killed_at[-1]
            time.sleep(1.0)  # restarted 1 s after the kill, as a supervisor would
            cluster.start(role)
            ready = cluster.ready_at[-1][1]
            started_cpu = cpu_seconds(cluster.processes[role].process.pid)
            load.release_after(time.monotonic())
            load.join()
            deadline = time.monotonic() + 60
            while (pause := resumed(subscriber, load, killed)) is None:
                assert time.monotonic() < deadline, "notifications never resumed"
                time.sleep(0.2)
            time.sleep(2.0)  # every subscription's first notification after the kill
            pause = resumed(subscriber, load, killed)
            assert pause is not None
            return ready - killed, pause, started_cpu
        finally:
            cluster.stop()


def whole_failover(bootstrap: str, rounds: int) -> None:
    """Print the pause a subscriber sees when the matcher or the dispatcher is SIGKILLed."""
    import tempfile

    from tests.faults.harness import own_postgres

    # Installed images ship byte-compiled modules; an editable checkout with
    # PYTHONDONTWRITEBYTECODE set would compile Herald's sources in every process it starts.
    for package in herald.__path__:
        compileall.compile_dir(package, quiet=1)
    with own_postgres() as postgres, tempfile.TemporaryDirectory() as folder:
        for role in ("dispatcher", "matcher"):
            runs = [
                herald_failover(bootstrap, postgres["address"], role, Path(folder))
                for _ in range(rounds)
            ]
            print(
                f"herald {role} SIGKILLed under 30 Tasks/s, restarted 1 s later: ready "
                f"{statistics.median(r[0] for r in runs):.2f} s after the kill (its start: "
                f"{statistics.median(r[2] for r in runs):.2f} s of CPU), notifications resumed "
                f"{statistics.median(r[1] for r in runs):.2f} s after the kill, "
                f"{statistics.median(r[1] - r[0] for r in runs):.2f} s after it was ready (all, "
                f"ready/resumed/CPU: {', '.join('/'.join(f'{x:.2f}' for x in r) for r in runs)})",
                flush=True,
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_member":
        bootstrap, group, topic, instance, *timing = sys.argv[2:8]
        membership = Membership(
            None if instance == "-" else instance, float(timing[0]), float(timing[1])
        )
        asyncio.run(member(bootstrap, group, topic, membership))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--herald",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the whole failover of Herald's processes under load",
    )
    parser.add_argument(
        "--consumers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the Kafka part alone: consumer processes in one group",
    )
    args = parser.parse_args()
    from tests.faults.harness import own_kafka

    with own_kafka() as kafka:
        bootstrap = kafka["address"]
        topic = f"bench-failover-{uuid.uuid4().hex[:8]}"
        asyncio.run(ensure_topics(bootstrap, [topic], PARTITIONS, 1))
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        for name, (static, session, heartbeat) in CONFIGURATIONS.items() if args.consumers else ():
            restarts = [
                restart(bootstrap, topic, static, session, heartbeat) for _ in range(args.rounds)
            ]
            survivors = [
                survivor(bootstrap, topic, static, session, heartbeat) for _ in range(args.rounds)
            ]
            print(
                f"{name}:\n"
                f"  restarted 1 s after the kill: owns its partitions again "
                f"{statistics.median(r[0] for r in restarts):.2f} s after the kill "
                f"({statistics.median(r[1] for r in restarts):.2f} s after its consumer started; "
                f"all {', '.join(f'{r[0]:.2f}' for r in restarts)})\n"
                f"  not restarted: the survivor owns them {statistics.median(survivors):.2f} s "
                f"after the kill (all {', '.join(f'{s:.2f}' for s in survivors)})",
                flush=True,
            )
        if args.herald:
            whole_failover(bootstrap, args.rounds)


if __name__ == "__main__":
    main()
