"""The commands that run Herald: run (embedded), ingest, matcher, dispatcher, and migrate."""

from __future__ import annotations

import argparse
import base64
import binascii
import logging

from herald.cli.common import add_command
from herald.cli.settings_help import fail, load_settings
from herald.runtime.logs import configure
from herald.runtime.settings import FHIR_API, Settings, is_loopback
from herald.runtime.store import header_secrets

log = logging.getLogger("herald")

ROLES = {
    "run": "all services in one process (SQLite and the in-process bus by default)",
    "ingest": "the FHIR API and the outbox relay",
    "matcher": "matches resource changes to subscriptions",
    "dispatcher": "numbers events and delivers notifications",
    "migrate": "bring the database schema up to date and exit",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the serving commands."""
    for role, summary in ROLES.items():
        add_command(commands, role, summary).set_defaults(handler=_handler(role))


def _handler(role: str) -> object:
    def handle(_: argparse.Namespace) -> int:
        settings = load_settings()
        configure(settings.log_level, settings.log_format)
        configure_header_secrets(settings)
        if role in FHIR_API:
            problem = auth_problem(settings, role)
            if problem:
                fail([f"herald: {problem}"])
            announce_auth(settings, role)
        from herald.runtime.lifecycle import run  # uvicorn and uvloop: only for serving

        if role == "migrate":
            run(_migrate(settings))
            return 0
        if role != "run" and settings.embedded:
            fail(
                [
                    f"herald: 'herald {role}' needs HERALD_KAFKA_BOOTSTRAP "
                    "(without Kafka, use 'herald run' alone)"
                ]
            )
        from herald.processes import run_process

        run(run_process(settings, role))
        return 0

    return handle


def configure_header_secrets(settings: Settings) -> None:
    """Set up channel.header encryption from HERALD_SECRETS_KEY (one line and exit if bad)."""
    try:
        header_secrets.configure(settings.secrets_key)
    except ValueError as exc:
        fail(
            [
                f"herald: HERALD_SECRETS_KEY is not valid: {exc} (Fernet keys, comma-separated, "
                "newest first)"
            ]
        )


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
            settings.health_port_of(role),
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
