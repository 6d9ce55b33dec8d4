"""`herald receive`: a subscriber endpoint that prints what Herald sends."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import NoReturn

import httpx

from herald.cli.common import add_command

DEFAULT_PORT = 9000

DESCRIPTION = """\
A ready subscriber endpoint for trying Herald: subscribe with the endpoint
http://127.0.0.1:PORT/notify (any path works). It answers the handshake and every
notification with 200 and prints one line per notification (subscription, event numbers,
focus, status). It keeps the last event number of each subscription: a gap, or a first
notification past #1, makes it fetch the missing events from $events; an event seen before
is shown as a duplicate; a count going back is shown as a restart.

When Herald requires authentication, give the client's id and private key (a JWK file, as
registered with `herald clients add`) and Herald's --base: $events is then read with a SMART
Backend Services token, and only from that base (a notification names its own base, and a
token must not follow it elsewhere).
"""

DEFAULT_SCOPE = "system/Subscription.rs"


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
    command.add_argument("--client-id", help="read $events as this client (needs --key, --base)")
    command.add_argument("--key", type=Path, help="the client's private key, a JWK file")
    command.add_argument(
        "--scope", default=DEFAULT_SCOPE, help=f"scopes asked for (default {DEFAULT_SCOPE!r})"
    )
    command.set_defaults(handler=_receive)


def _auth(args: argparse.Namespace) -> httpx.Auth | None:
    """The SMART client the options ask for, or None; exits with a message on a bad option."""
    from herald.core.errors import AuthorizationFailed
    from herald.receiver.smart import BackendServicesAuth, load_private_key, token_endpoint

    if args.client_id is None and args.key is None:
        return None
    if args.client_id is None or args.key is None or args.base is None:
        return _usage("--client-id, --key and --base go together")
    try:
        key = load_private_key(args.key)
        return BackendServicesAuth(args.client_id, key, token_endpoint(args.base), args.scope)
    except AuthorizationFailed as exc:
        return _usage(str(exc))


def _usage(problem: str) -> NoReturn:
    print(f"herald receive: {problem}", file=sys.stderr)
    raise SystemExit(2)


def _receive(args: argparse.Namespace) -> int:
    from herald.receiver.app import Receiver, print_line, receiver_app
    from herald.runtime.lifecycle import http_component, run_components

    auth = _auth(args)

    async def main() -> None:
        client = httpx.AsyncClient(timeout=10.0, auth=auth)
        receiver = Receiver(print_line, base=args.base, verbose=args.verbose, client=client)
        print_line(f"listening on http://{args.host}:{args.port}/notify (Ctrl-C to stop)")
        try:
            await run_components([http_component(receiver_app(receiver), args.host, args.port)])
        finally:
            await receiver.aclose()

    asyncio.run(main())
    return 0
