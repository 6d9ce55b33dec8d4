"""The `herald` command: run (embedded), ingest, matcher, dispatcher, migrate."""

from __future__ import annotations

import argparse
import sys

from herald import __version__
from herald.runtime.logs import configure
from herald.runtime.settings import Settings

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
    args = parser.parse_args(argv)
    settings = Settings()
    configure(settings.log_level, settings.log_format)
    if args.role != "run" and args.role != "migrate" and settings.embedded:
        parser.error(f"'herald {args.role}' needs HERALD_KAFKA_BOOTSTRAP (use 'herald run' alone)")
    from herald.runtime.lifecycle import run

    if args.role == "migrate":
        run(_migrate(settings))
        return 0
    from herald.processes import run_process

    run(run_process(settings, args.role))
    return 0


async def _migrate(settings: Settings) -> None:
    from herald.runtime.store.database import Database

    database = Database(settings.database_url)
    try:
        await database.migrate()
    finally:
        await database.aclose()


if __name__ == "__main__":
    sys.exit(main())
