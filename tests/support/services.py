"""Finding or starting the real Kafka and PostgreSQL the integration and end-to-end tests use.

Order of preference: HERALD_KAFKA_BOOTSTRAP / HERALD_DATABASE_URL when set; testcontainers where a
Docker engine answers; the local processes of deploy/local/ (Maven Central jars, Debian packages).
With CI set, an unavailable service fails the run instead of skipping tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import local_servers
from tests.support.local_servers import REPO, free_port

__all__ = ["REPO", "create_database", "free_port", "kafka", "postgres", "unavailable"]


def unavailable(reason: str) -> NoReturn:
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


@contextlib.contextmanager
def _local(kind: local_servers.Kind) -> Iterator[str]:
    """A deploy/local server of the session's own; its address."""
    try:
        server = local_servers.start(kind)
    except local_servers.StartFailed as exc:
        unavailable(str(exc))
    try:
        yield server.address
    finally:
        local_servers.stop(server)


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
    with _local(local_servers.KAFKA) as bootstrap:
        yield bootstrap


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
    with _local(local_servers.POSTGRES) as server:
        yield server


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
