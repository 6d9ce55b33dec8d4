"""Session fixtures for the real services (see tests/support/services.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

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


@pytest.fixture
async def postgres_url(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, empty database on the session's PostgreSQL server."""
    server = make_url(postgres_server)
    name = f"herald_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=server.host, port=server.port, user=server.username,
        password=server.password, database=server.database,
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield server.set(database=name).render_as_string(hide_password=False)
