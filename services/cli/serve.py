"""The commands that run Herald: run (embedded), ingest, matcher, dispatcher, and migrate."""

from __future__ import annotations

import argparse

from herald.cli.common import add_command
from herald.cli.settings_help import fail, load_settings
from herald.runtime.logs import configure
from herald.runtime.settings import Settings

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


async def _migrate(settings: Settings) -> None:
    from herald.runtime.store.database import Database

    database = Database(settings.database_url)
    try:
        await database.migrate()
    finally:
        await database.aclose()
