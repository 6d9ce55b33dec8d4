"""Matcher benchmark: registry load, memory and per-event cost as subscriptions grow to 1,000,000.

Not a test. For each size N, writes N backport Subscriptions on the HRex Task topic into an
SQLite database with Herald's schema (rows as `POST /Subscription` stores them, UUID ids), loads
them as the matcher does when it starts (`herald.matcher.refresh`: rows read in pages, parsed,
filed in a `SubscriptionIndex`), then times `index.match` on realistic Task update events, on
one core:

- subscriptions: 90% `owner=Organization/k`, 5% `owner=Organization/k&status=s`, 5% `code=c`
  (at least one of each at every size, and one subscription without a filter, which matches
  every event);
- owners come from a pool of N organisations and codes from a pool of N/20, so that, as in a
  real deployment where each subscriber follows its own organisation, an event matches a
  few subscriptions whatever N is (the output of matching is not what is measured);
- events: Task updates (previous `requested`, current one of four non-draft statuses) whose
  owner and code are drawn uniformly from the same pools.

Reports per size: the load's wall-clock and CPU seconds (a second load, untraced), memory per
subscription held by the loaded index and the peak during the load (tracemalloc, first load),
the time of a refresh after --changes subscriptions were written again, matches per event,
per-event cost and events/s, and the ratio of the per-event cost at the largest size to that at
the smallest. Every index is loaded first; then --repeat rounds time --events events on each
size in turn and the best run per size is kept, so that other load on the machine does not
favour one size.

    .venv/bin/python bench/matcher.py --json bench-matcher.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from herald.core.contracts import ResourceChange
from herald.core.matching import SubscriptionIndex
from herald.core.subscriptions import FILTER_CRITERIA_URL, endpoint_origin
from herald.core.topics import TopicCatalog
from herald.matcher.refresh import refresh
from herald.runtime.packaged import load_topics
from herald.runtime.store.database import Database
from herald.runtime.store.subscriptions import filters_column

REPO = Path(__file__).resolve().parents[1]
HREX = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
CODE_SYSTEM = "http://example.org/fhir/CodeSystem/task-code"
STATUSES = ("requested", "accepted", "in-progress", "completed")
STAMP = "2026-01-01T00:00:00.000Z"
MEMORY_GOAL = 1000  # bytes per subscription at the largest size
LOAD_GOAL = 10  # seconds to load the registry at the largest size


def _subscription_resource(number: int, filters: list[str]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": f"s{number}",
        "status": "active",
        "reason": "benchmark",
        "criteria": HREX,
        "channel": {
            "type": "rest-hook",
            "endpoint": f"https://subscriber{number % 1000}.example.org/hook",
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/uv/subscriptions-backport/"
                        "StructureDefinition/backport-payload-content",
                        "valueCode": "id-only",
                    }
                ]
            },
        },
    }
    if filters:
        resource["_criteria"] = {
            "extension": [{"url": FILTER_CRITERIA_URL, "valueString": f} for f in filters]
        }
    return resource


def _pools(size: int) -> tuple[int, int]:
    return max(size, 10), max(size // 20, 1)


def resources(size: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """`size` Subscription resources: one without filter, then 5% (at least one) owner+status,
    5% (at least one) code, and owner filters for the rest; ids are UUIDs, as the API gives."""
    owners, codes = _pools(size)
    with_status = max(1, round(size * 0.05)) if size > 1 else 0
    with_code = max(1, round(size * 0.05)) if size > 2 else 0
    for number in range(size):
        owner = f"Organization/{rng.randrange(owners)}"
        if number == 0:
            filters = []
        elif number <= with_status:
            filters = [f"Task?owner={owner}&status={rng.choice(STATUSES)}"]
        elif number <= with_status + with_code:
            filters = [f"Task?code={CODE_SYSTEM}|c{rng.randrange(codes)}"]
        else:
            filters = [f"Task?owner={owner}"]
        resource = _subscription_resource(number, filters)
        resource["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        resource["meta"] = {"versionId": "1", "lastUpdated": STAMP}
        yield resource


def registry(path: Path, size: int, rng: random.Random) -> Database:
    """An SQLite database at `path` (Herald's schema) holding `size` subscriptions, as
    `POST /Subscription` stores them (one registry revision each)."""
    database = Database(f"sqlite:///{path}")
    asyncio.run(database.migrate())
    asyncio.run(database.aclose())
    columns = (
        "id, status, topic, content, version_id, last_updated, revision, events_count,"
        " delivered_through, deleted, endpoint_origin, filters"
    )
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(
            f"INSERT INTO subscriptions ({columns}) VALUES (?, ?, ?, ?, 1, ?, ?, 0, 0, 0, ?, ?)",
            (
                (
                    resource["id"],
                    "active",
                    HREX,
                    orjson.dumps(resource).decode(),
                    STAMP,
                    revision,
                    endpoint_origin(resource),
                    filters_column(resource),
                )
                for revision, resource in enumerate(resources(size, rng), start=1)
            ),
        )
        connection.execute("UPDATE counters SET value = ? WHERE name = 'registry'", (size,))
    return Database(f"sqlite:///{path}")


def change_some(path: Path, count: int) -> None:
    """Write `count` subscriptions again (a new version and registry revision each, filters
    unchanged), as `PUT /Subscription/{id}` does."""
    with closing(sqlite3.connect(path)) as connection, connection:
        (top,) = connection.execute("SELECT value FROM counters WHERE name = 'registry'").fetchone()
        picked = connection.execute(
            "SELECT id, content FROM subscriptions ORDER BY random() LIMIT ?", (count,)
        ).fetchall()
        for revision, (subscription_id, content) in enumerate(picked, start=top + 1):
            resource = orjson.loads(content)
            resource["meta"]["versionId"] = "2"
            connection.execute(
                "UPDATE subscriptions SET content = ?, version_id = 2, revision = ? WHERE id = ?",
                (orjson.dumps(resource).decode(), revision, subscription_id),
            )
        connection.execute(
            "UPDATE counters SET value = ? WHERE name = 'registry'", (top + len(picked),)
        )


async def _load(url: str, topics: TopicCatalog) -> tuple[SubscriptionIndex, float, float]:
    database = Database(url)
    try:
        index = SubscriptionIndex(topics)
        started, cpu = time.perf_counter(), time.process_time()
        await refresh(index, database)
        return index, time.perf_counter() - started, time.process_time() - cpu
    finally:
        await database.aclose()


def load(path: Path, topics: TopicCatalog) -> tuple[SubscriptionIndex, float, float]:
    """A new index loaded from the registry as the matcher does when it starts (rows read in
    pages, parsed, filed), and the seconds that took: wall clock, and CPU of the process."""
    return asyncio.run(_load(f"sqlite:///{path}", topics))


async def _refresh(url: str, index: SubscriptionIndex) -> tuple[int, float]:
    database = Database(url)
    try:
        started = time.perf_counter()
        applied = await refresh(index, database)
        return applied, time.perf_counter() - started
    finally:
        await database.aclose()


def events(size: int, count: int, rng: random.Random) -> list[ResourceChange]:
    """Task updates with owners and codes from the pools."""
    owners, codes = _pools(size)
    made = []
    for number in range(count):
        task_id = f"task{number}"
        current = {
            "resourceType": "Task",
            "id": task_id,
            "meta": {"versionId": "2", "lastUpdated": "2026-01-01T00:00:00.000Z"},
            "status": rng.choice(STATUSES),
            "intent": "order",
            "code": {"coding": [{"system": CODE_SYSTEM, "code": f"c{rng.randrange(codes)}"}]},
            "for": {"reference": f"Patient/{rng.randrange(1_000_000)}"},
            "requester": {"reference": f"Organization/{rng.randrange(owners)}"},
            "owner": {"reference": f"Organization/{rng.randrange(owners)}"},
            "authoredOn": "2026-01-01T00:00:00Z",
        }
        previous = {**current, "status": "requested"}
        previous["meta"] = {"versionId": "1", "lastUpdated": "2025-12-31T00:00:00.000Z"}
        made.append(
            ResourceChange(
                event_id=f"e{number}",
                resource_type="Task",
                resource_id=task_id,
                interaction="update",
                version_id="2",
                occurred_at="2026-01-01T00:00:00.000Z",
                current=current,
                previous=previous,
                registry_revision=0,
            )
        )
    return made


@dataclass
class Prepared:
    """One size: its index, its events and what was measured while loading it."""

    size: int
    index: SubscriptionIndex
    stream: list[ResourceChange]
    row: dict[str, Any]
    best: float = float("inf")


def prepare(size: int, args: argparse.Namespace, topics: TopicCatalog, directory: Path) -> Prepared:
    """A registry of `size` subscriptions in SQLite, loaded twice (memory traced, then timed),
    refreshed after `args.changes` of them changed, and its event stream."""
    rng = random.Random(args.seed + size)
    path = directory / f"registry-{size}.db"
    registry(path, size, rng)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index, _, _ = load(path, topics)
    gc.collect()
    memory, peak = (value - before for value in tracemalloc.get_traced_memory())
    tracemalloc.stop()
    del index
    gc.collect()
    index, loaded, cpu = load(path, topics)
    change_some(path, min(args.changes, size))
    applied, refreshed = asyncio.run(_refresh(f"sqlite:///{path}", index))
    path.unlink()
    stream = events(size, args.events, rng)
    sample = stream[: min(1000, len(stream))]
    matched = sum(len(index.match(change)) for change in sample)
    row = {
        "subscriptions": len(index),
        "load_seconds": round(loaded, 3),
        "load_cpu_seconds": round(cpu, 3),
        "load_microseconds_per_subscription": round(loaded / len(index) * 1e6, 2),
        "memory_bytes_per_subscription": round(memory / len(index)),
        "load_peak_bytes_per_subscription": round(peak / len(index)),
        "refresh_changed": applied,
        "refresh_milliseconds": round(refreshed * 1e3, 2),
        "matches_per_event": round(matched / len(sample), 3),
    }
    return Prepared(size, index, stream, row)


def time_run(prepared: Prepared) -> None:
    """Match the whole event stream once; keep the best time."""
    match = prepared.index.match
    started = time.perf_counter()
    for change in prepared.stream:
        match(change)
    prepared.best = min(prepared.best, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="10,1000,10000,100000,1000000",
        help="comma-separated subscription counts (default: %(default)s)",
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per timed run")
    parser.add_argument(
        "--repeat", type=int, default=7, help="timed rounds over all sizes (best run kept)"
    )
    parser.add_argument(
        "--changes", type=int, default=100, help="subscriptions changed before the timed refresh"
    )
    parser.add_argument("--seed", type=int, default=4, help="random seed")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    sizes = [int(text) for text in args.sizes.split(",")]
    topics = load_topics(REPO / "schemas" / "topics")

    prepared = []
    with tempfile.TemporaryDirectory(prefix="herald-bench-matcher-") as directory:
        for size in sizes:
            prepared.append(prepare(size, args, topics, Path(directory)))
            print(f"loaded {size:,} subscriptions", file=sys.stderr)
    gc.collect()
    # Rounds over every size in turn, best run kept: load on the machine hits all sizes alike.
    for _ in range(args.repeat):
        for item in prepared:
            time_run(item)
    results = []
    print(
        f"{'subscriptions':>13} {'load s':>7} {'CPU s':>6} {'us/sub':>7} {'B/sub':>6} "
        f"{'peak B/sub':>10} {'refresh ms':>10} {'matches/ev':>10} {'us/event':>9} {'events/s':>9}"
    )
    for item in prepared:
        per_event = item.best / len(item.stream)
        row = {
            **item.row,
            "per_event_microseconds": round(per_event * 1e6, 2),
            "events_per_second": round(1 / per_event),
        }
        results.append(row)
        print(
            f"{row['subscriptions']:>13,} {row['load_seconds']:>7.2f} "
            f"{row['load_cpu_seconds']:>6.2f} "
            f"{row['load_microseconds_per_subscription']:>7.2f} "
            f"{row['memory_bytes_per_subscription']:>6,} "
            f"{row['load_peak_bytes_per_subscription']:>10,} "
            f"{row['refresh_milliseconds']:>10.1f} {row['matches_per_event']:>10.2f} "
            f"{row['per_event_microseconds']:>9.2f} {row['events_per_second']:>9,}"
        )
    largest, smallest = results[-1], results[0]
    ratio = largest["per_event_microseconds"] / smallest["per_event_microseconds"]
    print(
        f"per-event cost ratio {largest['subscriptions']:,} / {smallest['subscriptions']:,} "
        f"subscriptions: {ratio:.2f} (goal <= 2)\n"
        f"memory at {largest['subscriptions']:,}: {largest['memory_bytes_per_subscription']:,} "
        f"bytes per subscription (goal <= {MEMORY_GOAL:,})\n"
        f"registry load at {largest['subscriptions']:,}: {largest['load_seconds']:.2f} s "
        f"({largest['load_cpu_seconds']:.2f} s of CPU; goal <= {LOAD_GOAL} s)\n"
        f"refresh after {largest['refresh_changed']} subscriptions changed: "
        f"{largest['refresh_milliseconds']:.1f} ms"
    )
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "events_per_run": args.events,
        "repeat": args.repeat,
        "results": results,
        "cost_ratio_largest_to_smallest": round(ratio, 3),
        "goals": {
            "cost_ratio_max": 2,
            "events_per_second_at_largest_min": 20_000,
            "memory_bytes_per_subscription_max": MEMORY_GOAL,
            "load_seconds_max": LOAD_GOAL,
        },
        "goals_met": {
            "cost_ratio": ratio <= 2,
            "events_per_second": largest["events_per_second"] >= 20_000,
            "memory": largest["memory_bytes_per_subscription"] <= MEMORY_GOAL,
            "load": largest["load_seconds"] <= LOAD_GOAL,
        },
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
