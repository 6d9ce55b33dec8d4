"""Session fixtures for the real services (see tests/support/services.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import URL, make_url

from tests.support import services


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Apache Kafka broker for the whole session."""
    with services.kafka() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server for the whole session."""
    with services.postgres() as url:
        yield url


async def _create_database(server: URL, name: str) -> None:
    admin = await asyncpg.connect(
        host=server.host,
        port=server.port,
        user=server.username,
        password=server.password,
        database=server.database,
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    server = make_url(postgres_server)
    name = f"herald_test_{uuid.uuid4().hex[:12]}"
    # A plain fixture, so that fixtures of either kind can depend on it.
    asyncio.run(_create_database(server, name))
    return server.set(database=name).render_as_string(hide_password=False)
