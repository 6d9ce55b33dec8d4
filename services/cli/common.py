"""What every subcommand module shares: how a subcommand is added with its settings help."""

from __future__ import annotations

import argparse

from herald.cli.settings_help import epilog


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    *,
    description: str | None = None,
    settings_of: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with the HERALD_* settings it reads (those of the
    command `settings_of`, by default its own name)."""
    return commands.add_parser(
        name,
        help=summary,
        description=description or summary,
        epilog=epilog(settings_of or name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
