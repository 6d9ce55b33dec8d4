"""Databases for the store tests: SQLite in a temp folder and a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from herald.runtime.store.database import Database
from tests.support.receiver import Receiver


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'herald.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated, empty database of each kind."""
    db = Database(database_url)
    await db.migrate()
    try:
        yield db
    finally:
        await db.aclose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback subscriber."""
    with Receiver() as r:
        yield r
