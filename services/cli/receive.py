"""`herald receive`: a subscriber endpoint that prints what Herald sends."""

from __future__ import annotations

import argparse
import asyncio

from herald.cli.common import add_command

DEFAULT_PORT = 9000

DESCRIPTION = """\
A ready subscriber endpoint for trying Herald: subscribe with the endpoint
http://127.0.0.1:PORT/notify (any path works). It answers the handshake and every
notification with 200 and prints one line per notification (subscription, event numbers,
focus, status). It keeps the last event number of each subscription: a gap, or a first
notification past #1, makes it fetch the missing events from $events; an event seen before
is shown as a duplicate; a count going back is shown as a restart.
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `herald receive`."""
    command = add_command(
        commands, "receive", "print the notifications Herald sends", description=DESCRIPTION
    )
    command.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})"
    )
    command.add_argument("--host", default="127.0.0.1", help="address to listen on")
    command.add_argument(
        "--base",
        help="FHIR base URL for $events (default: the one in each notification)",
    )
    command.add_argument(
        "-v", "--verbose", action="store_true", help="print each notification Bundle too"
    )
    command.set_defaults(handler=_receive)


def _receive(args: argparse.Namespace) -> int:
    from herald.receiver.app import Receiver, print_line, receiver_app
    from herald.runtime.lifecycle import http_component, run_components

    async def main() -> None:
        receiver = Receiver(print_line, base=args.base, verbose=args.verbose)
        print_line(f"listening on http://{args.host}:{args.port}/notify (Ctrl-C to stop)")
        try:
            await run_components([http_component(receiver_app(receiver), args.host, args.port)])
        finally:
            await receiver.aclose()

    asyncio.run(main())
    return 0
