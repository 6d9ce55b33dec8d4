"""End-to-end benchmark: Task writes in, notifications out, CPU per Task against a floor.

Not a test. The workload: S id-only subscriptions, one per owner `Organization/o0..o{S-1}`, all to
one loopback receiver in its own process; W concurrent writers PUT N Tasks (owners in turn, so
each Task notifies exactly one subscription). Each round starts every system fresh and measures,
interleaved in one run:

- **floor**: a minimal FastAPI PUT endpoint that parses with orjson and makes one SQLite insert
  (autocommit, WAL), in its own process, on uvicorn with the stock asyncio loop and h11 — the
  least a server on this stack can spend on a write;
- **embedded**: `herald run` (SQLite, in-database bus), one process;
- **distributed**: `herald ingest`, `herald matcher`, `herald dispatcher` on a Kafka broker and a
  PostgreSQL server of their own (deploy/local), all on this machine.

Printed per system: accepted writes/s, all-notified notifications/s (N / time from the first
write to the last notification's arrival), latency from the write's 201 to the notification's
arrival (p50/p95/p99/max, one monotonic clock), CPU ms per Task of the system's processes (user +
system time from /proc, children included: Kafka's JVM and every PostgreSQL backend in
distributed mode), SQL statements and transactions per Task (Herald's own counters,
herald_database_statements_total / herald_database_transactions_total), against PostgreSQL the
asyncpg round trips per Task (herald_database_round_trips_total: every request that waited for
the server's answer, BEGIN and COMMIT included; in all and by process role), and Herald's CPU
per Task ÷ the floor's CPU per request measured in the same round.

A warm-up (`--warmup N`): N Tasks written to each fresh system, floor included, before the
measured closed loop, and measured apart. A fresh Kafka broker spends several ms of CPU per Task
compiling its hot paths (its JIT) while it serves the first thousands of requests; a broker in
production did that long before. Without a warm-up the closed loop is what a fresh system
costs (the default figure); with one, the warm-up's figures show that start-up cost and the
closed loop shows the steady state. Every distributed system (each round, and the scale-out
system of a round) gets a broker and a PostgreSQL server of its own, so every one starts cold.

Optional phases on the same servers after the closed loop: an open loop at a fixed rate
(`--rate`, `--seconds`) for latency, and an outage (`--outage`): the receiver is stopped, 100
Tasks are written, the receiver comes back after the outage, and the time until all 100 arrive
is printed.

    .venv/bin/python bench/e2e.py --rounds 3 --json bench-e2e.json
    .venv/bin/python bench/e2e.py --mode embedded --rate 100 --seconds 20 --outage 90
    .venv/bin/python bench/e2e.py --mode distributed --rounds 1 --warmup 3000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support / tests.faults.harness: processes and services

from herald.core.fhir import format_instant, utc_now  # noqa: E402
from tests.support.fhir import FHIR_JSON, backport_subscription  # noqa: E402
from tests.support.services import create_database, free_port  # noqa: E402
from tests.support.wire import read_message  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")

# --- CPU of process trees, from /proc ---------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is state (stat field 3): utime, stime, cutime, cstime are fields 14-17.
    ppid = int(fields[1])
    cpu = sum(int(f) for f in fields[11:15]) / TICKS
    return ppid, cpu


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of these processes and all their descendants, living or reaped."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


# Threads of a HotSpot JVM by kind (their names as the kernel keeps them: 15 characters).
JVM_THREADS = {
    "jit": ("C1 CompilerThre", "C2 CompilerThre"),
    "gc": ("GC Thread", "G1 ", "VM Thread", "VM Periodic"),
    "requests": ("data-plane-kafk",),  # Kafka's network threads and request handlers
}


def _thread_kind(name: str) -> str:
    return next((k for k, prefixes in JVM_THREADS.items() if name.startswith(prefixes)), "other")


class JvmMeter:
    """CPU seconds of a JVM's threads by kind (JIT compiler, GC, requests, other), sampled.

    A broker started for the benchmark compiles its hot paths while it serves the load; a
    broker in production has done so long before: the JIT's share is printed apart so the two
    can be told apart. HotSpot starts and stops compiler threads as its queue grows and shrinks,
    and a thread's CPU time leaves /proc with it: a background sampler keeps the last figure of
    every thread seen, so an exited thread loses at most one interval of its time.
    """

    INTERVAL = 0.25

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._seen: dict[tuple[int, str], tuple[str, float]] = {}
        self._base: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Take the first sample and keep sampling in the background."""
        self._base = self._sample()
        if self._pids:
            self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop sampling; CPU seconds by kind of thread since the start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        now = self._sample()
        return {kind: now[kind] - self._base.get(kind, 0.0) for kind in now}

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    def _sample(self) -> dict[str, float]:
        for pid in self._pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                except OSError:
                    continue
                name = raw[raw.index("(") + 1 : raw.rindex(")")]
                fields = raw[raw.rindex(")") + 2 :].split()
                cpu = (int(fields[11]) + int(fields[12])) / TICKS
                self._seen[(pid, tid)] = (_thread_kind(name), cpu)
        totals = dict.fromkeys((*JVM_THREADS, "other"), 0.0)
        for kind, cpu in self._seen.values():
            totals[kind] += cpu
        return totals


def pids_matching(text: str) -> list[int]:
    """Processes whose command line contains `text` (the root of a Kafka or PostgreSQL server)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline and int(entry) != os.getpid():
            found.append(int(entry))
    # Keep the roots only: a match whose parent matched too is inside that tree already.
    roots = set(found)
    return [p for p in found if (s := _stat(p)) is None or s[0] not in roots]


# --- the receiver (its own process) -----------------------------------------------------------

_TASK_REFERENCE = re.compile(rb'"reference":"[^"]*Task/([^"/]+)"')


async def _receive(port: int) -> None:
    arrivals: dict[str, float] = {}
    posts = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal posts
        try:
            while True:
                head, body = await read_message(reader)
                if head.startswith(b"GET /arrivals"):
                    answer = orjson.dumps({"posts": posts, "arrivals": arrivals})
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                    )
                    continue
                now = time.monotonic()
                posts += 1
                for task_id in _TASK_REFERENCE.findall(body):
                    arrivals.setdefault(task_id.decode(), now)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


class Receiver:
    """The loopback subscriber endpoint, a process of its own; can go down and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/notify"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "_receiver", str(self.port)], stdin=subprocess.DEVNULL
        )
        _wait_until(lambda: _answers(f"http://127.0.0.1:{self.port}/arrivals"), 30, "receiver")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def arrivals(self) -> tuple[int, dict[str, float]]:
        """POSTs received and the first arrival (monotonic time) of each Task id."""
        data = httpx.get(f"http://127.0.0.1:{self.port}/arrivals", timeout=30).json()
        return int(data["posts"]), data["arrivals"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout} s")


# --- the floor (its own process) --------------------------------------------------------------


def _floor_main(port: int, path: str) -> None:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE tasks (id TEXT, version INTEGER, content BLOB)")
    app = FastAPI()

    @app.put("/fhir/Task/{task_id}")
    async def put(task_id: str, request: Request) -> Response:
        task = orjson.loads(await request.body())
        task["id"] = task_id
        task["meta"] = {"versionId": "1", "lastUpdated": format_instant(utc_now())}
        content = orjson.dumps(task)
        db.execute("INSERT INTO tasks VALUES (?, 1, ?)", (task_id, content))
        return Response(content, status_code=201, media_type=FHIR_JSON)

    @app.get("/readyz")
    async def ready() -> Response:
        return Response(b"ok")

    uvicorn.run(app, host="127.0.0.1", port=port, loop="asyncio", http="h11", log_level="warning")


# --- the load -----------------------------------------------------------------------------------


class Connection:
    """A keep-alive HTTP/1.1 client connection, as small as a load generator can be."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: bytes = b""
    ) -> None:
        self.reader, self.writer = reader, writer
        self.headers = headers  # extra header lines sent with every request, each ending in CRLF

    @classmethod
    async def open(cls, port: int, headers: bytes = b"") -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port), headers)

    async def put(self, path: str, body: bytes) -> int:
        self.writer.write(
            b"PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
            b"%sContent-Length: %d\r\n\r\n%s" % (path.encode(), self.headers, len(body), body)
        )
        head, _ = await read_message(self.reader)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


def _task(task_id: str, owner: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Task",
            "id": task_id,
            "status": "requested",
            "intent": "order",
            "owner": {"reference": owner},
        }
    )


@dataclass
class Load:
    """What the writers saw: the 201s and when they came (monotonic)."""

    accepted: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0


async def _put(connection: Connection, task_id: str, owner: str, load: Load) -> None:
    status = await connection.put(f"/fhir/Task/{task_id}", _task(task_id, owner))
    if status in (200, 201):
        load.accepted[task_id] = time.monotonic()
    else:
        load.failed += 1


async def closed_loop(
    port: int, tasks: list[tuple[str, str]], writers: int, headers: bytes = b""
) -> Load:
    """`writers` connections, each writing its next Task as soon as the previous one is answered
    (`headers`: extra header lines, e.g. an Authorization)."""
    load = Load()
    queue = iter(tasks)

    async def writer() -> None:
        connection = await Connection.open(port, headers)
        try:
            for task_id, owner in queue:
                await _put(connection, task_id, owner, load)
        finally:
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(writer() for _ in range(writers)))
    load.seconds = time.monotonic() - started
    return load


IDLE_REUSE = 2.0
"""Seconds an idle connection is reused for: well under uvicorn's keep-alive timeout (5 s), after
which the server closes it, possibly while a request is on its way."""


async def open_loop(port: int, tasks: list[tuple[str, str]], rate: float) -> Load:
    """Each Task written at its scheduled time, whatever the answers to earlier ones are doing."""
    load = Load()
    idle: list[tuple[Connection, float]] = []  # with the time each became idle

    async def one(task_id: str, owner: str) -> None:
        connection = None
        while idle and connection is None:
            connection, since = idle.pop()
            if time.monotonic() - since > IDLE_REUSE:  # the server may be closing it
                connection.close()
                connection = None
        connection = connection or await Connection.open(port)
        await _put(connection, task_id, owner, load)
        idle.append((connection, time.monotonic()))

    started = time.monotonic()
    running = []
    for i, (task_id, owner) in enumerate(tasks):
        pause = started + i / rate - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        running.append(asyncio.create_task(one(task_id, owner)))
    await asyncio.gather(*running)
    load.seconds = time.monotonic() - started
    for connection, _ in idle:
        connection.close()
    return load


# --- systems under test ---------------------------------------------------------------------


@dataclass
class System:
    """A running system: where to write, which processes to charge, what its counters say."""

    name: str
    port: int
    pids: Callable[[], list[int]]
    counters: Callable[[], dict[str, float]] = dict
    """Herald's database counters so far (statements, transactions, round_trips: all Herald
    processes together; round_trips <role>: by process role)."""
    parts: Callable[[], dict[str, list[int]]] = dict
    """The processes by part (distributed: each role, Kafka, PostgreSQL), for a CPU breakdown."""
    kafka_requests: Callable[[], dict[str, dict[str, int]]] = dict
    """Kafka requests sent so far by each role (its instances together), by API (distributed)."""


def _counters(urls: dict[str, str]) -> dict[str, float]:
    """Herald's database counters, from the /metrics of each process (url by name)."""
    from tests.faults.harness import metric

    found: dict[str, float] = {}
    for name, url in urls.items():
        text = httpx.get(url, timeout=30).text
        for counter in ("statements", "transactions", "round_trips"):
            value = metric(text, f"herald_database_{counter}_total")
            found[counter] = found.get(counter, 0.0) + value
        trips = f"round_trips {name.split('-')[0]}"
        found[trips] = found.get(trips, 0.0) + metric(text, "herald_database_round_trips_total")
    return found


# Counts each service's Kafka requests (bench/kafka_requests/sitecustomize.py).
KAFKA_REQUESTS_HOOK = Path(__file__).resolve().parent / "kafka_requests"


@contextlib.contextmanager
def counting_kafka_requests(folder: Path) -> Iterator[None]:
    """Processes started meanwhile count their Kafka requests and write them to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BENCH_KAFKA_REQUESTS")}
    path = [str(KAFKA_REQUESTS_HOOK), *filter(None, [saved["PYTHONPATH"]])]
    os.environ["PYTHONPATH"] = os.pathsep.join(path)
    os.environ["BENCH_KAFKA_REQUESTS"] = str(folder)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _kafka_requests(folder: Path, pids: dict[str, int]) -> dict[str, dict[str, int]]:
    """The Kafka requests each process (pid by instance name) sent so far, summed by role."""
    for pid in pids.values():
        (folder / f"{pid}.json").unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR1)
    found: dict[str, dict[str, int]] = {}
    for name, pid in pids.items():
        path = folder / f"{pid}.json"
        _wait_until(path.exists, 10, f"the Kafka request counts of {name}")
        role = found.setdefault(name.split("-")[0], {})
        for api, count in json.loads(path.read_text()).items():
            role[api] = role.get(api, 0) + count
    return found


@contextlib.contextmanager
def floor_system(folder: Path) -> Iterator[System]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "_floor", str(port), str(folder / "floor.db")],
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: _answers(f"http://127.0.0.1:{port}/readyz"), 60, "floor")
        yield System("floor", port, lambda: [process.pid])
    finally:
        process.terminate()
        process.wait()


def _subscribe(base_url: str, receiver: Receiver, owners: list[str]) -> None:
    """One id-only subscription per owner; returns when all are active."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        ids = []
        for owner in owners:
            resource = backport_subscription(receiver.url, f"Task?owner={owner}", reason="bench")
            created = client.post(
                "/Subscription", json=resource, headers={"Content-Type": FHIR_JSON}
            )
            created.raise_for_status()
            ids.append(created.json()["id"])

        def active() -> bool:
            found = client.get("/Subscription", params={"status": "active", "_count": 1000})
            return int(found.json().get("total", 0)) >= len(ids)

        _wait_until(active, 120, f"{len(ids)} subscriptions")


HERALD_SETTINGS = {"handshake_delay": "0.1", "log_format": "text"}


def herald_settings(log_level: str, extra: list[str]) -> dict[str, str]:
    """Settings of the Herald processes under test (logging as `make run` does by default),
    with `--set NAME=VALUE` ones on top."""
    pairs = dict(item.split("=", 1) for item in extra)
    return {**HERALD_SETTINGS, "log_level": log_level, **pairs}


@contextlib.contextmanager
def embedded_system(
    folder: Path, receiver: Receiver, owners: list[str], settings: dict[str, str]
) -> Iterator[System]:
    from tests.faults.harness import Embedded

    herald = Embedded(folder / "herald.db", folder / "logs", **settings)
    herald.start()
    try:
        _subscribe(herald.base_url, receiver, owners)
        metrics = f"http://127.0.0.1:{herald.port}/metrics"
        yield System(
            "embedded",
            herald.port,
            lambda: [herald.processes["run"].process.pid],
            lambda: _counters({"run": metrics}),
        )
    finally:
        herald.stop()


@dataclass
class Backing:
    """A Kafka broker and a PostgreSQL server of their own, fresh for each distributed system."""

    kafka: str
    postgres: str
    kafka_roots: list[int]
    postgres_roots: list[int]

    @property
    def roots(self) -> list[int]:
        return self.kafka_roots + self.postgres_roots


@contextlib.contextmanager
def backing_services() -> Iterator[Backing]:
    from tests.faults.harness import own_kafka, own_postgres

    with own_kafka() as kafka, own_postgres() as postgres:
        yield Backing(
            kafka["address"],
            postgres["address"],
            pids_matching(f"kafka-run-{kafka['KAFKA_PORT']}"),
            pids_matching(f"pg-{postgres['PG_PORT']}"),
        )


@contextlib.contextmanager
def distributed_system(
    folder: Path,
    receiver: Receiver,
    owners: list[str],
    scale: int,
    settings: dict[str, str],
) -> Iterator[System]:
    from tests.faults.harness import Cluster

    # A fresh broker per system, as every other server here: one that served an earlier system
    # has compiled its hot paths (its JIT), which made later rounds and the scale-out system
    # look cheaper than the first. `--warmup` measures a warm broker on purpose.
    with backing_services() as backing:
        database = asyncio.run(create_database(backing.postgres, f"bench_{uuid.uuid4().hex[:8]}"))
        cluster = Cluster(backing.kafka, database, folder / "logs", **settings)
        with counting_kafka_requests(folder / "kafka-requests"):
            cluster.start()
            for n in range(2, scale + 1):
                cluster.start("matcher", name=f"matcher-{n}")
                cluster.start("dispatcher", name=f"dispatcher-{n}")
        try:
            _subscribe(cluster.base_url, receiver, owners)
            urls = {"ingest": f"http://127.0.0.1:{cluster.port}/metrics"} | {
                name: f"http://127.0.0.1:{port}/metrics" for name, port in cluster.health.items()
            }
            yield System(
                "distributed" if scale == 1 else f"distributed x{scale}",
                cluster.port,
                lambda: [p.process.pid for p in cluster.processes.values()] + backing.roots,
                lambda: _counters(urls),
                lambda: _parts(cluster, backing),
                lambda: _kafka_requests(
                    folder / "kafka-requests",
                    {name: p.process.pid for name, p in cluster.processes.items()},
                ),
            )
        finally:
            cluster.stop()


def _parts(cluster: Any, backing: Backing) -> dict[str, list[int]]:
    """Processes by part: each role (its instances together), Kafka, PostgreSQL."""
    parts: dict[str, list[int]] = {"kafka": backing.kafka_roots, "postgres": backing.postgres_roots}
    for name, process in cluster.processes.items():
        parts.setdefault(name.split("-")[0], []).append(process.process.pid)
    return parts


# --- measuring ------------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def _wait_notified(
    receiver: Receiver, accepted: dict[str, float], timeout: float
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        _, arrivals = receiver.arrivals()
        if all(t in arrivals for t in accepted) or time.monotonic() > deadline:
            return arrivals
        time.sleep(0.05)


def measure(
    system: System,
    receiver: Receiver | None,
    tasks: list[tuple[str, str]],
    drive: Callable[[list[tuple[str, str]]], Coroutine[Any, Any, Load]],
    timeout: float = 300,
) -> dict[str, Any]:
    """Run a load against a system; the figures of that load."""
    counters0 = system.counters()
    cpu0 = tree_cpu(system.pids())
    parts0 = {part: tree_cpu(pids) for part, pids in system.parts().items()}
    requests0 = system.kafka_requests()
    jvm = JvmMeter(system.parts().get("kafka", []))
    jvm.start()
    started = time.monotonic()
    load = asyncio.run(drive(tasks))
    result: dict[str, Any] = {
        "tasks": len(tasks),
        "accepted": len(load.accepted),
        "failed": load.failed,
        "accepted_writes_per_second": round(len(load.accepted) / load.seconds, 1),
    }
    if receiver is not None:
        arrivals = _wait_notified(receiver, load.accepted, timeout)
        done = time.monotonic()
        latencies = sorted(
            (arrivals[t] - at) * 1000 for t, at in load.accepted.items() if t in arrivals
        )
        last = max((arrivals[t] for t in load.accepted if t in arrivals), default=done)
        result |= {
            "missing": sum(1 for t in load.accepted if t not in arrivals),
            "notifications_per_second": round(len(latencies) / (last - started), 1),
            "p50_ms": round(_pct(latencies, 0.50), 1),
            "p95_ms": round(_pct(latencies, 0.95), 1),
            "p99_ms": round(_pct(latencies, 0.99), 1),
            "max_ms": round(latencies[-1], 1) if latencies else None,
        }
    cpu = tree_cpu(system.pids()) - cpu0
    jvm_seconds = jvm.stop()
    counters1 = system.counters()
    if requests0:
        requests = {
            role: {
                api: round((n - requests0.get(role, {}).get(api, 0)) / len(tasks), 3)
                for api, n in sorted(by_api.items())
                if n > requests0.get(role, {}).get(api, 0)
            }
            for role, by_api in system.kafka_requests().items()
        }
        result["kafka_requests_per_task"] = round(
            sum(sum(r.values()) for r in requests.values()), 2
        )
        result["kafka_requests_per_task_by_role"] = requests
    result["cpu_ms_per_task"] = round(cpu * 1000 / len(tasks), 3)
    if parts0:
        result["cpu_ms_per_task_by_part"] = {
            part: round((tree_cpu(pids) - parts0.get(part, 0.0)) * 1000 / len(tasks), 2)
            for part, pids in system.parts().items()
        }
    if "kafka" in parts0:
        result["kafka_jit_ms_per_task"] = round(jvm_seconds["jit"] * 1000 / len(tasks), 2)
        result["kafka_ms_per_task_by_thread"] = {
            kind: round(seconds * 1000 / len(tasks), 2) for kind, seconds in jvm_seconds.items()
        }
    if receiver is not None:
        per = {k: round((v - counters0[k]) / len(tasks), 2) for k, v in counters1.items()}
        result["sql_statements_per_task"] = per.pop("statements")
        result["transactions_per_task"] = per.pop("transactions")
        if per.pop("round_trips"):  # PostgreSQL
            result["asyncpg_round_trips_per_task"] = round(sum(per.values()), 2)
            result["asyncpg_round_trips_per_task_by_role"] = {
                k.split()[1]: v for k, v in per.items()
            }
    return result


def outage(system: System, receiver: Receiver, owners: list[str], seconds: float) -> dict[str, Any]:
    """Receiver down, 100 Tasks written, receiver back after `seconds`: time to all delivered."""
    tag = uuid.uuid4().hex[:6]
    tasks = [(f"out-{tag}-{i}", owners[i % len(owners)]) for i in range(100)]
    receiver.stop()
    load = asyncio.run(closed_loop(system.port, tasks, 4))
    time.sleep(max(0.0, seconds - load.seconds))
    receiver.start()
    back = time.monotonic()
    arrivals = _wait_notified(receiver, load.accepted, 600)
    arrived = [arrivals[t] for t in load.accepted if t in arrivals]
    return {
        "outage_seconds": seconds,
        "tasks": len(load.accepted),
        "delivered": len(arrived),
        "all_delivered_after_seconds": round(max(arrived) - back, 2) if arrived else None,
    }


def _tasks(prefix: str, count: int, owners: list[str]) -> list[tuple[str, str]]:
    return [(f"{prefix}-{i}", owners[i % len(owners)]) for i in range(count)]


def run_round(args: argparse.Namespace, number: int) -> dict[str, dict[str, Any]]:
    """One round: the floor, then each Herald mode asked for, each fresh."""
    owners = [f"Organization/o{k}" for k in range(args.subscriptions)]
    settings = herald_settings(args.log_level, args.set)
    figures: dict[str, dict[str, Any]] = {}

    def closed(tasks: list[tuple[str, str]], port: int) -> Callable[..., Coroutine[Any, Any, Load]]:
        return lambda _: closed_loop(port, tasks, args.writers)

    def warm_up(system: System, receiver: Receiver | None) -> dict[str, Any] | None:
        if not args.warmup:
            return None
        tasks = _tasks(f"w{number}-{system.name}", args.warmup, owners)
        return measure(system, receiver, tasks, closed(tasks, system.port))

    with tempfile.TemporaryDirectory() as folder:
        with floor_system(Path(folder)) as floor:
            warm = warm_up(floor, None)
            tasks = _tasks(f"floor{number}", args.tasks, owners)
            figures["floor"] = measure(floor, None, tasks, closed(tasks, floor.port))
            if warm:
                figures["floor"]["warmup"] = warm
        systems: list[Callable[[Path, Receiver], contextlib.AbstractContextManager[System]]] = []
        if args.mode in ("embedded", "both"):
            systems.append(lambda f, r: embedded_system(f, r, owners, settings))
        if args.mode in ("distributed", "both"):
            for scale in sorted({1, args.scale}):
                systems.append(
                    lambda f, r, s=scale: distributed_system(  # type: ignore[misc]
                        f, r, owners, s, settings
                    )
                )
        for index, make in enumerate(systems):
            receiver = Receiver()
            receiver.start()
            try:
                with make(Path(folder) / str(index), receiver) as system:
                    warm = warm_up(system, receiver)
                    tasks = _tasks(f"r{number}", args.tasks, owners)
                    result = measure(system, receiver, tasks, closed(tasks, system.port))
                    if warm:
                        result["warmup"] = warm
                    result["floor_ratio"] = round(
                        result["cpu_ms_per_task"] / figures["floor"]["cpu_ms_per_task"], 2
                    )
                    if args.rate:
                        tasks = _tasks(f"o{number}", int(args.rate * args.seconds), owners)
                        result["open_loop"] = measure(
                            system,
                            receiver,
                            tasks,
                            lambda t, port=system.port: open_loop(port, t, args.rate),  # type: ignore[misc]
                        )
                        result["open_loop"]["rate"] = args.rate
                    if args.outage:
                        result["outage"] = outage(system, receiver, owners, args.outage)
                    figures[system.name] = result
            finally:
                receiver.stop()
    return figures


def _breakdowns(f: dict[str, Any]) -> list[str]:
    """The CPU per Task by part, the Kafka broker's by kind of thread and the Kafka requests per
    Task by role and API, where measured."""
    names = {
        "cpu_ms_per_task_by_part": "ms CPU/Task by part",
        "kafka_ms_per_task_by_thread": "Kafka's ms CPU/Task by thread",
    }
    lines = [
        f"{title}: " + ", ".join(f"{k} {v:.2f}" for k, v in f[key].items())
        for key, title in names.items()
        if key in f
    ]
    if "kafka_requests_per_task" in f:
        by_role = "; ".join(
            f"{role} " + ", ".join(f"{api} {n:.2f}" for api, n in apis.items() if n >= 0.005)
            for role, apis in f["kafka_requests_per_task_by_role"].items()
        )
        lines.append(f"Kafka requests/Task: {f['kafka_requests_per_task']:.2f} ({by_role})")
    return lines


def _line(name: str, f: dict[str, Any]) -> str:
    text = f"  {name:<16} {f['cpu_ms_per_task']:7.2f} ms CPU/Task"
    if "floor_ratio" in f:
        text += (
            f" ({f['floor_ratio']:.1f}x floor), {f['accepted_writes_per_second']:6.1f} writes/s, "
            f"{f['notifications_per_second']:6.1f} notified/s, p50/p95/p99/max "
            f"{f['p50_ms']}/{f['p95_ms']}/{f['p99_ms']}/{f['max_ms']} ms, "
            f"{f['sql_statements_per_task']} statements and {f['transactions_per_task']} "
            f"transactions/Task, missing {f['missing']}"
        )
        if "asyncpg_round_trips_per_task" in f:
            by_role = f["asyncpg_round_trips_per_task_by_role"]
            roles = ", ".join(f"{k} {v}" for k, v in by_role.items())
            text += (
                f"\n  {'':<16} asyncpg round trips/Task: "
                f"{f['asyncpg_round_trips_per_task']:.2f} ({roles})"
            )
    else:
        text += f", {f['accepted_writes_per_second']:6.1f} writes/s"
    text += "".join(f"\n  {'':<16} {line}" for line in _breakdowns(f))
    if "warmup" in f:
        w = f["warmup"]
        text += (
            f"\n  {'':<16} warm-up before it, {w['tasks']} Tasks: {w['cpu_ms_per_task']:.2f} ms "
            f"CPU/Task, {w['accepted_writes_per_second']} writes/s"
        )
        text += "".join(f"; {line}" for line in _breakdowns(w))
    if "open_loop" in f:
        o = f["open_loop"]
        text += (
            f"\n  {'':<16} open loop {o['rate']}/s: {o['accepted_writes_per_second']} writes/s, "
            f"p50/p95/p99/max {o['p50_ms']}/{o['p95_ms']}/{o['p99_ms']}/{o['max_ms']} ms, "
            f"{o['cpu_ms_per_task']:.2f} ms CPU/Task, missing {o['missing']}"
        )
        text += "".join(f"\n  {'':<18} {line}" for line in _breakdowns(o))
    if "outage" in f:
        o = f["outage"]
        text += (
            f"\n  {'':<16} outage {o['outage_seconds']} s: {o['delivered']} of {o['tasks']} "
            f"delivered, all {o['all_delivered_after_seconds']} s after the receiver came back"
        )
    return text


def summary(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Median per system over the rounds of the figures that matter most."""
    out: dict[str, Any] = {}
    for name in rounds[0]:
        rows = [r[name] for r in rounds if name in r]
        keys = ["cpu_ms_per_task", "accepted_writes_per_second"]
        if name != "floor":
            keys += [
                "floor_ratio",
                "notifications_per_second",
                "p99_ms",
                "sql_statements_per_task",
                "transactions_per_task",
            ]
        keys += [
            k for k in ("asyncpg_round_trips_per_task", "kafka_requests_per_task") if k in rows[0]
        ]
        out[name] = {k: round(statistics.median(r[k] for r in rows), 2) for k in keys}
        if "warmup" in rows[0]:
            out[name]["warmup_cpu_ms_per_task"] = round(
                statistics.median(r["warmup"]["cpu_ms_per_task"] for r in rows), 2
            )
    return out


# deploy/local/kafka.sh's settings of the broker, taken from the environment, kept with the figures
BROKER_SETTINGS = ("KAFKA_VERSION", "KAFKA_HEAP_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_receiver":
        asyncio.run(_receive(int(sys.argv[2])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_floor":
        _floor_main(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("embedded", "distributed", "both"), default="embedded")
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--writers", type=int, default=16, help="concurrent writers (closed loop)")
    parser.add_argument("--tasks", type=int, default=1000, help="Tasks per round (closed loop)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, fresh servers")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="Tasks written to each fresh system before the closed loop, measured apart"
        " (0: none; the closed loop then shows a fresh system, a Kafka JIT warming up)",
    )
    parser.add_argument("--rate", type=float, default=0, help="open loop: Tasks/s (0: skip)")
    parser.add_argument("--seconds", type=float, default=20, help="open loop: duration")
    parser.add_argument("--outage", type=float, default=0, help="receiver down seconds (0: skip)")
    parser.add_argument(
        "--scale", type=int, default=1, help="distributed: also run N matchers and N dispatchers"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="HERALD_LOG_LEVEL of the system under test (INFO, as `make run`: an access and an"
        " audit line per request)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Herald setting of the system under test (NAME as in HERALD_NAME, lower case),"
        " e.g. relay_linger=0",
    )
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up servers on SIGTERM too
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "environment": {k: v for k, v in os.environ.items() if k in BROKER_SETTINGS},
        "rounds": [],
    }
    for number in range(1, args.rounds + 1):
        figures = run_round(args, number)
        results["rounds"].append(figures)
        print(f"round {number}:", flush=True)
        for name, f in figures.items():
            print(_line(name, f), flush=True)
    results["median"] = summary(results["rounds"])
    print(f"median of {args.rounds} rounds:")
    for name, f in results["median"].items():
        print(f"  {name:<16} " + ", ".join(f"{k} {v}" for k, v in f.items()))
    one, more = (
        results["median"].get("distributed"),
        results["median"].get(f"distributed x{args.scale}"),
    )
    if one and more and args.scale > 1:
        print(
            f"scale-out x{args.scale} against 1 matcher + 1 dispatcher: notified/s "
            f"{more['notifications_per_second'] / one['notifications_per_second']:.2f}x, "
            f"CPU/Task {more['cpu_ms_per_task'] / one['cpu_ms_per_task']:.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
