"""What `herald subscriptions …` does (imported only when one of them runs)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

from herald.cli.settings_help import fail, load_settings
from herald.core.errors import HeraldError
from herald.core.states import SubscriptionStatus
from herald.core.subscriptions import STORED_POLICY, parse_subscription
from herald.ingest.context import IngestContext
from herald.runtime.logs import configure
from herald.runtime.metrics import Metrics
from herald.runtime.packaged import load_topics
from herald.runtime.store import attempts
from herald.runtime.store import subscriptions as registry
from herald.runtime.store.database import Database
from herald.runtime.store.subscriptions import StoredSubscription

Action = Callable[[IngestContext, argparse.Namespace], Awaitable[int]]


def run(name: str, args: argparse.Namespace) -> int:
    """Run the action `name` (list, show, reactivate, off, replay) on the configured store."""
    action: Action = ACTIONS[name]
    settings = load_settings()
    configure(settings.log_level, settings.log_format)

    async def main() -> int:
        async with _context() as ctx:
            return await action(ctx, args)

    return asyncio.run(main())


@asynccontextmanager
async def _context() -> AsyncIterator[IngestContext]:
    settings = load_settings()
    database = Database(settings.database_url)
    try:
        topics = load_topics(settings.topics_dir)
        yield IngestContext(settings, database, topics, Metrics())
    finally:
        await database.aclose()


def masked_endpoint(url: str) -> str:
    """An endpoint URL without its query values and password (they may carry tokens)."""
    parts = urlsplit(url)
    query = "&".join(f"{p.split('=', 1)[0]}=***" for p in parts.query.split("&") if p)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(query=query, netloc=netloc))


def _endpoint(stored: StoredSubscription) -> str:
    channel = stored.stored.get("channel")
    return masked_endpoint(str(channel.get("endpoint", ""))) if isinstance(channel, dict) else ""


async def _list(ctx: IngestContext, args: argparse.Namespace) -> int:
    async with ctx.database.read() as connection:
        found = await registry.live(connection, status=args.status, topic=args.topic)
    print(f"{'ID':<36}  {'STATUS':<9}  {'EVENTS':>7}  {'DELIVERED':>9}  ENDPOINT / ERROR")
    for s in found:
        tail = _endpoint(s) + (f"  error: {s.error}" if s.error else "")
        print(f"{s.id:<36}  {s.status:<9}  {s.events_count:>7}  {s.delivered_through:>9}  {tail}")
    print(f"{len(found)} subscription(s)")
    return 0


async def _show(ctx: IngestContext, args: argparse.Namespace) -> int:
    async with ctx.database.read() as connection:
        stored = await registry.get(connection, args.id)
    if stored is None or stored.deleted:
        fail([f"herald: Subscription/{args.id} is not known"])
    async with ctx.database.read() as connection:
        tried = await attempts.recent(connection, stored.id)
    for line in describe(ctx, stored):
        print(line)
    print("  last attempts (newest first):" if tried else "  last attempts: none recorded")
    for a in tried:
        events = "" if a.first_event is None else f" #{a.first_event}..#{a.last_event}"
        print(
            f"    {a.attempted_at}  {a.kind}{events}  {a.outcome}: {a.detail} ({a.seconds:.3f} s)"
        )
    return 0


def describe(ctx: IngestContext, stored: StoredSubscription) -> list[str]:
    """What `show` prints of a subscription (never its channel header values)."""
    lines = [
        f"Subscription/{stored.id}",
        f"  status       {stored.status}",
    ]
    if stored.error:
        lines.append(f"  error        {stored.error}")
    try:
        parsed = parse_subscription(stored.resource, ctx.topics, STORED_POLICY)
    except HeraldError as exc:
        lines.append(f"  unusable     {exc}")
    else:
        lines += [
            f"  topic        {parsed.topic_url}",
            f"  filters      {' & '.join(parsed.filters) or '(none)'}",
            f"  endpoint     {masked_endpoint(parsed.endpoint)}",
            f"  payload      {parsed.payload}; {parsed.content}; max-count {parsed.max_count}",
            f"  headers      {len(parsed.headers)} (values not shown)",
        ]
    undelivered = stored.events_count - stored.delivered_through
    lines += [
        f"  events       {stored.events_count} (delivered through #{stored.delivered_through}; "
        f"{undelivered} undelivered)",
        f"  version      {stored.version_id}, last updated {stored.last_updated}",
    ]
    return lines


async def _change(ctx: IngestContext, ids: list[str], status: SubscriptionStatus) -> int:
    from herald.ingest.subscriptions import save_subscription, stored_subscription

    failed = 0
    for subscription_id in ids:
        try:
            stored = await stored_subscription(ctx, subscription_id)
            await save_subscription(ctx, {**stored.resource, "status": status}, subscription_id)
        except HeraldError as exc:
            failed += 1
            print(f"Subscription/{subscription_id}: not changed: {exc}")
        else:
            print(f"Subscription/{subscription_id}: {stored.status} -> {status}")
    return 1 if failed else 0


async def _reactivate(ctx: IngestContext, args: argparse.Namespace) -> int:
    ids = list(args.ids)
    if args.all_in_error:
        async with ctx.database.read() as connection:
            ids += [s.id for s in await registry.live(connection, status=SubscriptionStatus.ERROR)]
    if not ids:
        print("nothing to re-activate")
        return 0
    return await _change(ctx, list(dict.fromkeys(ids)), SubscriptionStatus.REQUESTED)


async def _replay(ctx: IngestContext, args: argparse.Namespace) -> int:
    from herald.dispatcher.replay import replay
    from herald.runtime.sender import HttpSender

    if args.until is not None and args.until < args.since:
        fail([f"herald: --until {args.until} is before --since {args.since}"])
    sender = HttpSender(ctx.settings.endpoint_policy)
    try:
        done = await replay(
            ctx.settings, ctx.database, ctx.topics, sender, args.id, args.since, args.until, print
        )
    except HeraldError as exc:
        fail([f"herald: {exc}"])
    finally:
        await sender.aclose()
    return 0 if done else 1


async def _off(ctx: IngestContext, args: argparse.Namespace) -> int:
    return await _change(ctx, list(args.ids), SubscriptionStatus.OFF)


ACTIONS: dict[str, Action] = {
    "list": _list,
    "show": _show,
    "reactivate": _reactivate,
    "off": _off,
    "replay": _replay,
}
