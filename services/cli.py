"""The `herald` command: run (embedded), ingest, matcher, dispatcher, migrate."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import logging
import sys

from herald import __version__
from herald.clients_cli import add_parsers, run_command
from herald.runtime.logs import configure
from herald.runtime.settings import Settings, is_loopback
from herald.runtime.store import header_secrets

log = logging.getLogger("herald")

ROLES = {
    "run": "all services in one process (SQLite and the in-process bus by default)",
    "ingest": "the FHIR API and the outbox relay",
    "matcher": "matches resource changes to subscriptions",
    "dispatcher": "numbers events and delivers notifications",
    "migrate": "bring the database schema up to date and exit",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `herald` console script."""
    parser = argparse.ArgumentParser(
        prog="herald",
        description="Herald FHIR Subscriptions broker, configured by HERALD_* variables.",
    )
    parser.add_argument("--version", action="version", version=f"herald {__version__}")
    commands = parser.add_subparsers(dest="role", required=True, metavar="COMMAND")
    for role, help_text in ROLES.items():
        commands.add_parser(role, help=help_text)
    add_parsers(commands)
    args = parser.parse_args(argv)
    settings = Settings()
    configure(settings.log_level, settings.log_format)
    try:
        header_secrets.configure(settings.secrets_key)
    except ValueError as exc:
        parser.error(f"HERALD_SECRETS_KEY: {exc} (Fernet keys, comma-separated, newest first)")
    if args.role in ("clients", "keys", "secrets"):
        return asyncio.run(run_command(args, settings))
    if args.role != "run" and args.role != "migrate" and settings.embedded:
        parser.error(f"'herald {args.role}' needs HERALD_KAFKA_BOOTSTRAP (use 'herald run' alone)")
    if args.role == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    if args.role in ("run", "ingest"):
        problem = auth_problem(settings, args.role)
        if problem:
            parser.error(problem)
        announce_auth(settings, args.role)
    from herald.processes import run_process

    asyncio.run(run_process(settings, args.role))
    return 0


def auth_problem(settings: Settings, role: str) -> str | None:
    """Why the authentication settings of a FHIR-serving role cannot work, or None."""
    secret = settings.canvas_secret
    if secret is not None:
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not secret.startswith("whsec_") or len(key) < 16:
            return (
                "HERALD_CANVAS_SECRET must be a Standard Webhooks secret: whsec_ and the "
                "base64 of at least 16 random bytes"
            )
    if settings.auth_mode(role) != "smart":
        return None
    if secret is None:
        return (
            "HERALD_AUTH=smart needs HERALD_CANVAS_SECRET (whsec_<base64>), the key the Canvas "
            "source signs its deliveries with"
        )
    if bool(settings.auth_issuer) != bool(settings.auth_jwks_url):
        return "HERALD_AUTH_ISSUER and HERALD_AUTH_JWKS_URL are set together or not at all"
    return None


def announce_auth(settings: Settings, role: str) -> None:
    """Say once, at start, how callers are authenticated (loudly when nobody is)."""
    where = f"{settings.host}:{settings.port}"
    if settings.auth_mode(role) == "smart":
        log.info(
            "authentication: SMART Backend Services tokens; admin endpoints on port %s",
            settings.admin_port,
        )
    elif is_loopback(settings.host):
        log.info(
            "authentication is off (HERALD_AUTH=none): anyone on this machine can use %s", where
        )
    else:
        log.warning(
            "AUTHENTICATION IS OFF (HERALD_AUTH=none) ON %s, A NON-LOOPBACK ADDRESS: ANYONE WHO "
            "CAN REACH IT CAN READ AND CHANGE EVERY TASK AND SUBSCRIPTION",
            where,
        )


async def _migrate(settings: Settings) -> None:
    from herald.runtime.store.database import Database

    database = Database(settings.database_url)
    try:
        await database.migrate()
    finally:
        await database.aclose()


if __name__ == "__main__":
    sys.exit(main())
