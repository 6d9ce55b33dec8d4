"""Finding or starting the real Kafka and PostgreSQL the integration and end-to-end tests use.

Order of preference: HERALD_KAFKA_BOOTSTRAP / HERALD_DATABASE_URL when set; testcontainers where a
Docker engine answers; the local processes of deploy/local/ (Maven Central jars, Debian packages).
With CI set, an unavailable service fails the run instead of skipping tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Where deploy/local/ keeps run state; throwaway brokers and clusters are removed after use.
LOCAL = Path(os.environ.get("HERALD_LOCAL_DIR") or REPO / ".local")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(reason: str) -> None:
    """Skip on a laptop, fail in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


def docker_available() -> bool:
    """Whether a Docker engine answers."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        # docker-py leaks its socket when the connect fails (ResourceWarning): don't try.
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
    except Exception:  # noqa: BLE001 - any failure means no usable engine
        return False
    try:
        client.ping()
    except Exception:  # noqa: BLE001 - any failure means no usable engine
        return False
    finally:
        client.close()  # its socket to the engine would otherwise leak (ResourceWarning)
    return True


def _script(name: str, command: str, env: dict[str, str]) -> str:
    script = REPO / "deploy" / "local" / name
    result = subprocess.run(
        ["bash", str(script), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        unavailable(f"{name} {command} failed: {result.stderr[-2000:]}")
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    """A Kafka bootstrap address for the test session."""
    if os.environ.get("HERALD_KAFKA_BOOTSTRAP"):
        yield os.environ["HERALD_KAFKA_BOOTSTRAP"]
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    port = free_port()
    env = {"KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(free_port())}
    bootstrap = _script("kafka.sh", "start", env)
    try:
        yield bootstrap
    finally:
        subprocess.run(
            ["bash", str(REPO / "deploy/local/kafka.sh"), "stop"],
            env={**os.environ, **env},
            capture_output=True,
            check=False,
        )
        shutil.rmtree(LOCAL / f"kafka-run-{port}", ignore_errors=True)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server URL (user with CREATEDB) for the test session."""
    url = os.environ.get("HERALD_DATABASE_URL", "")
    if url.startswith("postgres"):
        yield url
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    port = free_port()
    env = {"PG_PORT": str(port)}
    url = _script("postgres.sh", "start", env)
    try:
        yield url
    finally:
        subprocess.run(
            ["bash", str(REPO / "deploy/local/postgres.sh"), "stop"],
            env={**os.environ, **env},
            capture_output=True,
            check=False,
        )
        shutil.rmtree(LOCAL / f"pg-{port}", ignore_errors=True)


async def create_database(server: str, name: str) -> str:
    """Create database `name` on a PostgreSQL server (URL of a user with CREATEDB); its URL."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(server)
    admin = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return url.set(database=name).render_as_string(hide_password=False)
