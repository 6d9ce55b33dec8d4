"""`herald clients add|list|remove`, `herald keys rotate`, `herald secrets rotate`: operator
commands on the database.

They work while Herald runs: ingest processes read clients afresh within seconds and reload
signing keys within a minute (at once when a token names a key they do not know).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

import orjson

from herald.cli.common import add_command
from herald.cli.serve import configure_header_secrets
from herald.cli.settings_help import load_settings
from herald.core.errors import ClientExists, FhirError
from herald.core.fhir import format_instant, is_valid_id, utc_now
from herald.core.scopes import InvalidScope, format_scopes, parse_scopes
from herald.runtime.logs import configure
from herald.runtime.settings import Settings
from herald.runtime.store import clients as store
from herald.runtime.store import header_secrets, subscriptions
from herald.runtime.store.clients import Client
from herald.runtime.store.database import Database

# Matched in full: `$` alone would let a trailing newline through.
CLIENT_ID = re.compile(r"[A-Za-z0-9._~:@/-]{1,200}")


class CommandError(Exception):
    """A command that cannot be done, with the one line that says why."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `clients`, `keys` and `secrets` commands."""
    clients = add_command(
        commands, "clients", "register, list and remove API clients", settings_of="migrate"
    )
    clients.set_defaults(handler=_handle)
    actions = clients.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a client (SMART Backend Services)")
    add.add_argument("client_id", metavar="ID")
    keys = add.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks", type=Path, metavar="FILE", help="JSON file of its public JWK set")
    keys.add_argument("--jwks-url", metavar="URL", help="where its public JWK set is published")
    add.add_argument(
        "--scope",
        required=True,
        help='system scopes, e.g. "system/Subscription.cruds system/Task.rs"',
    )
    add.add_argument(
        "--organization",
        action="append",
        default=[],
        metavar="REF",
        help="Organization/<id> the client acts for (repeat; none: not restricted)",
    )
    actions.add_parser("list", help="the registered clients, one JSON object a line")
    remove = actions.add_parser("remove", help="unregister a client")
    remove.add_argument("client_id", metavar="ID")
    keys_parser = add_command(
        commands, "keys", "Herald's access token signing keys", settings_of="migrate"
    )
    keys_parser.set_defaults(handler=_handle)
    keys_actions = keys_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    keys_actions.add_parser(
        "rotate", help="add a new signing key (the previous one still verifies)"
    )


def client_from_arguments(args: argparse.Namespace, settings: Settings) -> Client:
    """The Client `clients add` describes, checked; CommandError when something is wrong."""
    if not CLIENT_ID.fullmatch(args.client_id):
        raise CommandError(f"client id {args.client_id!r}: 1-200 of A-Z a-z 0-9 . _ ~ : @ / -")
    try:
        permissions = parse_scopes(args.scope, strict=True)
    except InvalidScope as exc:
        raise CommandError(str(exc)) from exc
    if not permissions:
        raise CommandError("--scope names no scope")
    for organization in args.organization:
        kind, _, organization_id = organization.partition("/")
        if kind != "Organization" or not is_valid_id(organization_id):
            raise CommandError(f"--organization {organization!r}: write Organization/<id>")
    jwks = None
    if args.jwks is not None:
        # The key machinery is imported by the commands that use it: every `herald` process
        # imports this module, a restarting matcher or dispatcher too.
        from herald.ingest.auth.jwks import public_key_set

        try:
            jwks = orjson.loads(args.jwks.read_bytes())
            public_key_set(jwks)
        except (OSError, orjson.JSONDecodeError, ValueError) as exc:
            raise CommandError(f"--jwks {args.jwks}: {exc}") from exc
    else:
        try:
            settings.endpoint_policy.check(args.jwks_url)
        except FhirError as exc:
            raise CommandError(
                f"--jwks-url: {exc.diagnostics.replace('channel.endpoint', 'the URL')}"
            ) from exc
    return Client(
        id=args.client_id,
        scopes=format_scopes(permissions),
        organizations=tuple(dict.fromkeys(args.organization)),
        jwks=jwks,
        jwks_url=args.jwks_url,
        created_at=format_instant(utc_now()),
    )


def _describe(client: Client) -> str:
    return orjson.dumps(
        {
            "id": client.id,
            "scope": client.scopes,
            "organizations": list(client.organizations),
            "keys": "jwks_url " + client.jwks_url if client.jwks_url else "inline JWK set",
            "created": client.created_at,
        }
    ).decode()


def _handle(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure(settings.log_level, settings.log_format)
    configure_header_secrets(settings)
    return asyncio.run(run_command(args, settings))


async def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run a `clients` or `keys` command; the exit code."""
    database = Database(settings.database_url)
    try:
        await database.migrate()
        if args.command == "keys":
            from herald.ingest.auth.keys import rotate

            print(f"new signing key {await rotate(database)}")
        elif args.command == "secrets":
            if not header_secrets.cipher().enabled:
                raise CommandError("HERALD_SECRETS_KEY is not set")
            async with database.transaction() as connection:
                changed = await subscriptions.rotate_header_secrets(connection)
            print(f"re-encrypted the headers of {changed} subscription(s)")
        elif args.action == "add":
            client = client_from_arguments(args, settings)
            async with database.transaction() as connection:
                await store.add(connection, client)
            print(_describe(client))
        elif args.action == "list":
            async with database.read() as connection:
                for client in await store.all_clients(connection):
                    print(_describe(client))
        else:
            async with database.transaction() as connection:
                if not await store.remove(connection, args.client_id):
                    raise CommandError(f"client {args.client_id!r} is not registered")
            print(f"removed {args.client_id}")
    except (CommandError, ClientExists) as exc:
        print(f"herald {args.command} {args.action}: {exc}", file=sys.stderr)
        return 2
    finally:
        await database.aclose()
    return 0
