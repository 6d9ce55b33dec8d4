"""Throwaway Kafka brokers and PostgreSQL servers of deploy/local/, started on free ports.

A port found free may be taken by another process before the server binds it (test runs sharing a
machine). The scripts exit with PORT_TAKEN when that happens, and the start is retried on fresh
ports; any other failure is reported at once. A failed start never leaves its run state behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PORT_TAKEN = 98
"""Exit status of deploy/local/{kafka,postgres}.sh start when a port it needs is taken."""
ATTEMPTS = 5


def local_dir() -> Path:
    """Where deploy/local/ keeps run state (HERALD_LOCAL_DIR, read at call time)."""
    return Path(os.environ.get("HERALD_LOCAL_DIR") or REPO / ".local")


def free_port() -> int:
    """A TCP port nobody listens on right now (a guess: see the module docstring)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def lost_port() -> Iterator[int]:
    """A port that looks free to a connect, as one another process is about to listen on does,
    yet a server's bind on it fails: bound, not listening, without SO_REUSEADDR."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def picker(first: int) -> tuple[Callable[[], int], list[int]]:
    """A port picker handing out `first`, then free ports; and the list of what it handed out."""
    picked: list[int] = []

    def pick() -> int:
        picked.append(first if not picked else free_port())
        return picked[-1]

    return pick, picked


@dataclass(frozen=True)
class Kind:
    """One deploy/local server script: its port variables and run-state folder."""

    script: str
    ports: tuple[str, ...]
    state: str
    """Run-state folder under local_dir(), formatted with the first port."""


KAFKA = Kind("kafka.sh", ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT"), "kafka-run-{}")
POSTGRES = Kind("postgres.sh", ("PG_PORT",), "pg-{}")


@dataclass(frozen=True)
class Started:
    """A running server: its script environment (ports), address and run-state folder."""

    kind: Kind
    env: dict[str, str]
    address: str
    state: Path


class StartFailed(RuntimeError):
    """deploy/local could not start the server (the message says why)."""


def run_script(script: str, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run deploy/local/<script> <command> with env on top of this process's environment."""
    return subprocess.run(
        ["bash", str(REPO / "deploy" / "local" / script), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _discard(kind: Kind, env: dict[str, str], state: Path) -> None:
    """Stop whatever a start left running and remove its run state."""
    run_script(kind.script, "stop", env)
    shutil.rmtree(state, ignore_errors=True)


def start(kind: Kind, pick: Callable[[], int] = free_port, attempts: int = ATTEMPTS) -> Started:
    """Start a server on ports from `pick`, on fresh ones while a port turns out taken."""
    for _ in range(attempts):
        env = {name: str(pick()) for name in kind.ports}
        state = local_dir() / kind.state.format(env[kind.ports[0]])
        try:
            result = run_script(kind.script, "start", env)
        except BaseException:
            _discard(kind, env, state)
            raise
        if result.returncode == 0:
            lines = result.stdout.strip().splitlines()
            return Started(kind, env, lines[-1] if lines else "", state)
        _discard(kind, env, state)
        if result.returncode != PORT_TAKEN:
            raise StartFailed(
                f"{kind.script} start failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
            )
    raise StartFailed(
        f"{kind.script} start: a port was taken on each of {attempts} attempts; last:\n"
        f"{result.stderr[-1000:]}"
    )


def stop(server: Started) -> None:
    """Stop a server and remove its run state."""
    _discard(server.kind, server.env, server.state)


@contextlib.contextmanager
def running(kind: Kind) -> Iterator[Started]:
    """A server of its own for the block; stopped and removed afterwards."""
    server = start(kind)
    try:
        yield server
    finally:
        stop(server)
