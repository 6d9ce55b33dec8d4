"""Dispatch benchmark: delivery throughput against a raw client loop, and end-to-end latency.

Not a test. Up to three parts, in one run:

0. **HTTP clients** (`--clients`, `--posts`, `--client-concurrency`). CPU per POST of this
   process for Herald's HttpSender and bare clients (httpx, httpx on the `httpx-aiohttp`
   transport when that package is installed, aiohttp), each posting the same Bundle to the
   same receiver at 8 and 32 in flight, on Herald's event loop (uvloop), interleaved over
   `--repeat` rounds; medians and the ratio to httpx are printed.

1. **Throughput** (`--subscriptions`, `--events`, `--concurrency`, `--store`). The dispatcher's
   delivery path itself: `Deliverer.deliver_pending` (the code a dispatcher worker runs) over
   many active subscriptions whose events were recorded beforehand in the event log (SQLite, or
   a local PostgreSQL with --store postgres), with `max-count` 1 so that one event is one POST.
   Every delivery loads the subscription, reads its next event, builds and serialises the
   notification Bundle, passes the per-endpoint limit, the circuit breaker and the global
   in-flight bound, POSTs it through Herald's HttpSender and marks it delivered in the store.
   The baseline is a raw POST loop of the same number of POSTs, with the same Bundle bytes, at
   the same concurrency, through a bare client of the library HttpSender is built on (aiohttp)
   with the same pool limit. Both POST to the same loopback receiver, a separate process (a
   minimal asyncio HTTP/1.1 server) so that it does not compete with the measured loop for the
   GIL. The ratio Herald / raw is reported (goal >= 0.7). Why not the embedded process end to
   end: there the clock would also include ingest and matching, which the raw loop does not do;
   this measures exactly what the dispatcher adds to a POST.

2. **Latency** (`--rate`, `--seconds`, `--latency-subscriptions`). Distributed mode: a real
   Kafka broker and PostgreSQL server from deploy/local (own ports), the three Herald processes,
   S subscriptions with owner filters (one owner each) to a loopback receiver; a steady load
   of Task creates spread over the owners. Latency = time the subscriber received the
   notification - time the client got the 201 (both on this machine's monotonic clock).

    .venv/bin/python bench/dispatch.py --json bench-dispatch.json
    .venv/bin/python bench/dispatch.py --clients --skip-latency --repeat 3 --posts 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.faults.harness: the processes, subscriber and scripts

from herald.core.fhir import format_instant, utc_now  # noqa: E402
from herald.core.notifications import (  # noqa: E402
    EVENT_NOTIFICATION,
    NotificationEvent,
    SubscriptionState,
    notification_bundle,
)
from herald.core.subscriptions import EndpointPolicy  # noqa: E402
from herald.dispatcher.circuit_breakers import CircuitBreakers  # noqa: E402
from herald.dispatcher.delivery import Deliverer  # noqa: E402
from herald.runtime.lifecycle import run  # noqa: E402
from herald.runtime.metrics import Metrics  # noqa: E402
from herald.runtime.packaged import load_topics  # noqa: E402
from herald.runtime.sender import USER_AGENT, HttpSender  # noqa: E402
from herald.runtime.settings import Settings  # noqa: E402
from herald.runtime.slots import Slots  # noqa: E402
from herald.runtime.store import events as event_log  # noqa: E402
from herald.runtime.store import subscriptions as registry  # noqa: E402
from herald.runtime.store.database import Database  # noqa: E402
from herald.runtime.store.events import LoggedEvent  # noqa: E402
from tests.support.fhir import BACKPORT, FHIR_JSON, HREX_TOPIC, backport_subscription  # noqa: E402
from tests.support.services import create_database  # noqa: E402
from tests.support.wire import read_message  # noqa: E402

# --- the loopback receiver (its own process) ------------------------------------------------


async def _serve(port_out: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_message(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port_out.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _receiver_main(port_out: Any) -> None:
    asyncio.run(_serve(port_out))


def start_receiver() -> tuple[multiprocessing.Process, str]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_receiver_main, args=(child,), daemon=True)
    process.start()
    port = parent.recv()
    return process, f"http://127.0.0.1:{port}/notify"


# --- part 0: the HTTP client alone: CPU per POST -------------------------------------------

ClientFactory = Callable[
    [str, bytes], contextlib.AbstractAsyncContextManager[Callable[[], Awaitable[None]]]
]


@contextlib.asynccontextmanager
async def _herald_sender(
    endpoint: str, body: bytes
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    sender = HttpSender(EndpointPolicy(allow_http=True, allow_private=True))

    async def post() -> None:
        outcome, _ = await sender.post(
            endpoint, body, content_type=FHIR_JSON, headers=BENCH_HEADERS, timeout=10
        )
        assert outcome.ok, outcome

    try:
        yield post
    finally:
        await sender.aclose()


@contextlib.asynccontextmanager
async def _httpx_on(
    endpoint: str, body: bytes, transport: httpx.AsyncBaseTransport | None
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    async with httpx.AsyncClient(
        transport=transport,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": USER_AGENT, "Content-Type": FHIR_JSON, **dict(BENCH_HEADERS)},
    ) as client:

        async def post() -> None:
            response = await client.post(endpoint, content=body, timeout=10)
            assert response.status_code == 200

        yield post


def _bare_httpx(
    endpoint: str, body: bytes
) -> contextlib.AbstractAsyncContextManager[Callable[[], Awaitable[None]]]:
    return _httpx_on(endpoint, body, None)


def _httpx_aiohttp(
    endpoint: str, body: bytes
) -> contextlib.AbstractAsyncContextManager[Callable[[], Awaitable[None]]]:
    # Optional (pip install httpx-aiohttp), so not imported by name: mypy runs without it.
    transport = importlib.import_module("httpx_aiohttp").AiohttpTransport
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    return _httpx_on(endpoint, body, transport(limits=limits, trust_env=False))


@contextlib.asynccontextmanager
async def _bare_aiohttp(endpoint: str, body: bytes) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200),
        headers={"User-Agent": USER_AGENT, "Content-Type": FHIR_JSON, **dict(BENCH_HEADERS)},
    ) as session:

        async def post() -> None:
            async with session.post(endpoint, data=body) as response:
                await response.read()
                assert response.status == 200

        yield post


CLIENTS: dict[str, ClientFactory] = {
    "HttpSender": _herald_sender,
    "httpx": _bare_httpx,
    "httpx+httpx-aiohttp": _httpx_aiohttp,
    "aiohttp": _bare_aiohttp,
}


async def _client_cost(
    factory: ClientFactory, endpoint: str, body: bytes, total: int, concurrency: int
) -> tuple[float, float]:
    """(CPU ms per POST of this process, POSTs/s) for `total` POSTs at `concurrency` in flight."""
    async with factory(endpoint, body) as post:
        await asyncio.gather(*(post() for _ in range(concurrency)))  # connections warmed
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await post()

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu * 1000 / total, total / wall


def clients(args: argparse.Namespace) -> dict[str, Any]:
    """CPU per POST of Herald's sender and of bare clients, interleaved, on Herald's loop."""
    receiver, endpoint = start_receiver()
    body = _bundle_bytes()
    names = [n for n in CLIENTS if n != "httpx+httpx-aiohttp" or _importable("httpx_aiohttp")]
    costs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for round_ in range(args.repeat):
            for concurrency in args.client_concurrency:
                for name in names:
                    cost = run(_client_cost(CLIENTS[name], endpoint, body, args.posts, concurrency))
                    costs.setdefault((name, concurrency), []).append(cost)
            print(f"  client round {round_ + 1} done", flush=True)
    finally:
        receiver.terminate()
    result: dict[str, Any] = {"posts": args.posts, "rounds": args.repeat, "clients": {}}
    print(f"HTTP clients alone, {args.posts} POSTs each, median of {args.repeat} rounds:")
    for concurrency in args.client_concurrency:
        base = statistics.median(c for c, _ in costs[("httpx", concurrency)])
        for name in names:
            cpu = statistics.median(c for c, _ in costs[(name, concurrency)])
            rate = statistics.median(r for _, r in costs[(name, concurrency)])
            result["clients"][f"{name}@{concurrency}"] = {
                "cpu_ms_per_post": round(cpu, 3),
                "posts_per_second": round(rate, 1),
                "cpu_vs_httpx": round(cpu / base, 3),
            }
            print(
                f"  {name:>20} at {concurrency:>3} in flight: {cpu:.3f} ms CPU/POST "
                f"({cpu / base:.2f}x httpx), {rate:,.0f} POSTs/s"
            )
    return result


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _bundle_bytes() -> bytes:
    """A notification Bundle as the dispatcher sends it (id-only, one event)."""
    state = SubscriptionState("bench-0", HREX_TOPIC, "active", 1, "id-only")
    event = NotificationEvent(1, format_instant(utc_now()), "Task", "t-1", "create")
    return orjson.dumps(
        notification_bundle(
            "http://127.0.0.1:8080/fhir",
            state,
            EVENT_NOTIFICATION,
            [event],
            timestamp=format_instant(utc_now()),
        )
    )


BENCH_HEADERS = [("Authorization", "Bearer benchmark")]


# --- part 1: throughput ---------------------------------------------------------------------


def _subscription(sub_id: str, endpoint: str, max_count: int = 1) -> dict[str, Any]:
    resource = backport_subscription(
        endpoint,
        status="active",
        reason="benchmark",
        headers=["Authorization: Bearer benchmark"],
        channel_extensions=[
            {"url": BACKPORT + "backport-max-count", "valuePositiveInt": max_count}
        ],
    )
    return {
        **resource,
        "id": sub_id,
        "meta": {"versionId": "1", "lastUpdated": format_instant(utc_now())},
    }


async def _prepare(database: Database, endpoint: str, subscriptions: int, per: int) -> list[str]:
    await database.migrate()
    ids = [f"bench-{i}" for i in range(subscriptions)]
    now = format_instant(utc_now())
    async with database.transaction() as connection:
        for sub_id in ids:
            await registry.insert_new(
                connection, _subscription(sub_id, endpoint), status="active", topic=HREX_TOPIC
            )
            for n in range(per):
                await event_log.record(
                    connection,
                    LoggedEvent(sub_id, 0, f"{sub_id}-{n}", "Task", f"t-{n}", "1", "create", now),
                    now,
                )
    return ids


async def herald_throughput(
    endpoint: str, subscriptions: int, per: int, concurrency: int, database_url: str
) -> float:
    """Notifications/s through Deliverer.deliver_pending."""
    settings = Settings(
        database_url=database_url,
        max_in_flight=concurrency,
        endpoint_concurrency=concurrency,
        log_level="WARNING",
    )
    database = Database(settings.database_url)
    ids = await _prepare(database, endpoint, subscriptions, per)
    sender = HttpSender(settings.endpoint_policy)
    deliverer = Deliverer(
        settings,
        database,
        load_topics(settings.topics_dir),
        sender,
        Metrics(),
        Slots(concurrency),
        CircuitBreakers(concurrency=concurrency),
    )
    stop = asyncio.Event()
    try:
        started = time.perf_counter()
        # The progress writer runs beside the workers, as in the dispatcher, and its last
        # flush counts: the positions are stored when the clock stops.
        writer = asyncio.create_task(deliverer.progress.run(stop))
        await asyncio.gather(*(deliverer.deliver_pending(i, stop) for i in ids))
        stop.set()
        await writer
        await deliverer.progress.flush()
        elapsed = time.perf_counter() - started
        async with database.read() as connection:
            for sub_id in ids:
                stored = await registry.get(connection, sub_id)
                assert stored is not None and stored.delivered_through == per, stored
    finally:
        await sender.aclose()
        await database.aclose()
    return subscriptions * per / elapsed


async def raw_throughput(endpoint: str, total: int, concurrency: int) -> float:
    """POSTs/s of a bare aiohttp loop (the sender's client; same Bundle bytes, same concurrency)."""
    _, rate = await _client_cost(_bare_aiohttp, endpoint, _bundle_bytes(), total, concurrency)
    return rate


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    from tests.faults.harness import own_postgres

    receiver, endpoint = start_receiver()
    total = args.subscriptions * args.events
    with contextlib.ExitStack() as stack:
        stack.callback(receiver.terminate)
        server = stack.enter_context(own_postgres())["address"] if args.store == "postgres" else ""
        herald, raw = [], []
        for round_ in range(args.repeat):
            with tempfile.TemporaryDirectory() as folder:
                if server:
                    url = asyncio.run(create_database(server, f"bench_{round_}"))
                else:
                    url = f"sqlite:///{Path(folder) / 'bench.db'}"
                herald.append(
                    asyncio.run(
                        herald_throughput(
                            endpoint, args.subscriptions, args.events, args.concurrency, url
                        )
                    )
                )
            raw.append(asyncio.run(raw_throughput(endpoint, total, args.concurrency)))
            print(
                f"  round {round_ + 1}: herald {herald[-1]:,.0f}/s, raw aiohttp {raw[-1]:,.0f}/s",
                flush=True,
            )
    best_herald, best_raw = max(herald), max(raw)
    # Each round runs both loops back to back; their ratio is less exposed to a noisy machine.
    paired = statistics.median(h / r for h, r in zip(herald, raw, strict=True))
    result = {
        "store": args.store,
        "subscriptions": args.subscriptions,
        "events_per_subscription": args.events,
        "notifications": total,
        "concurrency": args.concurrency,
        "herald_notifications_per_second": round(best_herald, 1),
        "raw_aiohttp_posts_per_second": round(best_raw, 1),
        "ratio": round(best_herald / best_raw, 3),
        "paired_ratio_median": round(paired, 3),
    }
    print(
        f"throughput ({args.store} store): {args.subscriptions} subscriptions x {args.events} "
        f"events, one event per POST, concurrency {args.concurrency}: "
        f"herald {best_herald:,.0f} notifications/s, raw aiohttp {best_raw:,.0f} POSTs/s, "
        f"ratio {best_herald / best_raw:.2f} (best of {args.repeat}; median of the rounds' "
        f"ratios {paired:.2f})"
    )
    return result


# --- part 2: end-to-end latency, distributed ------------------------------------------------


def latency(args: argparse.Namespace) -> dict[str, Any]:
    from tests.faults.harness import Cluster, Subscriber, own_kafka, own_postgres, subscribe

    with (
        own_kafka() as kafka,
        own_postgres() as database,
        tempfile.TemporaryDirectory() as folder,
        Subscriber() as subscriber,
    ):
        cluster = Cluster(kafka["address"], database["address"], Path(folder), log_level="WARNING")
        cluster.start()
        try:
            return _measure_latency(args, cluster, subscriber, subscribe)
        finally:
            cluster.stop()


def _measure_latency(
    args: argparse.Namespace, cluster: Any, subscriber: Any, subscribe: Any
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    owners = [f"Organization/{run}-{k}" for k in range(args.latency_subscriptions)]
    sub_of_owner = {
        owner: subscribe(cluster.base_url, subscriber, f"Task?owner={owner}") for owner in owners
    }
    accepted: dict[str, float] = {}
    total = int(args.rate * args.seconds)

    def write() -> None:
        started = time.monotonic()
        with httpx.Client(base_url=cluster.base_url, timeout=10) as client:
            for i in range(total):
                pause = started + i / args.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                task_id = f"{run}-{i}"
                task = {
                    "resourceType": "Task",
                    "id": task_id,
                    "status": "requested",
                    "intent": "order",
                    "owner": {"reference": owners[i % len(owners)]},
                }
                response = client.put(
                    f"/Task/{task_id}", json=task, headers={"Content-Type": FHIR_JSON}
                )
                if response.status_code == 201:
                    accepted[task_id] = time.monotonic()

    writer = threading.Thread(target=write)
    started = time.monotonic()
    writer.start()
    writer.join()
    load_seconds = time.monotonic() - started
    deadline = time.monotonic() + 60
    arrived: dict[str, float] = {}
    while time.monotonic() < deadline:
        arrived = {}
        for sub_id in sub_of_owner.values():
            for d in subscriber.of(sub_id):
                for _, task_id in d.events:
                    arrived.setdefault(task_id, d.at)
        if set(accepted) <= set(arrived):
            break
        time.sleep(0.2)
    latencies = sorted(arrived[t] - accepted[t] for t in accepted if t in arrived)
    missing = len(set(accepted) - set(arrived))

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    result = {
        "rate_per_second": args.rate,
        "achieved_rate_per_second": round(len(accepted) / load_seconds, 1),
        "seconds": args.seconds,
        "subscriptions": len(owners),
        "tasks_accepted": len(accepted),
        "notifications_missing": missing,
        "p50_ms": round(pct(0.50), 1),
        "p99_ms": round(pct(0.99), 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
    }
    print(
        f"latency (distributed: ingest, matcher, dispatcher on Kafka + PostgreSQL): "
        f"{len(accepted)} Tasks at {result['achieved_rate_per_second']}/s over {len(owners)} "
        f"subscriptions: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max "
        f"{result['max_ms']} ms, missing {missing}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscriptions", type=int, default=200)
    parser.add_argument("--events", type=int, default=20, help="events per subscription")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="event log of the throughput part (postgres: a local server, deploy/local)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="Task writes/s (latency)")
    parser.add_argument("--seconds", type=float, default=15.0, help="load duration (latency)")
    parser.add_argument("--latency-subscriptions", type=int, default=100)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--clients", action="store_true", help="also: CPU per POST of HttpSender and bare clients"
    )
    parser.add_argument("--posts", type=int, default=3000, help="POSTs per client and round")
    parser.add_argument(
        "--client-concurrency", type=int, nargs="+", default=[8, 32], help="POSTs in flight"
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    os.environ.setdefault("HERALD_LOG_LEVEL", "WARNING")
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    if args.clients:
        results["clients"] = clients(args)
    if not args.skip_throughput:
        results["throughput"] = throughput(args)
    if not args.skip_latency:
        results["latency"] = latency(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
