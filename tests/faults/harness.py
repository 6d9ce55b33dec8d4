"""Fault-injection harness: Herald as three OS processes, a loopback subscriber that can misbehave,
a steady Task load that records what Herald acknowledged, and the delivery checks.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import local_servers
from tests.support.fhir import BACKPORT, FHIR_JSON, backport_subscription
from tests.support.herald import HeraldProcess, herald_env
from tests.support.services import free_port

ROLES = ("ingest", "matcher", "dispatcher")


# --- the subscriber -------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One notification the subscriber accepted (answered 2xx)."""

    at: float
    subscription_id: str
    kind: str
    events: tuple[tuple[int, str], ...]
    """(event number, Task id) in Bundle order."""


def _parse(body: dict[str, Any]) -> Delivery:
    status = body["entry"][0]["resource"]
    subscription_id, kind, events = "", "", []
    for p in status["parameter"]:
        if p["name"] == "subscription":
            subscription_id = p["valueReference"]["reference"].rsplit("/", 1)[-1]
        elif p["name"] == "type":
            kind = p["valueCode"]
        elif p["name"] == "notification-event":
            parts = {q["name"]: q for q in p["part"]}
            number = int(parts["event-number"]["valueString"])
            focus = parts["focus"]["valueReference"]["reference"].rsplit("/", 1)[-1]
            events.append((number, focus))
    return Delivery(time.monotonic(), subscription_id, kind, tuple(events))


class Subscriber:
    """A loopback endpoint. mode: "ok" (200), "error" (500) or "timeout" (answers too late)."""

    def __init__(self, late: float = 2.5) -> None:
        self.deliveries: list[Delivery] = []
        self.refused = 0
        self.mode = "ok"
        self.late = late
        self._lock = threading.Lock()
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = subscriber.mode
                if mode == "timeout":
                    time.sleep(subscriber.late)
                if mode != "ok":
                    with subscriber._lock:
                        subscriber.refused += 1
                    self._answer(500 if mode == "error" else 503)
                    return
                delivery = _parse(json.loads(raw))
                with subscriber._lock:
                    subscriber.deliveries.append(delivery)
                self._answer(200)

            def _answer(self, code: int) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (time-out)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/notify"

    def __enter__(self) -> Subscriber:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of(self, subscription_id: str) -> list[Delivery]:
        """Accepted event notifications of one subscription, in arrival order."""
        with self._lock:
            return [
                d
                for d in self.deliveries
                if d.subscription_id == subscription_id and d.kind == "event-notification"
            ]

    def handshaken(self, subscription_id: str) -> bool:
        with self._lock:
            return any(
                d.subscription_id == subscription_id and d.kind == "handshake"
                for d in self.deliveries
            )


# --- Herald ---------------------------------------------------------------------------------


class Processes:
    """Herald processes by instance name; each can be killed and started again under its name.

    Every incarnation logs to its own folder, so the logs of killed processes are kept.
    """

    def __init__(self, log_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.common = {
            "allow_http_endpoints": "true",
            "allow_private_endpoints": "true",
            "handshake_delay": "0.1",
            "base_url": self.base_url,
            "log_level": "WARNING",
            **settings,
        }
        self.processes: dict[str, HeraldProcess] = {}
        self.retired: list[tuple[str, HeraldProcess]] = []
        """Processes killed or stopped before the end, with their instance names."""
        self.incarnations = 0
        self.kills: list[str] = []
        self.killed_at: list[float] = []
        """time.monotonic() of each kill, in the order of `kills`."""
        self.ready_at: list[tuple[str, float]] = []
        """(instance name, time.monotonic()) of each start, once ready."""

    def _launch(self, name: str, role: str, ready_url: str, **settings: str) -> HeraldProcess:
        """Start `herald <role>` as instance `name` (not waiting for it to be ready)."""
        assert name not in self.processes, f"{name} is still running"
        self.incarnations += 1
        folder = self.log_dir / f"{self.incarnations:02d}-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        env = herald_env(**{**self.common, **settings})
        process = self.processes[name] = HeraldProcess(role, env, folder, ready_url)
        return process

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no goodbye."""
        process = self.processes.pop(name)
        process.process.send_signal(signal.SIGKILL)
        process.process.wait()
        self.killed_at.append(time.monotonic())
        process.stop()  # closes its log
        self.retired.append((name, process))
        self.kills.append(name)

    def terminate(self, name: str) -> int:
        """SIGTERM one process and wait for it to drain; its exit code."""
        process = self.processes.pop(name)
        code = process.stop()
        self.retired.append((name, process))
        return code

    def stop(self) -> dict[str, int]:
        """SIGTERM every running process; their exit codes."""
        return {name: p.stop() for name, p in self.processes.items()}

    def logs(self) -> str:
        """The end of every incarnation's log."""
        every = [*self.retired, *self.processes.items()]
        return "\n".join(f"--- {name}\n{p.log()}" for name, p in every)


class Cluster(Processes):
    """ingest, matcher and dispatcher as OS processes, on Kafka and a database.

    A role can run as several instances (consumer-group members), each with its own health port.
    """

    def __init__(self, kafka: str, database: str, log_dir: Path, **settings: str) -> None:
        super().__init__(
            log_dir,
            kafka_bootstrap=kafka,
            kafka_topic_prefix=f"herald-faults-{uuid.uuid4().hex[:8]}.",
            database_url=database,
            **settings,
        )
        self.health: dict[str, int] = {}
        """Health port (/metrics, /readyz) of each matcher and dispatcher instance."""

    def start(self, *roles: str, name: str | None = None) -> None:
        """Start roles (all three by default); `name` starts one role as a further instance."""
        assert name is None or len(roles) == 1, "a name is for one role"
        started = []
        for role in roles or ROLES:
            instance = name or role
            if role == "ingest":
                settings = {"port": str(self.port)}
                ready = f"http://127.0.0.1:{self.port}/readyz"
            else:
                # A restarted instance keeps its port, and its name in the consumer group
                # (static membership, as a Kubernetes pod restarted in place).
                port = self.health.setdefault(instance, free_port())
                settings = {"health_port": str(port), "instance_id": instance}
                ready = f"http://127.0.0.1:{port}/readyz"
            started.append(self._launch(instance, role, ready, **settings))
        for process, instance in zip(started, [name or r for r in roles or ROLES], strict=True):
            process.wait_ready(timeout=90)
            self.ready_at.append((instance, time.monotonic()))

    def metrics(self, name: str) -> str:
        """The Prometheus exposition of a running matcher or dispatcher instance."""
        process = self.processes[name]
        try:
            response = httpx.get(f"http://127.0.0.1:{self.health[name]}/metrics", timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # Most likely the process is failing: say so, with its log.
            state = "running" if process.process.poll() is None else "exited"
            raise AssertionError(
                f"{name} ({state}) did not answer /metrics: {exc!r}\n{process.log()}"
            ) from exc
        return response.text


class Embedded(Processes):
    """`herald run` (one process, SQLite, in-database bus), restarted on one file and port."""

    def __init__(self, database: Path, log_dir: Path, **settings: str) -> None:
        super().__init__(log_dir, database_url=f"sqlite:///{database}", **settings)

    def start(self) -> None:
        """Start `herald run` and wait until it is ready."""
        ready = f"http://127.0.0.1:{self.port}/readyz"
        self._launch("run", "run", ready, port=str(self.port)).wait_ready(timeout=90)
        self.ready_at.append(("run", time.monotonic()))


def metric(exposition: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples (Prometheus text format) that carry these labels."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def subscription(endpoint: str, filter_criteria: str, timeout: int = 2) -> dict[str, Any]:
    """An id-only backport Subscription to the HRex Task topic, Bundles of at most 20 events."""
    return backport_subscription(
        endpoint,
        filter_criteria,
        reason="fault injection",
        channel_extensions=[
            {"url": BACKPORT + "backport-timeout", "valueUnsignedInt": timeout},
            {"url": BACKPORT + "backport-max-count", "valuePositiveInt": 20},
        ],
    )


def subscribe(base_url: str, subscriber: Subscriber, filter_criteria: str, **kw: Any) -> str:
    """Create a subscription and wait until it is active; its id."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        created = client.post(
            "/Subscription",
            json=subscription(subscriber.url, filter_criteria, **kw),
            headers={"Content-Type": FHIR_JSON},
        )
        assert created.status_code == 201, created.text
        sub_id = str(created.json()["id"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if client.get(f"/Subscription/{sub_id}").json()["status"] == "active":
                return sub_id
            time.sleep(0.1)
    raise AssertionError(f"Subscription/{sub_id} never became active")


def events_count(base_url: str, subscription_id: str) -> tuple[str, int]:
    """The subscription's status and events-since-subscription-start, from $status."""
    bundle = httpx.get(f"{base_url}/Subscription/{subscription_id}/$status", timeout=10).json()
    parameters = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    status = parameters["status"]["valueCode"]
    return status, int(parameters["events-since-subscription-start"]["valueString"])


# --- the load -------------------------------------------------------------------------------

HOLD_LIMIT = 120.0
"""Seconds a held load may go on past its duration, waiting for a restarted process."""


@dataclass
class Load:
    """Writes new matching Tasks at a steady rate; remembers which ones Herald acknowledged.

    Task i is owned by `<run>-even` or `<run>-odd`. `on_ack(i)` runs right after the 2xx of
    write i (in the load's thread), so a test can kill a process "right after a 201". A write
    that fails (refused, timed out, 5xx) counts as attempted, not acknowledged. `stop()` ends
    the load before `seconds` are up.

    `hold`: a test that restarts what takes the writes cannot know how long the restart takes
    on a busy machine; a held load goes on past `seconds` until `release_after(moment)` and a
    write acknowledged after that moment (at most HOLD_LIMIT seconds more), so the load always
    spans the restart. `writers`: threads sharing the schedule (write i is thread i % writers'),
    so that writes are in flight together when Herald is slower than the rate.
    """

    base_url: str
    rate: float = 30.0
    seconds: float = 5.0
    writers: int = 1
    on_ack: Callable[[int], None] | None = None
    hold: bool = False
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    attempted: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    acknowledged_at: list[float] = field(default_factory=list)
    """time.monotonic() of each acknowledgement."""
    failures: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _released_at: float | None = None

    def release_after(self, moment: float) -> None:
        """End a held load once a write made after `moment` is acknowledged (and `seconds` are
        up)."""
        self._released_at = moment

    def _more(self, i: int, total: int, limit: float) -> bool:
        """Whether write i is still due."""
        if i < total:
            return True
        if not self.hold or time.monotonic() > limit:
            return False
        return self._released_at is None or not self.acknowledged_after(self._released_at)

    def owner(self, i: int) -> str:
        return f"Organization/{self.run}-{'even' if i % 2 == 0 else 'odd'}"

    def task_id(self, i: int) -> str:
        return f"{self.run}-{i}"

    def _write(self, first: int, started: float) -> None:
        total = int(self.rate * self.seconds)
        limit = started + self.seconds + HOLD_LIMIT
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            for i in itertools.count(first, self.writers):
                if not self._more(i, total, limit):
                    return
                pause = started + i / self.rate - time.monotonic()
                if self._stop.wait(max(0.0, pause)):
                    return
                task_id = self.task_id(i)
                task = {
                    "resourceType": "Task",
                    "id": task_id,
                    "status": "requested",
                    "intent": "order",
                    "owner": {"reference": self.owner(i)},
                }
                self.attempted.append(task_id)
                try:
                    response = client.put(
                        f"/Task/{task_id}", json=task, headers={"Content-Type": FHIR_JSON}
                    )
                except httpx.HTTPError:
                    self.failures += 1
                    continue
                if response.status_code in (200, 201):
                    self.acknowledged.append(task_id)
                    self.acknowledged_at.append(time.monotonic())
                    if self.on_ack is not None:
                        self.on_ack(i)
                else:
                    self.failures += 1

    def start(self) -> Load:
        started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._write, args=(first, started), daemon=True)
            for first in range(self.writers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """End the load after the write in progress."""
        self._stop.set()

    def join(self) -> None:
        assert self._threads
        deadline = time.monotonic() + self.seconds + (HOLD_LIMIT if self.hold else 0) + 120
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def acknowledged_after(self, moment: float) -> int:
        """How many writes were acknowledged after a moment (Herald took writes again)."""
        return sum(1 for at in self.acknowledged_at if at > moment)

    def even(self) -> set[str]:
        return {t for t in self.acknowledged if int(t.rsplit("-", 1)[1]) % 2 == 0}


# --- the checks -----------------------------------------------------------------------------


@dataclass
class Report:
    """What one subscription received, checked."""

    subscription_id: str
    acknowledged: int
    numbered: int
    delivered_events: int
    duplicates: int
    unacknowledged_numbered: int
    fetched: int = 0
    """Numbers never pushed, read with $events (skipped when the client re-activated)."""
    pushed: frozenset[int] = frozenset()
    """The event numbers that were pushed at least once."""

    def __str__(self) -> str:
        fetched = f", {self.fetched} fetched with $events" if self.fetched else ""
        return (
            f"Subscription/{self.subscription_id}: {self.acknowledged} acknowledged changes, "
            f"{self.numbered} numbered, {self.delivered_events} event deliveries{fetched}, "
            f"{self.duplicates} duplicates, {self.unacknowledged_numbered} numbered "
            "without an acknowledgement (written, but the client saw an error)"
        )


def logged_events(base_url: str, subscription_id: str) -> dict[int, str]:
    """The subscription's event log as $events shows it: event number -> Task id."""
    logged: dict[int, str] = {}
    since = 1
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while True:  # $events answers a limited number of events at a time
            response = client.get(
                f"/Subscription/{subscription_id}/$events", params={"eventsSinceNumber": since}
            )
            assert response.status_code == 200, response.text
            page = _parse(response.json()).events
            if not page:
                return logged
            logged.update(page)
            since = max(n for n, _ in page) + 1


def _runs(numbers: set[int]) -> int:
    """How many runs of consecutive numbers a set holds."""
    return sum(1 for n in numbers if n - 1 not in numbers)


def check_subscription(
    base_url: str,
    subscriber: Subscriber,
    subscription_id: str,
    expected: set[str],
    attempted: set[str],
    timeout: float = 90.0,
    *,
    refetched: bool = False,
) -> Report:
    """Wait for delivery to settle, then assert Herald's promise for one subscription.

    Every acknowledged matching change has exactly one event number; numbers are 1..N with no
    gap (N from $status); every number was delivered at least once; a number never arrived
    before all smaller ones had (order, redelivery allowed); duplicates are counted.

    `refetched`: the client re-activated the subscription after `error`, which skips the
    backlog; the skipped numbers (one run, before the last number) count as delivered when
    $events has them, and every pushed event must agree with the event log.
    """
    deadline = time.monotonic() + timeout
    logged: dict[int, str] = {}
    fetched: dict[int, str] = {}
    while True:
        status, count = events_count(base_url, subscription_id)
        pushed = [e for d in subscriber.of(subscription_id) for e in d.events]
        seen = {n for n, _ in pushed}
        if refetched:
            logged = logged_events(base_url, subscription_id)
            fetched = {n: t for n, t in logged.items() if n not in seen}
        ids = {t for _, t in pushed} | set(fetched.values())
        settled = expected <= ids and seen | set(fetched) == set(range(1, count + 1))
        if refetched:
            # Pushes resume after the skipped run; they have settled once the last one arrived.
            settled = settled and (count == 0 or count in seen) and _runs(set(fetched)) <= 1
        if settled:
            break
        if time.monotonic() > deadline:
            missing = sorted(expected - ids)
            raise AssertionError(
                f"Subscription/{subscription_id} ({status}) did not settle: {count} numbered, "
                f"numbers missing {sorted(set(range(1, count + 1)) - seen - set(fetched))[:20]}, "
                f"acknowledged changes never delivered {missing[:20]} ({len(missing)}), "
                f"never pushed {sorted(set(range(1, count + 1)) - seen)[:40]}"
            )
        time.sleep(0.2)
    assert status == "active", status
    numbers_of: dict[str, set[int]] = {}
    task_of: dict[int, set[str]] = {}
    for number, task_id in [*pushed, *logged.items()]:
        numbers_of.setdefault(task_id, set()).add(number)
        task_of.setdefault(number, set()).add(task_id)
    order_breaks: list[str] = []
    delivered: set[int] = set(fetched)
    for number, _ in pushed:
        if number > 1 and number - 1 not in delivered:
            order_breaks.append(f"{number} before {number - 1}")
        delivered.add(number)
    twice = {t: sorted(n) for t, n in numbers_of.items() if len(n) > 1}
    assert not twice, f"changes numbered more than once: {twice}"
    shared = {n: sorted(t) for n, t in task_of.items() if len(t) > 1}
    assert not shared, f"numbers given to several changes: {shared}"
    assert not order_breaks, f"out of order: {order_breaks[:20]}"
    assert delivered == set(range(1, count + 1))
    unexpected = set(numbers_of) - attempted
    assert not unexpected, f"events for changes nobody wrote: {sorted(unexpected)[:20]}"
    report = Report(
        subscription_id,
        acknowledged=len(expected),
        numbered=count,
        delivered_events=len(pushed),
        duplicates=len(pushed) - len(seen),
        unacknowledged_numbered=len(set(numbers_of) - expected),
        fetched=len(fetched),
        pushed=frozenset(seen),
    )
    print(report)
    return report


def resumed(subscriber: Subscriber, load: Load, since: float) -> float | None:
    """Seconds from `since` (a kill) until notifications of writes acknowledged after it had
    reached every subscription that got any (the longest pause of one subscription; the others
    may be served by surviving instances meanwhile); None if no such write was notified."""
    first: dict[str, float] = {}
    for subscription_id, _, arrived in _later_notifications(subscriber, load, since):
        first[subscription_id] = min(first.get(subscription_id, arrived), arrived)
    return max(first.values()) - since if first else None


def longest_delay(subscriber: Subscriber, load: Load, since: float) -> float | None:
    """The longest time from the acknowledgement of a write made after `since` to its first
    notification: also catches the partitions that waited while others went on."""
    acknowledged = dict(zip(load.acknowledged, load.acknowledged_at, strict=True))
    first: dict[str, float] = {}
    for _, task_id, arrived in _later_notifications(subscriber, load, since):
        first[task_id] = min(first.get(task_id, arrived), arrived)
    return max((at - acknowledged[t] for t, at in first.items()), default=None)


def _later_notifications(
    subscriber: Subscriber, load: Load, since: float
) -> list[tuple[str, str, float]]:
    """(subscription id, Task id, arrival) of each notified write acknowledged after `since`."""
    later = {t for t, at in zip(load.acknowledged, load.acknowledged_at, strict=True) if at > since}
    with subscriber._lock:
        return [
            (d.subscription_id, task_id, d.at)
            for d in subscriber.deliveries
            if d.at > since
            for _, task_id in d.events
            if task_id in later
        ]


def print_pauses(processes: Processes, subscriber: Subscriber, load: Load) -> None:
    """Print, for each kill, how long notifications paused (figures, not checks)."""
    for name, killed in zip(processes.kills, processes.killed_at, strict=True):
        pause = resumed(subscriber, load, killed)
        figure = "never" if pause is None else f"{pause:.2f} s after the kill"
        ready = next((at for n, at in processes.ready_at if n == name and at > killed), None)
        restart = "" if ready is None else f", restarted and ready after {ready - killed:.2f} s"
        delay = longest_delay(subscriber, load, killed)
        longest = "" if delay is None else f", the longest delay of one {delay:.2f} s"
        print(
            f"pause: {name} SIGKILLed{restart}; notifications of later writes resumed {figure}"
            f"{longest}"
        )


def check_load(base_url: str, subscriber: Subscriber, load: Load, subs: dict[str, str]) -> None:
    """Check the subscriptions of a faults test: those named "even..." see the even owner's
    Tasks, every other one sees all Tasks."""
    assert load.acknowledged, "the load got no write acknowledged"
    print(
        f"load: {len(load.attempted)} writes tried, {len(load.acknowledged)} acknowledged, "
        f"{load.failures} failed"
    )
    even_attempted = {t for t in load.attempted if int(t.rsplit("-", 1)[1]) % 2 == 0}
    for name, subscription_id in subs.items():
        if name.startswith("even"):
            check_subscription(base_url, subscriber, subscription_id, load.even(), even_attempted)
        else:
            expected = set(load.acknowledged)
            check_subscription(base_url, subscriber, subscription_id, expected, set(load.attempted))


def standard_subscriptions(base_url: str, subscriber: Subscriber, load: Load) -> dict[str, str]:
    """Two subscriptions to the subscriber: "all" Tasks and the "even" owner's."""
    return {
        "all": subscribe(base_url, subscriber, "Task?status=requested"),
        "even": subscribe(base_url, subscriber, f"Task?owner={load.owner(0)}"),
    }


# --- a failing endpoint ---------------------------------------------------------------------

OUTAGE_SETTINGS = {
    "retry_delays": ",".join(["0.2", "0.5"] + ["1"] * 30),
    "circuit_failures": "3",
    "circuit_cooldown": "1",
}
"""Retry and circuit-breaker settings short enough for an outage of seconds."""


def endpoint_outage(base_url: str, subscriber: Subscriber, rate: float, seconds: float) -> None:
    """Under load, the subscriber answers 500s, then time-outs, then 200s again; a healthy
    endpoint meanwhile is served as usual. Both are checked (Herald runs with OUTAGE_SETTINGS)."""
    with Subscriber() as healthy:
        load = Load(base_url, rate=rate, seconds=seconds)
        subs = standard_subscriptions(base_url, subscriber, load)
        healthy_id = subscribe(base_url, healthy, "Task?status=requested")
        load.start()
        time.sleep(0.5)
        subscriber.mode = "error"
        outage_started = time.monotonic()
        time.sleep(2.0)
        subscriber.mode = "timeout"
        time.sleep(2.5)
        subscriber.mode = "ok"
        outage_ended = time.monotonic()
        load.join()
        check_load(base_url, subscriber, load, subs)
        check_subscription(
            base_url, healthy, healthy_id, set(load.acknowledged), set(load.attempted)
        )
        assert subscriber.refused > 0, "the outage was never noticed"
        during = [d for d in healthy.of(healthy_id) if outage_started < d.at < outage_ended]
        print(
            f"failing endpoint refused {subscriber.refused} POSTs; the healthy one accepted "
            f"{len(during)} notifications during the {outage_ended - outage_started:.1f} s outage"
        )
        # The healthy endpoint kept receiving notifications throughout the outage.
        assert len(during) >= 4, during


# --- dedicated brokers and servers ----------------------------------------------------------


def local_script(name: str, command: str, env: dict[str, str]) -> str:
    """Run deploy/local/<name> <command>; its last line of output."""
    result = local_servers.run_script(name, command, env)
    assert result.returncode == 0, f"{name} {command}: {result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


@contextmanager
def _dedicated(kind: local_servers.Kind) -> Iterator[dict[str, str]]:
    try:
        server = local_servers.start(kind)
    except local_servers.StartFailed as exc:
        raise AssertionError(str(exc)) from exc
    try:
        yield {**server.env, "address": server.address}
    finally:
        local_servers.stop(server)


@contextmanager
def own_kafka() -> Iterator[dict[str, str]]:
    """A Kafka broker of its own on free ports; yields its deploy/local environment plus its
    `address` (bootstrap), and removes its data when done."""
    with _dedicated(local_servers.KAFKA) as started:
        yield started


@contextmanager
def own_postgres() -> Iterator[dict[str, str]]:
    """A PostgreSQL server of its own on a free port; yields its deploy/local environment plus
    its `address` (URL), and removes its data when done."""
    with _dedicated(local_servers.POSTGRES) as started:
        yield started
