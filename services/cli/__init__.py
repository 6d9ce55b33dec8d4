"""The `herald` command. Each group of subcommands lives in its own module with a `register`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from herald import __version__
from herald.cli import clients, config, receive, serve, subscriptions

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# Modules adding subcommands, in the order `herald --help` lists them.
GROUPS: Sequence[Register] = (
    serve.register,
    receive.register,
    subscriptions.register,
    config.register,
    clients.register,
)


def parser() -> argparse.ArgumentParser:
    """The whole command line, with every subcommand."""
    top = argparse.ArgumentParser(
        prog="herald",
        description="Herald, an event-driven FHIR R4 Subscriptions broker. Configured by "
        "HERALD_* environment variables: `herald COMMAND --help` lists those a command reads.",
    )
    top.add_argument("--version", action="version", version=f"herald {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in GROUPS:
        register(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `herald` console script."""
    args = parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
