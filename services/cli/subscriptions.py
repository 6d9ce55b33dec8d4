"""`herald subscriptions …`: list, inspect, re-activate, stop and replay subscriptions.

They act on the configured store directly, and change subscriptions through the same function
as the FHIR API (validation, registry revision, handshake queued in the outbox), so a running
Herald picks the change up as it would a client's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from herald.cli.common import add_command
from herald.core.states import SubscriptionStatus

STATUSES = tuple(SubscriptionStatus)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `herald subscriptions` and its subcommands."""
    group = add_command(
        commands,
        "subscriptions",
        "list, inspect, re-activate, stop or replay subscriptions (in the configured store)",
    )
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = _action(sub, "list", "one line per subscription")
    listing.add_argument(
        "--status",
        choices=STATUSES,
        type=SubscriptionStatus,
        help="only subscriptions in this status",
    )
    listing.add_argument("--topic", help="only subscriptions to this topic URL")
    listing.set_defaults(handler=_run("list"))

    show = _action(sub, "show", "status, error, counts, delivered position, last attempts")
    show.add_argument("id", help="subscription id")
    show.set_defaults(handler=_run("show"))

    reactivate = _action(
        sub,
        "reactivate",
        "set status requested (as a client's PUT does): a new handshake, then active; "
        "undelivered events are skipped (the subscriber fetches them with $events, or use replay)",
    )
    reactivate.add_argument("ids", nargs="*", metavar="ID", help="subscription ids")
    reactivate.add_argument(
        "--all-in-error", action="store_true", help="every subscription in status error"
    )
    reactivate.set_defaults(handler=_run("reactivate"))

    off = _action(sub, "off", "set status off (as a client's PUT does): no more notifications")
    off.add_argument("ids", nargs="+", metavar="ID", help="subscription ids")
    off.set_defaults(handler=_run("off"))

    again = _action(
        sub,
        "replay",
        "re-deliver events N..M to the endpoint now, in order, in Bundles of max-count",
    )
    again.add_argument("id", help="subscription id (must be active)")
    again.add_argument("--since", type=_number, required=True, metavar="N", help="first event")
    again.add_argument("--until", type=_number, metavar="M", help="last event (default: latest)")
    again.set_defaults(handler=_run("replay"))


def _number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"an event number (1 or more) is needed, not {text!r}")
    return int(text)


def _action(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    return add_command(sub, name, summary, settings_of="subscriptions")


def _run(name: str) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        from herald.cli.subscription_actions import run

        return run(name, args)

    return handle
