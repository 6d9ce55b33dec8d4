"""Matcher benchmark: events/s and per-event cost as the number of subscriptions grows.

Not a test. Builds a SubscriptionIndex (herald.core.matching) of N backport Subscriptions on the
HRex Task topic, parsed from JSON as the matcher's registry does, then times `index.match` on
realistic Task update events, on one core:

- subscriptions: 90% `owner=Organization/k`, 5% `owner=Organization/k&status=s`, 5% `code=c`
  (at least one of each at every size, and one subscription without a filter, which matches
  every event);
- owners come from a pool of N organisations and codes from a pool of N/20, so that, as in a
  real deployment where each subscriber follows its own organisation, an event matches a
  few subscriptions whatever N is (the output of matching is not what is measured);
- events: Task updates (previous `requested`, current one of four non-draft statuses) whose
  owner and code are drawn uniformly from the same pools.

Reports per size: build time, memory per subscription (tracemalloc, while the index is built),
matches per event, per-event cost and events/s, and the ratio of the per-event cost at the
largest size to that at the smallest. Every index is built first; then --repeat rounds time
--events events on each size in turn and the best run per size is kept, so that other load on
the machine does not favour one size.

    .venv/bin/python bench/matcher.py --json bench-matcher.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herald.core.contracts import ResourceChange
from herald.core.matching import SubscriptionIndex
from herald.core.subscriptions import (
    FILTER_CRITERIA_URL,
    EndpointPolicy,
    Subscription,
    parse_subscription,
)
from herald.core.topics import TopicCatalog
from herald.runtime.packaged import load_topics

REPO = Path(__file__).resolve().parents[1]
HREX = "http://hl7.org/fhir/us/davinci-hrex/SubscriptionTopic/Task"
CODE_SYSTEM = "http://example.org/fhir/CodeSystem/task-code"
STATUSES = ("requested", "accepted", "in-progress", "completed")
OPEN = EndpointPolicy(allow_http=True, allow_private=True)


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


def subscriptions(size: int, rng: random.Random, topics: TopicCatalog) -> list[Subscription]:
    """`size` subscriptions: one without filter, then 5% (at least one) owner+status, 5% (at
    least one) code, and owner filters for the rest."""
    owners, codes = _pools(size)
    with_status = max(1, round(size * 0.05)) if size > 1 else 0
    with_code = max(1, round(size * 0.05)) if size > 2 else 0
    made = [parse_subscription(_subscription_resource(0, []), topics, OPEN)]
    for number in range(1, size):
        owner = f"Organization/{rng.randrange(owners)}"
        if number <= with_status:
            filters = [f"Task?owner={owner}&status={rng.choice(STATUSES)}"]
        elif number <= with_status + with_code:
            filters = [f"Task?code={CODE_SYSTEM}|c{rng.randrange(codes)}"]
        else:
            filters = [f"Task?owner={owner}"]
        made.append(parse_subscription(_subscription_resource(number, filters), topics, OPEN))
    return made


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
    """One size: its index, its events and what was measured while building it."""

    size: int
    index: SubscriptionIndex
    stream: list[ResourceChange]
    row: dict[str, Any]
    best: float = float("inf")


def prepare(size: int, args: argparse.Namespace, topics: TopicCatalog) -> Prepared:
    """Build an index of `size` subscriptions (memory traced) and its event stream."""
    rng = random.Random(args.seed + size)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    index = SubscriptionIndex(topics)
    for item in subscriptions(size, rng, topics):
        index.put(item)
    built = time.perf_counter() - started
    memory = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stream = events(size, args.events, rng)
    sample = stream[: min(1000, len(stream))]
    matched = sum(len(index.match(change)) for change in sample)
    row = {
        "subscriptions": len(index),
        "build_seconds": round(built, 3),
        "memory_bytes_per_subscription": round(memory / len(index)),
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
        default="10,1000,10000,100000",
        help="comma-separated subscription counts (default: %(default)s)",
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per timed run")
    parser.add_argument(
        "--repeat", type=int, default=7, help="timed rounds over all sizes (best run kept)"
    )
    parser.add_argument("--seed", type=int, default=4, help="random seed")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    sizes = [int(text) for text in args.sizes.split(",")]
    topics = load_topics(REPO / "schemas" / "topics")

    prepared = []
    for size in sizes:
        prepared.append(prepare(size, args, topics))
        print(f"built {size:,} subscriptions", file=sys.stderr)
    gc.collect()
    # Rounds over every size in turn, best run kept: load on the machine hits all sizes alike.
    for _ in range(args.repeat):
        for item in prepared:
            time_run(item)
    results = []
    print(
        f"{'subscriptions':>13} {'build s':>8} {'B/sub':>7} {'matches/ev':>10} "
        f"{'us/event':>9} {'events/s':>9}"
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
            f"{row['subscriptions']:>13,} {row['build_seconds']:>8.2f} "
            f"{row['memory_bytes_per_subscription']:>7,} {row['matches_per_event']:>10.2f} "
            f"{row['per_event_microseconds']:>9.2f} {row['events_per_second']:>9,}"
        )
    ratio = results[-1]["per_event_microseconds"] / results[0]["per_event_microseconds"]
    print(
        f"per-event cost ratio {results[-1]['subscriptions']:,} / "
        f"{results[0]['subscriptions']:,} subscriptions: {ratio:.2f} (goal <= 2)"
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
        "goals": {"cost_ratio_max": 2, "events_per_second_at_largest_min": 20_000},
        "goals_met": {
            "cost_ratio": ratio <= 2,
            "events_per_second": results[-1]["events_per_second"] >= 20_000,
        },
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
